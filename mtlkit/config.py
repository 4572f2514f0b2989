"""Configuration: YAML files with ``_base_`` inheritance, ``-o`` overrides, validation.

A config is a plain nested ``dict``. :func:`load_config` reads a file, merges
its ``_base_`` files (a path or a list of paths relative to the file, merged
in order, then the file itself on top: dicts merge key by key, anything else
replaces), applies ``key.path=value`` overrides (values parsed as YAML, so
``-o train.iters=10`` is an int and ``-o model.fusion=gated`` a string) and
validates the result against the schema:

* the core layout below (sections ``model``, ``data``, ``train``, ``eval``);
* each plugin's ``defaults`` (option -> default) for the options of the
  component selected by ``name`` (backbone, fusion, weighting, each task,
  each dataset, which also accepts ``type``: :mod:`mtlkit.options`);
* the engine's ``train`` / ``eval`` schema (:func:`section_schema`: the
  eval section also holds the primary task's post-processing options) and
  the data transforms' defaults.

This is the one validation pass: what :func:`validate_config` returns is
built as it is (:func:`mtlkit.build_model`, :func:`mtlkit.data.build_split`,
the engine) without being checked again.

An unknown key or plugin name fails with one line naming it and the closest
valid ones ("did you mean 'residual'?"); a wrong type names the field and the
expected type. Component entries may be written as a bare name (``fusion:
residual``) and are normalised to ``{"name": "residual"}``; a task set to
``null`` or ``false`` in ``model.tasks`` is dropped (``-o model.tasks.<name>=null``).
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import yaml

from mtlkit.errors import ConfigError
from mtlkit.options import (  # noqa: F401 - the option rule, also imported from here
    DATASET_SELECTOR_ALIAS,
    SELECTOR,
    SELECTOR_KEYS,
    check_options,
    check_ranges,
    component,
    expected_type,
    get,
    in_range,
    selected,
    type_ok,
    _describe,
)
from mtlkit.registry import RegistryError, get_registry
from mtlkit.utils.io import atomic_write, plain

PathLike = Union[str, "os.PathLike[str]"]

BASE_KEY = "_base_"

#: top-level sections and what they hold
TOP_LEVEL_KEYS = ("name", "description", "model", "data", "train", "eval")

#: model keys that select a registered component: key -> (kind, name field)
MODEL_COMPONENTS = {"backbone": "backbone", "fusion": "fusion", "weighting": "weighting"}

DATA_SPLITS = ("train", "val", "test")
DATA_RANGES = {"batch_size": ">= 1", "num_workers": ">= 0"}
DATA_DEFAULTS: Dict[str, Any] = {
    "train": None,
    "val": None,
    "test": None,
    "image_size": [240, 320],
    "batch_size": 8,
    "num_workers": 0,
    "augment": {},
}


# ----------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-3`` / ``5E4`` / ``+1e-3`` as numbers.

    YAML 1.1 (PyYAML) only resolves exponents written with a dot and a sign
    (``1.0e-3``), so ``lr: 1e-3`` would be the string ``'1e-3'``: every user
    means the number (YAML 1.2 and JSON read it so)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
                    |[-+]?\.[0-9_]+[eE][-+]?[0-9]+)$""", re.X),
    list("-+0123456789."))


def yaml_load(text: Any) -> Any:
    """``yaml.safe_load`` with the numbers rule of :class:`_Loader`."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: PathLike) -> Dict[str, Any]:
    """Read one YAML mapping (safe loader); clear errors otherwise."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a directory, expected a config YAML file")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml_load(handle)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
        problem = " ".join(str(problem).split())  # one line
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def _switches_plugin(base: Mapping[str, Any], top: Mapping[str, Any]) -> bool:
    """Whether ``top`` selects another plugin than ``base`` (by ``name`` or a
    dataset's ``type``, whichever each writes: :data:`SELECTOR_KEYS`): a
    section of another plugin replaces the base's instead of merging with it."""
    _, top_name = selected(top)
    _, base_name = selected(base)
    return top_name is not None and base_name is not None and top_name != base_name


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> Dict[str, Any]:
    """Recursive merge: dicts merge key by key, anything else in ``top`` replaces.

    A dict of ``top`` that selects another plugin than the base's (its
    ``type`` or ``name`` differs, e.g. ``data.train: {type: coco, ...}`` over a
    synthetic base) replaces the base's dict: the base's options belong to the
    other plugin."""
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) \
                and not _switches_plugin(out[key], value):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_with_bases(path: str, stack: Tuple[str, ...]) -> Dict[str, Any]:
    real = os.path.realpath(path)
    if real in stack:
        chain = " -> ".join(list(stack) + [real])
        raise ConfigError(f"{path}: circular _base_ inheritance: {chain}")
    data = read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {bases!r}")
    merged: Dict[str, Any] = {}
    folder = os.path.dirname(os.path.abspath(path))
    for base in bases:
        base_path = base if os.path.isabs(base) else os.path.join(folder, base)
        if not os.path.isfile(base_path):
            raise ConfigError(f"{path}: _base_ file not found: {base} (looked at {base_path})")
        merged = merge(merged, _load_with_bases(base_path, stack + (real,)))
    return merge(merged, data)


def parse_override(text: str) -> Tuple[List[str], Any]:
    """``"a.b=c"`` -> (["a", "b"], yaml-typed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(cfg: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """Apply ``key.path=value`` overrides to a copy of ``cfg``."""
    out = copy.deepcopy(cfg)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, str) and parts[: i + 1][-1] in MODEL_COMPONENTS:
                # "fusion: residual" then "-o model.fusion.per=pixel"
                child = node[part] = {"name": child}
            elif not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(
                    f"override {text!r}: '{where}' is a {type(child).__name__}, not a section"
                )
            node = child
        node[parts[-1]] = value
    return out


def load_config(
    source: Union[PathLike, Mapping[str, Any]],
    overrides: Sequence[str] = (),
    validate: bool = True,
) -> Dict[str, Any]:
    """Load a config from a path (with ``_base_``) or a dict, apply overrides,
    validate and normalise it. Returns a new dict."""
    if isinstance(source, Mapping):
        cfg = copy.deepcopy(dict(source))
        cfg.pop(BASE_KEY, None)
    else:
        cfg = _load_with_bases(os.fspath(source), ())
    cfg = apply_overrides(cfg, overrides)
    return validate_config(cfg) if validate else cfg


def save_config(cfg: Mapping[str, Any], path: PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(plain(cfg), handle, sort_keys=False, default_flow_style=None)


# ----------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------
def _lookup(kind: str, name: str, where: str) -> Any:
    try:
        return get_registry().get(kind, name)
    except RegistryError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def component_options(cls: Any, options: Mapping[str, Any], where: str,
                      extra_defaults: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The one option check of a component class (a fusion, weighting,
    backbone, dataset, the ROCK block...): ``options`` against its ``defaults``
    (plus ``extra_defaults``; unknown keys with a did-you-mean, types),
    ``choices`` and ``ranges``; returns the options merged over the defaults.
    :func:`validate_config` runs it on every component of a config; code that
    builds a component by hand calls it once before (components do not check
    again). Numbers coerced by the check (``1e3`` for an int) are written
    back into ``options`` when it is a dict."""
    defaults = {**(getattr(cls, "defaults", None) or {}), **(extra_defaults or {})}
    check_options(options, defaults, where, getattr(cls, "choices", None))
    check_ranges(options, getattr(cls, "ranges", None) or {}, where)
    return {**defaults, **options}


def _check_component(spec: Any, kind: str, where: str) -> Dict[str, Any]:
    aliases = (DATASET_SELECTOR_ALIAS,) if kind == "dataset" else ()
    spec = component(spec, where, SELECTOR, aliases)
    key, name = selected(spec, (SELECTOR, *aliases))
    obj = _lookup(kind, name, f"{where}.{key}" if aliases else where)
    extra = {"label_subset": None} if kind == "dataset" else None  # every dataset's (mtlkit.data.build_dataset)
    options = {k: v for k, v in spec.items() if k not in (SELECTOR, *aliases)}
    component_options(obj, options, where, extra)
    spec.update(options)
    return spec


class SectionSchema(NamedTuple):
    """What validation checks a ``train`` / ``eval`` section against."""

    defaults: Dict[str, Any]
    choices: Dict[str, Sequence[Any]]
    ranges: Dict[str, str]


def _primary_task_classes(model: Any) -> List[type]:
    """The primary task class(es) a config's model section selects; without
    one (no model section, or its tasks unknown), every registered primary."""
    from mtlkit.task import PRIMARY

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


def section_schema(section: str, model: Any = None) -> SectionSchema:
    """The schema of the ``train`` or ``eval`` section: the engine's
    (:mod:`mtlkit.engine.schema`), and for ``eval`` also the post-processing
    options of the model's primary task (:attr:`mtlkit.task.Task.postprocess_options`,
    with that task's defaults and ranges): the eval section is their one home."""
    from mtlkit.engine import schema

    if section == "train":
        return SectionSchema(schema.TRAIN_DEFAULTS, schema.TRAIN_CHOICES, schema.TRAIN_RANGES)
    defaults, choices, ranges = dict(schema.EVAL_DEFAULTS), dict(schema.EVAL_CHOICES), dict(schema.EVAL_RANGES)
    for cls in _primary_task_classes(model):
        task_defaults = getattr(cls, "defaults", None) or {}
        for key in getattr(cls, "postprocess_options", ()) or ():
            defaults.setdefault(key, task_defaults.get(key))
            if key in (getattr(cls, "ranges", None) or {}):
                ranges.setdefault(key, cls.ranges[key])
            if key in (getattr(cls, "choices", None) or {}):
                choices.setdefault(key, cls.choices[key])
    return SectionSchema(defaults, choices, ranges)


def validate_config(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """Validate a merged config and return its normalised copy; raises
    :class:`ConfigError` on the first problem."""
    from mtlkit.task import COMMON_DEFAULTS, PRIMARY

    if not isinstance(cfg, Mapping):
        raise ConfigError(f"config: expected a mapping, got {_describe(cfg)}")
    cfg = copy.deepcopy(dict(cfg))
    check_options({k: None for k in cfg}, dict.fromkeys(TOP_LEVEL_KEYS), "")

    model = cfg.get("model")
    if model is not None:
        if not isinstance(model, Mapping):
            raise ConfigError(f"model: expected a mapping, got {_describe(model)}")
        from mtlkit.models.rock import RockBlock

        model_keys = {"backbone": None, "fusion": None, "weighting": None, "tasks": {},
                      "block": RockBlock.defaults}
        check_options({k: None for k in model}, model_keys, "model")
        for key, kind in MODEL_COMPONENTS.items():
            if model.get(key) is not None:
                model[key] = _check_component(model[key], kind, f"model.{key}")
        if model.get("block") is not None:
            component_options(RockBlock, model["block"], "model.block")
        tasks = model.get("tasks") or {}
        if not isinstance(tasks, Mapping):
            raise ConfigError(f"model.tasks: expected a mapping task name -> options, got {_describe(tasks)}")
        kept = {}
        for name, options in tasks.items():
            if options is None or options is False:
                continue  # dropped, e.g. by -o model.tasks.<name>=null
            if options is True:
                options = {}
            task_cls = _lookup("task", name, f"model.tasks.{name}")
            defaults = {**COMMON_DEFAULTS, **(getattr(task_cls, "defaults", None) or {})}
            if isinstance(options, dict) and getattr(task_cls, "role", None) == PRIMARY:
                _refuse_postprocess_options(options, name, getattr(task_cls, "postprocess_options", ()))
            check_options(options, defaults, f"model.tasks.{name}", getattr(task_cls, "choices", None))
            check_ranges(options, {"num_classes": ">= 1", **(getattr(task_cls, "ranges", None) or {})},
                         f"model.tasks.{name}")
            kept[name] = dict(options)
        model["tasks"] = kept

    data = cfg.get("data")
    if data is not None:
        from mtlkit.data.transforms import AUGMENT_DEFAULTS

        data_defaults = {**DATA_DEFAULTS, "augment": AUGMENT_DEFAULTS}
        if not isinstance(data, Mapping):
            raise ConfigError(f"data: expected a mapping, got {_describe(data)}")
        # The splits are checked by their dataset plugin below; here only their names.
        check_options({k: (None if k in DATA_SPLITS else v) for k, v in data.items()},
                      {k: (None if k in DATA_SPLITS else v) for k, v in data_defaults.items()}, "data")
        for split in DATA_SPLITS:
            if data.get(split) is not None:
                data[split] = _check_component(data[split], "dataset", f"data.{split}")
        size = data.get("image_size")
        if size is not None and (len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           and s > 0 for s in size)):
            raise ConfigError(f"data.image_size: expected [height, width] positive integers, got {size!r}")
        check_ranges(data, DATA_RANGES, "data")

    for section in ("train", "eval"):
        if cfg.get(section) is None:
            continue
        schema = section_schema(section, cfg.get("model"))
        check_options(cfg[section], schema.defaults, section, schema.choices)
        check_ranges(cfg[section], schema.ranges, section)
    return cfg


def _refuse_postprocess_options(options: Mapping[str, Any], task: str, keys: Sequence[str]) -> None:
    """The primary task's post-processing options (``keys``) have one home,
    the ``eval`` section (which always sets them: a copy in the task's section
    would be silently replaced)."""
    for key in options:
        if key in keys:
            raise ConfigError(f"model.tasks.{task}.{key}: post-processing options are set in the eval "
                              f"section only; write eval.{key} instead")
