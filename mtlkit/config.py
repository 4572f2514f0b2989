"""Configuration files: YAML with ``_base_`` inheritance and ``-o`` overrides.

A config is a plain nested ``dict``. :func:`load_config` reads a file (with
:func:`mtlkit.utils.yaml_io.read_yaml`, the one YAML reader), merges its
``_base_`` files (a path or a list of paths relative to the file, merged in
order, then the file itself on top: :func:`mtlkit.options.merge`, dicts key
by key, anything else replaces, a section of another plugin replaces the
base's), applies ``key.path=value`` overrides (values parsed as YAML, so
``-o train.iters=10`` is an int and ``-o model.fusion=gated`` a string) and
validates the result (:func:`mtlkit.resolved.validate_config`, the one
validation pass: the schema of :mod:`mtlkit.schema` and every plugin's
declared options).

:func:`run_config` is a run's whole pipeline, ``load -> validate ->
resolve``, once: it returns the :class:`~mtlkit.resolved.ResolvedConfig`
that the trainer, the evaluator, the model and data builders and the
ablation take as it is. Command-line flags are overrides too
(:func:`flag_overrides`), applied before the validation.

An unknown key or plugin name fails with one line naming it and the closest
valid ones ("did you mean 'residual'?"); a wrong type names the field and the
expected type. Component entries may be written as a bare name (``fusion:
residual``) and are normalised to ``{"name": "residual"}``; a task set to
``null`` or ``false`` in ``model.tasks`` is dropped (``-o model.tasks.<name>=null``).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple, Union

import yaml

from mtlkit.errors import ConfigError
from mtlkit.options import (  # noqa: F401 - the option rule, also imported from here
    DATASET_SELECTOR_ALIAS,
    SELECTOR,
    SELECTOR_KEYS,
    Options,
    Schema,
    check_options,
    check_ranges,
    component,
    component_options,
    expected_type,
    get,
    in_range,
    merge as _merge,
    selected,
    type_ok,
    with_defaults,
)
from mtlkit.resolved import (  # noqa: F401 - the validation pass, also imported from here
    ResolvedConfig,
    resolve_config,
    section_schema,
    validate_config,
)
from mtlkit.schema import DATA_DEFAULTS, DATA_RANGES, DATA_SPLITS, MODEL_COMPONENTS, TOP_LEVEL_KEYS  # noqa: F401
from mtlkit.utils.io import atomic_write, plain
from mtlkit.utils.paths import kind_of
from mtlkit.utils.yaml_io import DocumentTooLarge, read_yaml, yaml_load  # noqa: F401 - also imported from here

PathLike = Union[str, "os.PathLike[str]"]
ConfigSource = Union[PathLike, Mapping[str, Any]]

BASE_KEY = "_base_"


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``_base_`` merge: :func:`mtlkit.options.merge` with a section that
    selects another plugin replacing the base's (``data.train: {type: coco,
    ...}`` over a synthetic base: the base's options belong to the other plugin)."""
    return _merge(base, top, switch_plugins=True)


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
            what = kind_of(base_path)
            found = "not found" if what == "missing" else f"is a {what}, not a file"
            raise ConfigError(f"{path}: _base_ file {found}: {base} (looked at {base_path})")
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
    except DocumentTooLarge as exc:
        raise ConfigError(f"override {key.strip()}=...: not a config value: {exc}") from None
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
    source: ConfigSource,
    overrides: Sequence[str] = (),
    validate: bool = True,
) -> Dict[str, Any]:
    """Load a config from a path (with ``_base_``) or a dict, apply overrides,
    validate and normalise it (``validate=False``: merged only). Returns a new dict."""
    if isinstance(source, Mapping):
        cfg = copy.deepcopy(dict(source))
        cfg.pop(BASE_KEY, None)
    else:
        cfg = _load_with_bases(os.fspath(source), ())
    cfg = apply_overrides(cfg, overrides)
    return validate_config(cfg) if validate else cfg


def run_config(source: ConfigSource, overrides: Sequence[str] = ()) -> ResolvedConfig:
    """The one resolved config of a run: ``source`` (a path or a dict) with
    ``overrides`` applied, validated and resolved, once. A
    :class:`~mtlkit.resolved.ResolvedConfig` without overrides is returned as it is."""
    if isinstance(source, ResolvedConfig) and not overrides:
        return source
    return resolve_config(load_config(source, overrides, validate=False))


def as_resolved(cfg: Any) -> ResolvedConfig:
    """What the builders take: a :class:`~mtlkit.resolved.ResolvedConfig` as
    it is; a config path or dict resolved (a dict without a ``model`` key is
    taken as the model section)."""
    if isinstance(cfg, ResolvedConfig):
        return cfg
    if isinstance(cfg, (str, os.PathLike)):
        return run_config(cfg)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"expected a config path or dict, got {type(cfg).__name__}")
    return resolve_config(cfg if "model" in cfg else {"model": cfg})


def flag_overrides(section: str, **values: Any) -> List[str]:
    """``section.key=value`` overrides of the values that are not None, the
    value written as JSON (which YAML reads back as the same value):
    ``flag_overrides("train", iters=5, seed=None)`` -> ``["train.iters=5"]``."""
    return [f"{section}.{key}={json.dumps(value.item() if hasattr(value, 'item') else value)}"
            for key, value in values.items() if value is not None]


def save_config(cfg: Mapping[str, Any], path: PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(plain(cfg), handle, sort_keys=False, default_flow_style=None)
