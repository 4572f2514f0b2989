"""The option rule shared by every validation (:mod:`mtlkit.config` for a
whole config, :mod:`mtlkit.data.options` for the data builders' direct
callers): the type a value must have (read off its default), unknown keys
with a did-you-mean, choices, number ranges, and the key that selects a
registered component.

A small module of its own so that the config and the data package both
import it without importing each other (no import cycle).

Type rule: ``int`` is accepted for ``float`` (not ``bool``), a ``list`` /
``tuple`` default accepts either, a ``None`` default accepts anything and a
``None`` value means "not set" (keeps the default).

Selector: every built component is selected by ``name`` (``backbone: {name:
resnet50}``, ``fusion``, ``weighting``, ``train.optimizer``...); a dataset
(``data.<split>``) is selected by ``name`` too and also accepts ``type``, the
same key under its older name, which the shipped configs use (at most one
of the two, or both equal). A bare dataset name is normalised to ``{type:
<name>}``, the form existing run directories hold (resume compares resolved
configs).
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from mtlkit.errors import ConfigError
from mtlkit.registry import did_you_mean

#: the key that selects the plugin of a component section
SELECTOR = "name"
#: the other key a dataset section may select its plugin with
DATASET_SELECTOR_ALIAS = "type"
#: every key that selects a plugin (see :func:`selected`)
SELECTOR_KEYS = ("type", "name")

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a mapping"}


def expected_type(default: Any) -> Optional[type]:
    """The type a config value must have, read off its default (None: any)."""
    if default is None:
        return None
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if isinstance(default, str):
        return str
    if isinstance(default, (list, tuple)):
        return list
    if isinstance(default, Mapping):
        return dict
    return type(default)


def type_ok(value: Any, expected: Optional[type]) -> bool:
    """The project-wide rule: int is a float, bool is not an int, list/tuple alike."""
    if expected is None or value is None:
        return True  # None means "not set / use the default behaviour"
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is list:
        return isinstance(value, (list, tuple))
    if expected is dict:
        return isinstance(value, Mapping)
    return isinstance(value, expected)


def check_options(
    options: Mapping[str, Any],
    defaults: Mapping[str, Any],
    where: str,
    choices: Optional[Mapping[str, Sequence[Any]]] = None,
) -> None:
    """Check ``options`` against a defaults dict (recursing into dict defaults
    that list their keys; an empty dict default accepts any mapping)."""
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {_describe(options)}")
    for key, value in options.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in defaults:
            shown = f"'{path}'" if str(path).isprintable() else repr(str(path))
            raise ConfigError(
                f"unknown key {shown}{did_you_mean(key, defaults)}; "
                f"valid keys of '{where or 'config'}': {', '.join(sorted(map(str, defaults))) or 'none'}"
            )
        default = defaults[key]
        expected = expected_type(default)
        coerced = _coerce_number(value, expected)
        if coerced is not value and isinstance(options, dict):
            options[key] = value = coerced
        if isinstance(value, float) and math.isnan(value):
            raise ConfigError(f"{path}: expected a number, got NaN")
        if not type_ok(value, expected):
            raise ConfigError(
                f"{path}: expected {_TYPE_NAMES.get(expected, expected.__name__)}, "
                f"got {_describe(value)}"
            )
        allowed = (choices or {}).get(path) or (choices or {}).get(key)
        if allowed is not None and value is not None and value not in allowed:
            raise ConfigError(
                f"{path}: invalid value {value!r}{did_you_mean(value, map(str, allowed))}; "
                f"expected one of: {', '.join(map(str, allowed))}"
            )
        if expected is dict and default and isinstance(value, Mapping):
            sub_choices = {k[len(key) + 1:]: v for k, v in (choices or {}).items()
                           if k.startswith(f"{key}.")}
            check_options(value, default, path, sub_choices)


_RANGE = re.compile(r"^\s*(?:(>=|>|<=|<)\s*(\S+)|([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])]))\s*$")


def in_range(value: Any, spec: str) -> bool:
    """Whether the number ``value`` satisfies ``spec`` (">= 0", "> 0", "[0, 1]", "[0, 1)")."""
    m = _RANGE.match(spec)
    if m is None:
        raise ValueError(f"bad range spec {spec!r}")
    v = float(value)
    if math.isnan(v):
        return False
    if m.group(1):
        bound = float(m.group(2))
        return {">=": v >= bound, ">": v > bound, "<=": v <= bound, "<": v < bound}[m.group(1)]
    lo, hi = float(m.group(4)), float(m.group(5))
    return ((v >= lo) if m.group(3) == "[" else (v > lo)) and ((v <= hi) if m.group(6) == "]" else (v < hi))


def _range_text(spec: str) -> str:
    m = _RANGE.match(spec)
    if m.group(1):
        return f"a number {m.group(1)} {m.group(2)}"
    return f"a number in {m.group(3)}{m.group(4)}, {m.group(5)}{m.group(6)}"


def check_ranges(section: Optional[Mapping[str, Any]], ranges: Mapping[str, str], where: str) -> None:
    """Check the numbers of ``section`` at the dotted paths of ``ranges``
    (a list value element by element; missing / None values are skipped)."""
    for path, spec in ranges.items():
        value = get(section or {}, path)
        if value is None or isinstance(value, bool):
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not in_range(v, spec):
                raise ConfigError(f"{where}.{path}: expected {_range_text(spec)}, got {value!r}")


def _coerce_number(value: Any, expected: Optional[type]) -> Any:
    """A float written for an int field as ``1e3`` (integral) -> int; else unchanged."""
    if expected is int and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, Mapping) else "a mapping"


def component(spec: Any, where: str, name_key: str = SELECTOR,
              aliases: Sequence[str] = ()) -> Dict[str, Any]:
    """Normalise ``"residual"`` / ``{"name": "residual", ...}`` to a dict.

    ``aliases``: other keys that may select the plugin instead of
    ``name_key`` (a dataset's ``type``); a bare name is stored under the
    first alias when there is one (see the module docstring)."""
    keys = (name_key, *aliases)
    if isinstance(spec, str):
        return {keys[-1]: spec}
    if isinstance(spec, Mapping):
        given = [k for k in keys if k in spec]
        if not given:
            also = "".join(f" or '{k}'" for k in keys[1:])
            raise ConfigError(f"{where}: missing '{name_key}'{also} (which plugin to use)")
        for key in given:
            if not isinstance(spec[key], str):
                raise ConfigError(f"{where}.{key}: expected a string, got {_describe(spec[key])}")
        if len({spec[k] for k in given}) > 1:
            raise ConfigError(f"{where}: " + " and ".join(f"{k}: {spec[k]!r}" for k in given)
                              + f" select different plugins; give '{name_key}' only")
        return dict(spec)
    raise ConfigError(f"{where}: expected a plugin name or a mapping with '{name_key}', "
                      f"got {_describe(spec)}")


def selected(spec: Mapping[str, Any], keys: Sequence[str] = SELECTOR_KEYS) -> Tuple[Optional[str], Optional[str]]:
    """(the key that selects the plugin of a normalised ``spec``, its value);
    ``(None, None)`` when none does."""
    for key in keys:
        if key in spec:
            return key, spec[key]
    return None, None


def get(cfg: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """``get(cfg, "train.optimizer.lr")`` with a default for missing keys."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node
