"""The one validation pass over a config, and the resolved config it gives.

A run's config goes ``load -> validate -> resolve`` once
(:func:`mtlkit.config.run_config`):

* :func:`validate_config` checks a config dict against the schema: the
  config's own sections (:mod:`mtlkit.schema`) and, for every component a
  section selects by name (backbone, fusion, weighting, each task, each
  dataset), what its plugin class declares (:mod:`mtlkit.options`). It
  normalises as it goes (a bare name becomes ``{name: ...}``, a task set to
  ``null`` is dropped, ``1e3`` for an int becomes 1000) and returns the
  normalised dict, or raises one :class:`~mtlkit.errors.ConfigError` line
  naming the field;
* :func:`resolve_config` validates and resolves into a
  :class:`ResolvedConfig`: read-only, its ``train`` / ``eval`` sections
  complete (the form ``config.yaml`` and a checkpoint hold), and typed:
  :attr:`ResolvedConfig.model_spec` / :attr:`ResolvedConfig.data_spec` give
  every component as a :class:`Component` (its plugin and its options,
  checked and merged over the plugin's defaults, once).

The builders (:func:`mtlkit.build_model`, :func:`mtlkit.data.build_split`,
the optimiser, the evaluator, the ablation) take a :class:`ResolvedConfig`
and check nothing again; given a path or a plain dict they resolve it first.

This module is the data builders' way to the schema too, which is why it is
not :mod:`mtlkit.config` (the data package does not import the config files'
loader).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mtlkit import schema
from mtlkit.errors import ConfigError
from mtlkit.options import (
    DATASET_SELECTOR_ALIAS,
    SELECTOR,
    Options,
    Schema,
    _describe,
    check_options,
    check_ranges,
    component,
    selected,
    with_defaults,
)
from mtlkit.registry import RegistryError, get_registry
from mtlkit.task import PRIMARY, AuxiliaryTask, Task
from mtlkit.utils.frozen import FrozenDict, freeze, thaw

#: every dataset accepts ``label_subset`` besides its plugin's options
DATASET_EXTRA_DEFAULTS: Dict[str, Any] = {"label_subset": None}
_DATASET_KEYS = (SELECTOR, DATASET_SELECTOR_ALIAS)


# ----------------------------------------------------------------------------
# the typed, read-only resolved config
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Component:
    """A plugin that a config section selects by name."""

    #: the registry kind: backbone, task, fusion, weighting or dataset
    kind: str
    #: its registered name
    name: str
    #: the registered class (or a dataset's factory)
    plugin: Any
    #: its options, checked and merged over its defaults (read-only)
    options: Options
    #: where the config holds it, for messages ("model.fusion", "data.train")
    where: str


@dataclass(frozen=True)
class SplitSpec(Component):
    """A data split: its dataset plugin, and the split's ``label_subset`` (complete, or None)."""

    label_subset: Optional[Options] = None


@dataclass(frozen=True)
class ModelSpec:
    """What :func:`mtlkit.build_model` builds."""

    #: None when the config names none (building then fails with that message)
    backbone: Optional[Component]
    #: task name -> component, in config order (the primary's options hold
    #: the ``eval`` section's post-processing options)
    tasks: Mapping[str, Component]
    fusion: Component
    #: the ROCK block's options, complete
    block: Options
    weighting: Component
    #: measured inputs (``model.measured``), complete (both lists empty: none)
    measured: Options
    #: tasks the model reads a sensor's measurement of without learning them
    #: (``measured.early_fusion`` names outside ``tasks``), with their
    #: plugin's defaults: they turn the measurement into a map
    sensor_tasks: Mapping[str, Component]


@dataclass(frozen=True)
class DataSpec:
    """What :func:`mtlkit.data.build_split` builds."""

    splits: Mapping[str, SplitSpec]
    #: ``data.augment``, complete
    augment: Options
    #: (H, W) fed to the network, or None (each sample keeps its size)
    image_size: Optional[Tuple[int, int]]
    batch_size: int
    num_workers: int


class ResolvedConfig(FrozenDict):
    """The one resolved config of a run (see the module docstring).

    As a mapping: the validated config with ``train`` / ``eval`` complete,
    read-only (what ``config.yaml``, a checkpoint's config and an ablation
    run's fingerprint hold; ``copy.deepcopy`` gives an editable plain copy).
    Typed: :attr:`model_spec`, :attr:`data_spec`."""

    __slots__ = ("_model_spec", "_data_spec")

    def __init__(self, config: Mapping[str, Any], model_spec: Optional[ModelSpec], data_spec: DataSpec):
        super().__init__(freeze(dict(config)))
        object.__setattr__(self, "_model_spec", model_spec)
        object.__setattr__(self, "_data_spec", data_spec)

    @property
    def model_spec(self) -> Optional[ModelSpec]:
        """The model's components (None without a ``model`` section)."""
        return self._model_spec

    @property
    def data_spec(self) -> DataSpec:
        """The data's splits and transforms (no split without a ``data`` section)."""
        return self._data_spec

    def to_dict(self) -> Dict[str, Any]:
        """A plain, editable deep copy of the config."""
        return thaw(self)

    def __reduce__(self):
        return type(self), (dict(self), self._model_spec, self._data_spec)


# ----------------------------------------------------------------------------
# validation: the one pass
# ----------------------------------------------------------------------------
def lookup(kind: str, name: str, where: str) -> Any:
    """The registered ``kind`` named ``name``; a :class:`ConfigError` naming ``where`` if none."""
    try:
        return get_registry().get(kind, name)
    except RegistryError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check_component(spec: Any, kind: str, where: str) -> Dict[str, Any]:
    """A component section (``"name"`` or ``{name: ..., <options>}``; a
    dataset's also by ``type``) normalised and checked against its plugin:
    returns the normalised dict, its numbers coerced."""
    aliases = (DATASET_SELECTOR_ALIAS,) if kind == "dataset" else ()
    spec = component(spec, where, SELECTOR, aliases)
    key, name = selected(spec, (SELECTOR, *aliases))
    plugin = lookup(kind, name, f"{where}.{key}" if aliases else where)
    options = {k: v for k, v in spec.items() if k not in (SELECTOR, *aliases)}
    extra = DATASET_EXTRA_DEFAULTS if kind == "dataset" else None
    checked = Schema.of(plugin, extra).validate(options, where)
    if kind == "dataset" and checked.get("label_subset") is not None:
        checked["label_subset"] = schema.LABEL_SUBSET.validate(checked["label_subset"], f"{where}.label_subset")
    spec.update(checked)
    return spec


def _primary_task_classes(model: Any) -> List[type]:
    """The primary task class(es) a config's model section selects; without
    one (no model section, or its tasks unknown), every registered primary."""
    registry = get_registry()
    tasks = model.get("tasks") if isinstance(model, Mapping) else None
    names = [n for n, o in tasks.items() if o is not None and o is not False] \
        if isinstance(tasks, Mapping) else []
    classes = [registry.get("task", n) for n in names if ("task", n) in registry]
    primaries = [c for c in classes if getattr(c, "role", None) == PRIMARY]
    if not primaries:
        primaries = [c for c in (registry.get("task", n) for n in registry.names("task"))
                     if getattr(c, "role", None) == PRIMARY]
    return primaries


def section_schema(section: str, model: Any = None) -> Schema:
    """The schema of the ``train`` or ``eval`` section: the config's own
    (:mod:`mtlkit.schema`), and for ``eval`` also the post-processing options
    of the model's primary task (:attr:`mtlkit.task.Task.postprocess_options`,
    with that task's defaults, ranges and choices): the eval section is their
    one home, the task's ``defaults`` their default's."""
    if section == "train":
        return schema.TRAIN
    defaults, choices, ranges = dict(schema.EVAL.defaults), dict(schema.EVAL.choices), dict(schema.EVAL.ranges)
    for cls in _primary_task_classes(model):
        task_defaults = getattr(cls, "defaults", None) or {}
        for key in getattr(cls, "postprocess_options", ()) or ():
            defaults.setdefault(key, task_defaults.get(key))
            if key in (getattr(cls, "ranges", None) or {}):
                ranges.setdefault(key, cls.ranges[key])
            if key in (getattr(cls, "choices", None) or {}):
                choices.setdefault(key, cls.choices[key])
    return Schema(defaults, choices, ranges)


def check_data(data: Any) -> Dict[str, Any]:
    """The ``data`` section checked: its own keys (:data:`mtlkit.schema.DATA`,
    ``augment`` included) and each split against its dataset plugin."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"data: expected a mapping, got {_describe(data)}")
    data = dict(data)
    # The splits are checked by their dataset plugin below; here only their names.
    checked = check_options({k: (None if k in schema.DATA_SPLITS else v) for k, v in data.items()},
                            {k: (None if k in schema.DATA_SPLITS else v) for k, v in schema.DATA.defaults.items()},
                            "data")
    data.update({k: v for k, v in checked.items() if k not in schema.DATA_SPLITS})
    for split in schema.DATA_SPLITS:
        if data.get(split) is not None:
            data[split] = check_component(data[split], "dataset", f"data.{split}")
    size = data.get("image_size")
    if size is not None and (not isinstance(size, (list, tuple)) or len(size) != 2
                             or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ConfigError(f"data.image_size: expected [height, width] positive integers, got {size!r}")
    if size is not None and (max(size) > schema.MAX_IMAGE_SIDE or max(size) > schema.MAX_ASPECT * min(size)):
        raise ConfigError(f"data.image_size: {list(size)} is no picture a detector learns from (expected sides "
                          f"up to {schema.MAX_IMAGE_SIDE} pixels and at most {schema.MAX_ASPECT}:1 between "
                          f"them; [height, width], e.g. [240, 320])")
    check_ranges(data, schema.DATA.ranges, "data")
    return data


def _check_model(model: Any) -> Dict[str, Any]:
    if not isinstance(model, Mapping):
        raise ConfigError(f"model: expected a mapping, got {_describe(model)}")
    model = dict(model)
    check_options({k: None for k in model}, schema.MODEL_KEYS, "model")
    for key, kind in schema.MODEL_COMPONENTS.items():
        if model.get(key) is not None:
            model[key] = check_component(model[key], kind, f"model.{key}")
    if model.get("block") is not None:
        model["block"] = schema.BLOCK.validate(model["block"], "model.block")
    tasks = model.get("tasks") or {}
    if not isinstance(tasks, Mapping):
        raise ConfigError(f"model.tasks: expected a mapping task name -> options, got {_describe(tasks)}")
    kept = {}
    for name, options in tasks.items():
        if options is None or options is False:
            continue  # dropped, e.g. by -o model.tasks.<name>=null
        if options is True:
            options = {}
        task_cls = lookup("task", name, f"model.tasks.{name}")
        if isinstance(options, Mapping) and getattr(task_cls, "role", None) == PRIMARY:
            _refuse_postprocess_options(options, name, getattr(task_cls, "postprocess_options", ()))
        kept[name] = task_cls.schema().validate(options, f"model.tasks.{name}")
    model["tasks"] = kept
    if model.get("measured") is not None:
        model["measured"] = schema.MEASURED.validate(model["measured"], "model.measured")
        _check_measured_tasks(model)
    return model


def _check_measured_tasks(model: Mapping[str, Any]) -> None:
    """``model.measured`` against the model: the block decodes measurements
    of the model's own auxiliary tasks, through a fusion that reads decoded
    maps; every task named can turn its label into a map
    (:meth:`mtlkit.task.AuxiliaryTask.measured_map`)."""
    measured, tasks = schema.MEASURED.complete(model["measured"]), model["tasks"]
    fusion = model.get("fusion") or {SELECTOR: schema.MODEL_COMPONENT_DEFAULTS["fusion"]}
    fusion_cls = get_registry().get("fusion", selected(fusion, (SELECTOR,))[1])
    for field in ("block", "early_fusion"):
        where = f"model.measured.{field}"
        for name in measured[field]:
            if field == "block":
                aux = [n for n in tasks if getattr(get_registry().get("task", n), "role", None) != PRIMARY]
                if name not in aux:
                    raise ConfigError(f"{where}: '{name}' is not an auxiliary task of the model "
                                      f"(its auxiliary tasks: {', '.join(aux) or 'none'})")
                if not fusion_cls.uses_decoded:
                    raise ConfigError(f"{where}: the fusion decodes no task map (e.g. 'none', flat MTL), so "
                                      "a measured map has nowhere to go; use a fusion such as 'residual'")
            task_cls = lookup("task", name, f"{where}: task '{name}'")
            if not (isinstance(task_cls, type) and issubclass(task_cls, AuxiliaryTask)
                    and task_cls.can_be_measured()):
                raise ConfigError(f"{where}: task '{name}' ({getattr(task_cls, '__name__', task_cls)}) cannot "
                                  "take a measured input: its plugin does not say how its label becomes a map "
                                  "(AuxiliaryTask.measured_map)")


def _refuse_postprocess_options(options: Mapping[str, Any], task: str, keys: Sequence[str]) -> None:
    """The primary task's post-processing options (``keys``) have one home,
    the ``eval`` section (which always sets them: a copy in the task's section
    would be silently replaced)."""
    for key in options:
        if key in keys:
            raise ConfigError(f"model.tasks.{task}.{key}: post-processing options are set in the eval "
                              f"section only; write eval.{key} instead")


def validate_config(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """Validate a merged config and return its normalised copy (a plain
    dict); raises :class:`ConfigError` on the first problem."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"config: expected a mapping, got {_describe(cfg)}")
    cfg = copy.deepcopy(dict(cfg))
    check_options({k: None for k in cfg}, dict.fromkeys(schema.TOP_LEVEL_KEYS), "")
    if cfg.get("model") is not None:
        cfg["model"] = _check_model(cfg["model"])
    if cfg.get("data") is not None:
        cfg["data"] = check_data(cfg["data"])
    for section in ("train", "eval"):
        if cfg.get(section) is not None:
            cfg[section] = section_schema(section, cfg.get("model")).validate(cfg[section], section)
    return cfg


# ----------------------------------------------------------------------------
# resolution
# ----------------------------------------------------------------------------
def component_spec(spec: Mapping[str, Any], kind: str, where: str) -> Component:
    """The :class:`Component` of a *validated* component section: its plugin
    and its options merged over the plugin's defaults (a dataset's as a
    :class:`SplitSpec`)."""
    aliases = (DATASET_SELECTOR_ALIAS,) if kind == "dataset" else ()
    _, name = selected(spec, (SELECTOR, *aliases))
    plugin = get_registry().get(kind, name)
    options = {k: v for k, v in spec.items() if k not in (SELECTOR, *aliases, "label_subset")}
    if kind == "task":
        return Component(kind, name, plugin, plugin.schema().complete(options), where)
    complete = Schema.of(plugin).complete(options)
    if kind != "dataset":
        return Component(kind, name, plugin, complete, where)
    subset = spec.get("label_subset")
    return SplitSpec(kind, name, plugin, complete, where,
                     schema.LABEL_SUBSET.complete(subset) if subset is not None else None)


def split_spec(spec: Any, where: str = "dataset") -> SplitSpec:
    """A dataset section (``{type: NAME, <options>}``) checked and resolved:
    what :func:`mtlkit.data.build_dataset` builds a plain dict from."""
    if not isinstance(spec, (str, Mapping)):
        raise ConfigError(f"{where} must be a mapping with a 'name' (or 'type'), got {spec!r}")
    if isinstance(spec, Mapping) and not any(k in spec for k in _DATASET_KEYS):
        raise ConfigError(f"{where}: missing 'type' or 'name' (the name of a dataset plugin, "
                          "e.g. synthetic, nyuv2, coco)")
    return component_spec(check_component(spec, "dataset", where), "dataset", where)


def data_spec(data: Mapping[str, Any]) -> DataSpec:
    """The :class:`DataSpec` of a *validated* data section."""
    size = data.get("image_size")
    own = with_defaults({k: v for k, v in schema.DATA_DEFAULTS.items() if k not in schema.DATA_SPLITS},
                        {k: v for k, v in data.items() if k not in schema.DATA_SPLITS})
    return DataSpec(
        splits={split: component_spec(data[split], "dataset", f"data.{split}")
                for split in schema.DATA_SPLITS if data.get(split) is not None},
        augment=schema.AUGMENT.complete(data.get("augment")),
        image_size=(int(size[0]), int(size[1])) if size is not None else None,
        batch_size=int(own["batch_size"]),
        num_workers=int(own["num_workers"]))


def _model_spec(model: Mapping[str, Any], eval_section: Mapping[str, Any]) -> ModelSpec:
    """The :class:`ModelSpec` of a *validated* model section; the primary
    task's post-processing options come from the (complete) eval section."""
    def chosen(key: str) -> Component:
        spec = model.get(key) or {SELECTOR: schema.MODEL_COMPONENT_DEFAULTS[key]}
        return component_spec(spec, key, f"model.{key}")

    tasks: Dict[str, Component] = {}
    for name, options in (model.get("tasks") or {}).items():
        cls = get_registry().get("task", name)
        if getattr(cls, "role", None) == PRIMARY:
            options = {**options, **{k: eval_section[k] for k in cls.postprocess_options if k in eval_section}}
        tasks[name] = component_spec({SELECTOR: name, **options}, "task", f"model.tasks.{name}")
    measured = schema.MEASURED.complete(model.get("measured"))
    sensor_tasks = {name: component_spec({SELECTOR: name}, "task", f"model.measured.early_fusion.{name}")
                    for name in measured["early_fusion"] if name not in tasks}
    return ModelSpec(
        backbone=component_spec(model["backbone"], "backbone", "model.backbone")
        if model.get("backbone") is not None else None,
        tasks=FrozenDict(tasks), fusion=chosen("fusion"), weighting=chosen("weighting"),
        block=schema.BLOCK.complete(model.get("block")),
        measured=measured, sensor_tasks=FrozenDict(sensor_tasks))


def resolve_config(cfg: Mapping[str, Any]) -> ResolvedConfig:
    """``cfg`` validated once (:func:`validate_config`) and resolved: the
    ``train`` / ``eval`` sections completed with their defaults (the eval
    section's post-processing ones from the primary task), every component
    as a :class:`Component`. A :class:`ResolvedConfig` is returned as it is."""
    if isinstance(cfg, ResolvedConfig):
        return cfg
    cfg = validate_config(cfg)
    for section in ("train", "eval"):
        cfg[section] = with_defaults(section_schema(section, cfg.get("model")).defaults, cfg.get(section))
    model = _model_spec(cfg["model"], cfg["eval"]) if cfg.get("model") is not None else None
    return ResolvedConfig(cfg, model, data_spec(cfg.get("data") or {}))


def check_postprocess_options(task: Task, options: Mapping[str, Any]) -> Dict[str, Any]:
    """``options`` (post-processing options of the primary ``task``, as in the
    ``eval`` section) checked by the one rule: the keys it names in
    :attr:`~mtlkit.task.Task.postprocess_options` with its defaults, choices
    and ranges. Returns them, numbers coerced."""
    keys = tuple(getattr(task, "postprocess_options", ())) or tuple(task.options)
    task_schema = task.schema()
    rule = Schema({k: task_schema.defaults.get(k) for k in keys},
                  {k: v for k, v in task_schema.choices.items() if k in keys},
                  {k: v for k, v in task_schema.ranges.items() if k in keys})
    return rule.validate(options, "eval")
