"""Compose a multi-task model from the resolved config: backbone + ROCK block + task heads.

``build_model(cfg)`` with ``cfg`` the resolved config
(:class:`mtlkit.resolved.ResolvedConfig`), or a config path, a full config
dict or its ``model`` section (resolved first). The model section::

    model:
      backbone: {name: resnet50, ...}      # backbone plugin + its options
      fusion: residual                     # fusion plugin (or {name: ..., <options>})
      block: {channels: 512, ...}          # RockBlock options (mtlkit.models.rock)
      tasks:                               # task plugins, exactly one primary
        detection: {num_classes: 19}
        scene: {num_classes: 27}
      weighting: fixed                     # weighting plugin (or {name: ..., <options>})
      measured: {block: [depth], ...}      # measured inputs (mtlkit.models.measured), optional

No auxiliary task: no ROCK block (plain SSD). The ``eval`` section sets the
primary task's post-processing options (those it names in
:attr:`mtlkit.task.Task.postprocess_options`; the resolution copies them into
its options); ``data.image_size`` is passed to the primary task's
``build_head`` as ``image_size``.

Every component comes from :attr:`~mtlkit.resolved.ResolvedConfig.model_spec`:
its registered class and its options, checked and completed once by the
resolution; nothing is checked or defaulted here. The composer names no
task, fusion or backbone: it reaches them through the registry.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from mtlkit.config import as_resolved
from mtlkit.errors import ConfigError
from mtlkit.models.inputs import InputError, check_images
from mtlkit.models.measured import (EarlyFusion, MeasuredBlockInput, draw_present, measured_tasks,
                                    stages_for_stride)
from mtlkit.models.rock import RockBlock
from mtlkit.resolved import ModelSpec, check_postprocess_options
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
                 config: Optional[Dict[str, Any]] = None, early_fusion: Optional[nn.Module] = None,
                 measured_readers: Optional[Mapping[str, Task]] = None, p_train: Optional[float] = None):
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
        # measured inputs (mtlkit.models.measured); none: forward is the plain one
        self.early_fusion = early_fusion
        self.measured_readers: Dict[str, Task] = dict(measured_readers or {})
        if self.measured_readers and p_train is None:
            raise ValueError("MultiTaskModel: measured_readers need p_train (model.measured.p_train)")
        self.p_train = float(p_train) if p_train is not None else None

    @property
    def aux_tasks(self) -> Dict[str, Task]:
        return {n: t for n, t in self.tasks.items() if n != self.primary}

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> backbone input, (x - mean) / std per channel."""
        return (images - self.pixel_mean) * self.pixel_inv_std

    def forward(self, images: torch.Tensor, sensor: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """``images`` (B, 3, H, W) in [0, 1]; ``sensor``: the batch's measured
        modalities (:func:`mtlkit.models.measured.measured_inputs`), for a
        model with ``model.measured`` (None: no sensor, the predictions stand
        in everywhere)."""
        # One line naming `images` for a uint8, NaN, HWC, 4-channel... batch (mtlkit.models.inputs).
        # A training step on an accelerator is not made to wait for the value check (its images come
        # from the data pipeline); evaluation and detect check the values (they sync anyway).
        check_images(images, like=next(self.parameters(), None),
                     values=not (self.training and isinstance(images, torch.Tensor) and images.device.type != "cpu"))
        inputs = self.normalize(images)
        present = None
        if self.measured_readers:
            present = draw_present(images.shape[0], self.p_train, self.training, images.device)
        if self.early_fusion is not None:
            extra = self.early_fusion(images, sensor, present)
            inputs = torch.cat([inputs, extra.to(inputs.dtype)], dim=1)
            if images.is_contiguous(memory_format=torch.channels_last):
                inputs = inputs.contiguous(memory_format=torch.channels_last)
        sources = list(self.backbone(inputs))
        aux: Dict[str, torch.Tensor] = {}
        if self.block is not None:
            sources[-1], aux = (self.block(sources[-1], sensor, present) if sensor is not None
                                else self.block(sources[-1]))
        outputs: Dict[str, Any] = {self.primary: self.heads[self.primary](sources)}
        outputs.update(aux)
        return outputs

    def losses(self, outputs: Mapping[str, Any], batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Task name -> unweighted scalar loss (each masked per sample).
        ``outputs``: what ``model(images)`` returned; ``batch``: a collated
        batch (:func:`mtlkit.data.collate`), whose targets each task checks."""
        if not isinstance(outputs, Mapping):
            raise InputError(f"outputs: expected the dict model(images) returns (task name -> prediction), "
                             f"got {type(outputs).__name__}")
        missing = [name for name in self.tasks if name not in outputs]
        if missing:
            raise InputError(f"outputs: no prediction for task(s) {', '.join(map(repr, missing))} (it has "
                             f"{', '.join(map(repr, outputs)) or 'none'}); pass what model(images) returned")
        if not isinstance(batch, Mapping):
            raise InputError(f"batch: expected a dict of the batch's images and targets (as "
                             f"mtlkit.data.collate makes), got {type(batch).__name__}")
        return {name: task.loss(outputs[name], batch) for name, task in self.tasks.items()}

    def postprocess(self, outputs: Mapping[str, Any], image_size: Sequence[int]) -> Dict[str, Any]:
        """Raw predictions -> predictions in user units at ``image_size`` (H, W)."""
        size = (int(image_size[0]), int(image_size[1]))
        return {name: task.postprocess(outputs[name], size) for name, task in self.tasks.items()
                if name in outputs}

    @torch.no_grad()
    def detect(self, images: torch.Tensor, sensor: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """``postprocess(model(images, sensor))`` without autograd (call ``eval()`` first)."""
        outputs = self(images) if sensor is None else self(images, sensor)
        return self.postprocess(outputs, tuple(images.shape[-2:]))

    def set_eval_options(self, **options: Any) -> None:
        """Override post-processing options of the primary task (those of its
        ``postprocess_options``, e.g. ``score_threshold``), checked like the
        ``eval`` section's (did-you-mean, types, ranges: :class:`ConfigError`)."""
        task = self.tasks[self.primary]
        task.options.update(check_postprocess_options(task, options))


# ---------------------------------------------------------------------------
# Building from the resolved config
# ---------------------------------------------------------------------------


def build_tasks(spec: ModelSpec) -> Tuple["OrderedDict[str, Task]", str]:
    """The tasks of the resolved model -> (ordered name -> Task with the
    primary first, primary name)."""
    if not spec.tasks:
        raise ConfigError("model.tasks: expected a mapping of task name -> options with at least "
                          "the primary (detection) task")
    built: Dict[str, Task] = {name: task.plugin(name, task.options) for name, task in spec.tasks.items()}
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


def build_model(cfg: Any, image_size: Optional[Sequence[int]] = None) -> MultiTaskModel:
    """Build a :class:`MultiTaskModel` from the resolved config (or a config
    path, full config dict or model section, resolved first: :func:`mtlkit.config.as_resolved`).
    ``image_size`` (H, W) overrides ``data.image_size``."""
    if image_size is not None and (isinstance(image_size, (str, bytes)) or not isinstance(image_size, Sequence)
                                   or len(image_size) != 2 or not all(
                isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in image_size)):
        raise InputError(f"image_size: expected (height, width) positive integers, got {image_size!r}")
    cfg = as_resolved(cfg)
    spec = cfg.model_spec
    if spec is None or spec.backbone is None:
        raise ConfigError("model.backbone: missing (e.g. backbone: resnet_small)")
    size = tuple(int(s) for s in image_size) if image_size is not None else cfg.data_spec.image_size
    backbone = spec.backbone.plugin(**spec.backbone.options)

    tasks, primary = build_tasks(spec)
    aux = OrderedDict((n, t) for n, t in tasks.items() if n != primary)
    block = None
    measured = spec.measured
    readers = measured_readers(spec, tasks)
    if aux:
        not_aux = [n for n, t in aux.items() if not isinstance(t, AuxiliaryTask)]
        if not_aux:
            raise ConfigError(f"model.tasks.{not_aux[0]}: an auxiliary task must subclass "
                              f"mtlkit.task.AuxiliaryTask")
        block_measured = None
        if measured["block"]:
            block_measured = functools.partial(
                MeasuredBlockInput, {n: readers[n] for n in measured["block"]},
                encoder=measured["encoder"], width=int(measured["encoder_channels"]),
                stages=stages_for_stride(backbone.strides[-1]), mode=measured["mode"])
        block = RockBlock(backbone.out_channels[-1], aux, spec.fusion.plugin, spec.fusion.options,
                          measured=block_measured, **spec.block)
    early = None
    if measured["early_fusion"]:
        early = EarlyFusion({n: readers[n] for n in measured["early_fusion"]},
                            float(measured["early_fusion_mean"]), float(measured["early_fusion_std"]))
        backbone.add_input_channels(early.channels)

    context = {"image_size": size, "strides": list(getattr(backbone, "strides", []))}
    head = tasks[primary].build_head(list(backbone.out_channels), **context)
    weighting = spec.weighting.plugin(tasks, **spec.weighting.options)
    return MultiTaskModel(backbone, tasks, primary, head, block, weighting, config=cfg["model"],
                          early_fusion=early, measured_readers=readers, p_train=float(measured["p_train"]))


def measured_readers(spec: ModelSpec, tasks: Mapping[str, Task]) -> Dict[str, Task]:
    """The task objects that turn the sensor's measurements into maps
    (``model.measured``): the model's own task where it learns the modality,
    else one built from :attr:`~mtlkit.resolved.ModelSpec.sensor_tasks`."""
    readers: Dict[str, Task] = {}
    for name in measured_tasks(spec.measured):
        if name in tasks:
            readers[name] = tasks[name]
        else:
            component = spec.sensor_tasks[name]
            readers[name] = component.plugin(name, component.options)
    return readers
