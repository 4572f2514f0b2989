"""The one option rule: how every option of mtlkit is checked and completed.

Every set of options, a config section (``train``, ``eval``, ``data``,
``data.augment``, a split's ``label_subset``, ``model.block``) or a plugin
component (a backbone, task, fusion, weighting, dataset), is described by a
:class:`Schema`: its ``defaults`` (option -> default value: the one home of
each default), the allowed ``choices`` of some options, number ``ranges``,
list ``lengths`` and, for what these cannot say (a relation between two
options), a ``check`` function. A plugin class declares the same facets as
class attributes (:meth:`Schema.of`).

:meth:`Schema.validate` checks options (unknown keys with a did-you-mean,
types read off the defaults, choices, ranges, lengths, the check);
:meth:`Schema.complete` merges them over the defaults into :class:`Options`,
a read-only mapping that says "checked and complete". The config's one
validation pass (:mod:`mtlkit.config`) runs the first for a whole config
and its resolution the second; a component built by hand from plain options
runs both (:func:`component_options`); one given :class:`Options` takes them
as they are.

Type rule: ``int`` is accepted for ``float`` (not ``bool``), a ``list`` /
``tuple`` default accepts either, a ``None`` default accepts anything and a
``None`` value means "not set": it keeps the default.

Selector: every built component is selected by ``name`` (``backbone: {name:
resnet50}``, ``fusion``, ``weighting``, ``train.optimizer``...); a dataset
(``data.<split>``) is selected by ``name`` too and also accepts ``type``, the
same key under its older name, which the shipped configs use (at most one
of the two, or both equal). A bare dataset name is normalised to ``{type:
<name>}``, the form existing run directories hold (resume compares resolved
configs).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from mtlkit.errors import ConfigError, did_you_mean
from mtlkit.utils.frozen import FrozenDict, freeze

#: the key that selects the plugin of a component section
SELECTOR = "name"
#: the other key a dataset section may select its plugin with
DATASET_SELECTOR_ALIAS = "type"
#: every key that selects a plugin (see :func:`selected`)
SELECTOR_KEYS = ("type", "name")

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a mapping"}


# -- types -------------------------------------------------------------------------
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
) -> Dict[str, Any]:
    """Check ``options`` against a defaults dict (recursing into dict defaults
    that list their keys; an empty dict default accepts any mapping). Returns
    a copy with the numbers the rule coerces (``1e3`` for an int: 1000)."""
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {_describe(options)}")
    out = dict(options)
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
        value = out[key] = _coerce_number(value, expected)
        _check_finite(value, path)
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
            out[key] = check_options(value, default, path, sub_choices)
    return out


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


def check_lengths(section: Optional[Mapping[str, Any]], lengths: Mapping[str, int], where: str) -> None:
    """Check that the lists of ``section`` at the dotted paths of ``lengths``
    have that many elements (missing / None values are skipped)."""
    for path, n in lengths.items():
        value = get(section or {}, path)
        if isinstance(value, (list, tuple)) and len(value) != n:
            raise ConfigError(f"{where}.{path}: expected a list of {n} values, got {list(value)!r}")


def _check_finite(value: Any, path: str) -> None:
    """NaN and infinite numbers are no setting (``lr: .inf``, ``weights: [.nan, 1]``):
    refused, in a list element by element."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: expected a number, got NaN" if math.isnan(value) else
                          f"{path}: expected a finite number, got {value}")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{path}[{i}]")


def _coerce_number(value: Any, expected: Optional[type]) -> Any:
    """A float written for an int field as ``1e3`` (integral) -> int; else unchanged."""
    if expected is int and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, Mapping) else "a mapping"


# -- merging -------------------------------------------------------------------------
def merge(base: Mapping[str, Any], top: Mapping[str, Any], switch_plugins: bool = False) -> Dict[str, Any]:
    """The one recursive merge: dicts merge key by key, anything else in
    ``top`` replaces (``None`` too). Returns new dicts (values deep-copied).

    ``switch_plugins`` (``_base_`` inheritance): a dict of ``top`` that
    selects another plugin than the base's (its ``type`` or ``name``
    differs, e.g. ``data.train: {type: coco, ...}`` over a synthetic base)
    replaces the base's dict: the base's options belong to the other plugin."""
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) \
                and not (switch_plugins and _switches_plugin(out[key], value)):
            out[key] = merge(out[key], value, switch_plugins)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _switches_plugin(base: Mapping[str, Any], top: Mapping[str, Any]) -> bool:
    """Whether ``top`` selects another plugin than ``base`` (by ``name`` or a
    dataset's ``type``, whichever each writes: :data:`SELECTOR_KEYS`)."""
    _, top_name = selected(top)
    _, base_name = selected(base)
    return top_name is not None and base_name is not None and top_name != base_name


def _without_none(options: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: (_without_none(v) if isinstance(v, Mapping) else v)
            for k, v in options.items() if v is not None}


def with_defaults(defaults: Mapping[str, Any], options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``options`` merged over ``defaults`` (nested dicts key by key); a
    ``None`` value keeps the default (the type rule's "not set")."""
    return merge(defaults, _without_none(options or {}))


# -- schemas -------------------------------------------------------------------------
class Options(FrozenDict):
    """Options checked by the one rule and merged over their defaults:
    read-only (nested values too). :meth:`Schema.complete` makes them; a
    component or builder given an ``Options`` takes it as it is."""

    __slots__ = ()


@dataclass(frozen=True)
class Schema:
    """What a set of options is checked and completed against (see the module docstring)."""

    defaults: Mapping[str, Any]
    choices: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    ranges: Mapping[str, str] = field(default_factory=dict)
    lengths: Mapping[str, int] = field(default_factory=dict)
    #: ``check(options, where)``, given the options merged over the defaults:
    #: what the other facets cannot say (raises :class:`ConfigError`)
    check: Optional[Callable[[Mapping[str, Any], str], None]] = None

    @classmethod
    def of(cls, component: Any, extra_defaults: Optional[Mapping[str, Any]] = None,
           extra_ranges: Optional[Mapping[str, str]] = None) -> "Schema":
        """The schema a plugin class declares with its attributes ``defaults``,
        ``choices``, ``ranges``, ``lengths`` and class method
        ``check_options(options, where)``; ``extra_*`` are the options every
        component of its kind accepts (a task's ``weight``...)."""
        return cls(defaults={**(extra_defaults or {}), **(getattr(component, "defaults", None) or {})},
                   choices=dict(getattr(component, "choices", None) or {}),
                   ranges={**(extra_ranges or {}), **(getattr(component, "ranges", None) or {})},
                   lengths=dict(getattr(component, "lengths", None) or {}),
                   check=getattr(component, "check_options", None))

    def validate(self, options: Mapping[str, Any], where: str) -> Dict[str, Any]:
        """``options`` checked (a copy, numbers coerced), or :class:`ConfigError`."""
        checked = check_options(options, self.defaults, where, self.choices)
        check_ranges(checked, self.ranges, where)
        check_lengths(checked, self.lengths, where)
        if self.check is not None:
            self.check(with_defaults(self.defaults, checked), where)
        return checked

    def complete(self, options: Optional[Mapping[str, Any]]) -> Options:
        """Checked ``options`` merged over the defaults, read-only."""
        return Options(freeze(with_defaults(self.defaults, options)))

    def options(self, options: Optional[Mapping[str, Any]], where: str) -> Options:
        """:meth:`validate` then :meth:`complete`; ``Options`` are returned as they are."""
        if isinstance(options, Options):
            return options
        return self.complete(self.validate(options or {}, where))


def component_options(component: Any, options: Optional[Mapping[str, Any]], where: str,
                      extra_defaults: Optional[Mapping[str, Any]] = None,
                      extra_ranges: Optional[Mapping[str, str]] = None) -> Options:
    """The options of a component class (a fusion, weighting, backbone, task,
    dataset, the ROCK block...) checked against what it declares
    (:meth:`Schema.of`) and merged over its defaults: what a component made
    by hand runs once, in its constructor. :class:`Options` (from a resolved
    config) are returned as they are."""
    return Schema.of(component, extra_defaults, extra_ranges).options(options, where)


# -- selecting a plugin ----------------------------------------------------------------
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


def flatten(tree: Any, sep: str = ".", prefix: str = "") -> Dict[str, Any]:
    """The one flattener: nested mappings -> ``{"a.b.c": leaf}`` (``sep`` joins
    the keys). Lists and tuples are leaves, as lists (their tuples too); an
    empty mapping below the top is a leaf ``{}``."""
    if isinstance(tree, Mapping):
        out: Dict[str, Any] = {}
        if not tree and prefix:
            out[prefix] = {}
        for key, value in tree.items():
            out.update(flatten(value, sep, f"{prefix}{sep}{key}" if prefix else str(key)))
        return out
    if isinstance(tree, (list, tuple)):
        tree = [list(v) if isinstance(v, tuple) else v for v in tree]
    return {prefix: tree}


def get(cfg: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """``get(cfg, "train.optimizer.lr")`` with a default for missing keys."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node
