"""The YAML reader of every file a user writes (configs, ``-o`` override
values): the one home of how mtlkit reads YAML.

:func:`yaml_load` is ``yaml.safe_load`` with the rules of :class:`_Loader`
(numbers as YAML 1.2 and JSON read them, a key given twice refused) and a
bound on what a document may expand to (:data:`MAX_VALUES` values,
:data:`MAX_DEPTH` levels: an alias bomb or a nesting thousands deep is one
error, not a hang or a ``RecursionError``); :func:`read_yaml` reads one file
as a mapping and turns every problem into one
:class:`~mtlkit.errors.ConfigError` line naming the file. Files mtlkit
writes itself (``config.yaml``, a checkpoint's config text) are written with
``yaml.safe_dump`` and read back with it.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Tuple, Union

import yaml

from mtlkit.errors import ConfigError
from mtlkit.utils.paths import kind_of, not_a_file

PathLike = Union[str, "os.PathLike[str]"]


#: the most values (scalars, lists, mappings; an alias counted each time it is
#: used) and nesting levels a document may expand to: a config holds hundreds
MAX_VALUES = 100_000
MAX_DEPTH = 64


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` reading numbers as YAML 1.2 and JSON do, and
    refusing a key given twice in one mapping (PyYAML keeps the last, silently).

    Numbers: ``1e-3`` / ``5E4`` / ``+1e-3`` are numbers (YAML 1.1 wants a dot
    and a sign in the exponent, ``1.0e-3``: every user means the number); the
    YAML 1.1 forms no one writes in a config on purpose stay text, so that
    the field's type check names them: ``1:30`` (base 60: 90), ``0x10``
    (hex), ``017`` (octal: 15), ``0b101`` (binary)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: Dict[Any, Any] = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:
                        continue  # an unhashable key: construct_mapping says so
                    if first is not key_node:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"the key {key!r} is given twice in one mapping (first at line "
                            f"{first.start_mark.line + 1}): YAML keeps only the last", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NUMBER_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
                    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


class DocumentTooLarge(ValueError):
    """A document that expands beyond :data:`MAX_VALUES` values or :data:`MAX_DEPTH` levels."""


def _check_size(data: Any) -> None:
    """Count what ``data`` expands to, each shared (aliased) object once per
    use, in time linear in the distinct objects (an alias bomb's count is
    exponential: it is computed, not walked)."""
    sizes: Dict[int, Tuple[int, int]] = {}  # id -> (values, depth)
    open_ids = set()

    def measure(value: Any) -> Tuple[int, int]:
        if not isinstance(value, (dict, list)):
            return 1, 0
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            raise DocumentTooLarge("an alias refers to a mapping or list that contains it (endless)")
        open_ids.add(key)
        children = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
        total, depth = 1, 0
        for child in children:
            n, d = measure(child)
            total, depth = total + n, max(depth, d + 1)
            if total > MAX_VALUES:
                raise DocumentTooLarge(f"it expands to more than {MAX_VALUES:,} values (aliases of aliases?)")
            if depth > MAX_DEPTH:
                raise DocumentTooLarge(f"it is nested more than {MAX_DEPTH} levels deep")
        open_ids.discard(key)
        sizes[key] = (total, depth)
        return total, depth

    measure(data)


def yaml_load(text: Any) -> Any:
    """``yaml.safe_load`` with the rules of :class:`_Loader`; raises
    :class:`DocumentTooLarge` for a document beyond the bounds (see the module docstring)."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:  # the composer recurses once per level
        raise DocumentTooLarge(f"it is nested more than {MAX_DEPTH} levels deep") from None
    _check_size(data)
    return data


def read_yaml(path: PathLike) -> Dict[str, Any]:
    """Read one YAML mapping (safe loader); clear errors otherwise."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a directory, expected a config YAML file")
    reason = not_a_file(path, "a config YAML file")  # a pipe would block the read
    if reason is not None:
        raise ConfigError(f"config file not found: {path}" if kind_of(path) == "missing" else reason)
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
    except DocumentTooLarge as exc:
        raise ConfigError(f"{path}: not a config: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data
