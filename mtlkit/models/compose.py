"""Compose a multi-task model from a config: backbone + ROCK block + task heads.

``build_model(cfg)`` with ``cfg`` a config path (loaded with
:func:`mtlkit.config.load_config`), a full config dict, or its ``model``
section. The model section::

    model:
      backbone: {name: resnet50, ...}      # backbone plugin + its options
      fusion: residual                     # fusion plugin (or {name: ..., <options>})
      block: {channels: 512, ...}          # RockBlock options (mtlkit.models.rock)
      tasks:                               # task plugins, exactly one primary
        detection: {num_classes: 19}
        scene: {num_classes: 27}
      weighting: fixed                     # weighting plugin (or {name: ..., <options>})

No auxiliary task: no ROCK block (plain SSD). With a full config, the
``eval`` section sets the primary task's post-processing options (those it
names in :attr:`mtlkit.task.Task.postprocess_options`); ``data.image_size``
is passed to the primary task's ``build_head`` as ``image_size``.

The config is validated once, by :func:`mtlkit.config.validate_config`
(called here on a raw dict or path); the components are built from the
validated options as they are.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from mtlkit.errors import ConfigError
from mtlkit.options import component
from mtlkit.registry import did_you_mean, get_registry
from mtlkit.task import PRIMARY, AuxiliaryTask, Task



class MultiTaskModel(nn.Module):
    """A backbone, an optional ROCK block and the primary task's head.

    ``model(images)`` with images (B, 3, H, W) in [0, 1] -> dict task name ->
    raw prediction (primary first); see ``docs/architecture.md``.

    Attributes: ``tasks`` (ordered name -> Task, primary first), ``primary``,
    ``backbone``, ``block`` (:class:`~mtlkit.models.rock.RockBlock` or None),
    ``heads`` (ModuleDict holding the primary head), ``weighting``
    (:class:`~mtlkit.weighting.LossWeighting`).
    """

    def __init__(self, backbone: nn.Module, tasks: "OrderedDict[str, Task]", primary: str,
                 head: nn.Module, block: Optional[nn.Module], weighting: nn.Module,
                 config: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.backbone = backbone
        self.tasks = tasks
        self.primary = primary
        self.heads = nn.ModuleDict({primary: head})
        self.block = block
        self.weighting = weighting
        self.config = dict(config or {})
        mean = torch.tensor(getattr(backbone, "mean", (0.0, 0.0, 0.0)), dtype=torch.float32)
        std = torch.tensor(getattr(backbone, "std", (1.0, 1.0, 1.0)), dtype=torch.float32)
        self.register_buffer("pixel_mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_inv_std", (1.0 / std).view(1, 3, 1, 1), persistent=False)

    @property
    def aux_tasks(self) -> Dict[str, Task]:
        return {n: t for n, t in self.tasks.items() if n != self.primary}

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> backbone input, (x - mean) / std per channel."""
        return (images - self.pixel_mean) * self.pixel_inv_std

    def forward(self, images: torch.Tensor) -> Dict[str, Any]:
        sources = list(self.backbone(self.normalize(images)))
        aux: Dict[str, torch.Tensor] = {}
        if self.block is not None:
            sources[-1], aux = self.block(sources[-1])
        outputs: Dict[str, Any] = {self.primary: self.heads[self.primary](sources)}
        outputs.update(aux)
        return outputs

    def losses(self, outputs: Mapping[str, Any], batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Task name -> unweighted scalar loss (each masked per sample)."""
        return {name: task.loss(outputs[name], batch) for name, task in self.tasks.items()
                if name in outputs}

    def postprocess(self, outputs: Mapping[str, Any], image_size: Sequence[int]) -> Dict[str, Any]:
        """Raw predictions -> predictions in user units at ``image_size`` (H, W)."""
        size = (int(image_size[0]), int(image_size[1]))
        return {name: task.postprocess(outputs[name], size) for name, task in self.tasks.items()
                if name in outputs}

    @torch.no_grad()
    def detect(self, images: torch.Tensor) -> Dict[str, Any]:
        """``postprocess(model(images))`` without autograd (call ``eval()`` first)."""
        return self.postprocess(self(images), tuple(images.shape[-2:]))

    def set_eval_options(self, **options: Any) -> None:
        """Override post-processing options of the primary task (those of its
        ``postprocess_options``, e.g. ``score_threshold``); other names raise
        :class:`ConfigError`."""
        task = self.tasks[self.primary]
        allowed = tuple(getattr(task, "postprocess_options", ())) or tuple(task.options)
        for key, value in options.items():
            if key not in allowed:
                raise ConfigError(f"eval.{key}: not a post-processing option of the primary task "
                                  f"'{self.primary}'{did_you_mean(key, allowed)}")
            task.options[key] = value


# ---------------------------------------------------------------------------
# Building from a config
# ---------------------------------------------------------------------------


def _component(value: Any, where: str) -> Tuple[str, Dict[str, Any]]:
    """``"name"`` or ``{name: ..., <options>}`` -> (name, options)."""
    options = component(value, where)
    return options.pop("name"), options


def _split_config(cfg: Any, validated: bool = False
                  ) -> Tuple[Dict[str, Any], Dict[str, Any], Optional[Tuple[int, int]]]:
    """-> (model section, eval section, image size or None); ``validated``: the
    caller's config already went through :func:`mtlkit.config.validate_config`."""
    if isinstance(cfg, (str, os.PathLike)):
        from mtlkit.config import load_config

        cfg = load_config(cfg)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"build_model expects a config path or dict, got {type(cfg).__name__}")
    from mtlkit.config import validate_config

    # Validation normalises too: components as {name: ...}, null tasks dropped.
    if not validated:
        cfg = validate_config(cfg) if "model" in cfg else validate_config({"model": cfg})
    elif "model" not in cfg:
        cfg = {"model": cfg}
    if "model" in cfg:
        model_cfg = cfg["model"]
        eval_cfg = cfg.get("eval") or {}
        size = (cfg.get("data") or {}).get("image_size")
        image_size = (int(size[0]), int(size[1])) if size else None
    else:
        model_cfg, eval_cfg, image_size = cfg, {}, None
    if not isinstance(model_cfg, Mapping):
        raise ConfigError(f"model: expected a mapping, got {model_cfg!r}")
    return dict(model_cfg), dict(eval_cfg), image_size


def build_tasks(tasks_cfg: Any, eval_cfg: Optional[Mapping[str, Any]] = None,
                registry=None) -> Tuple["OrderedDict[str, Task]", str]:
    """``model.tasks`` (validated by :func:`mtlkit.config.validate_config`) ->
    (ordered name -> Task with the primary first, primary name). The primary
    task's :attr:`~mtlkit.task.Task.postprocess_options` are taken from
    ``eval_cfg``."""
    registry = registry or get_registry()
    if not isinstance(tasks_cfg, Mapping) or not tasks_cfg:
        raise ConfigError("model.tasks: expected a mapping of task name -> options with at least "
                          "the primary (detection) task")
    built: Dict[str, Task] = {}
    for name, options in tasks_cfg.items():
        if options is None or options is False:
            continue  # dropped, as mtlkit.config does (-o model.tasks.depth=null)
        cls = registry.get("task", name)
        options = dict(options) if isinstance(options, Mapping) else {}
        if cls.role == PRIMARY and eval_cfg:
            # the post-processing options' one home is the eval section
            options.update({k: eval_cfg[k] for k in cls.postprocess_options if k in eval_cfg})
        built[name] = cls(name, options)
    primaries = [n for n, t in built.items() if t.role == PRIMARY]
    if len(primaries) != 1:
        raise ConfigError(
            f"model.tasks: exactly one primary task is needed, got {len(primaries)}"
            + (f" ({', '.join(primaries)})" if primaries else "")
            + f"; tasks: {', '.join(built)}")
    primary = primaries[0]
    ordered = OrderedDict([(primary, built[primary])])
    ordered.update((n, t) for n, t in built.items() if n != primary)
    return ordered, primary


def build_model(cfg: Any, image_size: Optional[Sequence[int]] = None,
                validated: bool = False) -> MultiTaskModel:
    """Build a :class:`MultiTaskModel` from a config path, full config dict or
    model section. ``image_size`` (H, W) overrides ``data.image_size``.
    ``validated=True``: ``cfg`` comes from :func:`mtlkit.config.load_config` /
    ``validate_config`` (the engine's case), so it is not checked again."""
    from mtlkit.models.rock import RockBlock

    model_cfg, eval_cfg, cfg_size = _split_config(cfg, validated)
    size = tuple(int(s) for s in image_size) if image_size is not None else cfg_size
    # _split_config validated the section (keys, plugin names, every option).
    registry = get_registry()

    if "backbone" not in model_cfg:
        raise ConfigError("model.backbone: missing (e.g. backbone: resnet_small)")
    bb_name, bb_options = _component(model_cfg["backbone"], "model.backbone")
    bb_cls = registry.get("backbone", bb_name)
    backbone = bb_cls(**bb_options)

    tasks, primary = build_tasks(model_cfg.get("tasks"), eval_cfg, registry)
    aux = OrderedDict((n, t) for n, t in tasks.items() if n != primary)

    block = None
    fusion_name, fusion_options = _component(model_cfg.get("fusion", "residual"), "model.fusion")
    fusion_cls = registry.get("fusion", fusion_name)
    block_options = dict(model_cfg.get("block") or {})
    if aux:
        not_aux = [n for n, t in aux.items() if not isinstance(t, AuxiliaryTask)]
        if not_aux:
            raise ConfigError(f"model.tasks.{not_aux[0]}: an auxiliary task must subclass "
                              f"mtlkit.task.AuxiliaryTask")
        block = RockBlock(backbone.out_channels[-1], aux, fusion_cls, fusion_options, **block_options)

    context = {"image_size": size, "strides": list(getattr(backbone, "strides", []))}
    head = tasks[primary].build_head(list(backbone.out_channels), **context)

    w_name, w_options = _component(model_cfg.get("weighting", "fixed"), "model.weighting")
    w_cls = registry.get("weighting", w_name)
    weighting = w_cls(tasks, **w_options)

    return MultiTaskModel(backbone, tasks, primary, head, block, weighting, config=model_cfg)
