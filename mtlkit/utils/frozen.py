"""Read-only dicts and lists: what the resolved config and checked options are made of.

:class:`FrozenDict` and :class:`FrozenList` subclass ``dict`` and ``list``,
so everything that reads them (``isinstance``, equality, ``json``, ``**``
unpacking) sees plain containers; every method that would change them
raises ``TypeError``. ``copy.deepcopy`` of one gives a plain, editable copy
(:func:`thaw`): the way to derive a new config from a resolved one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, List, NoReturn


def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(f"{type(self).__name__} is read-only: make an editable copy with "
                    "copy.deepcopy() (or mtlkit.utils.frozen.thaw) and change that")


class FrozenDict(dict):
    """A ``dict`` that cannot be changed (its values are frozen too, see :func:`freeze`)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __deepcopy__(self, memo: Dict[int, Any]) -> Dict[str, Any]:
        return thaw(self)

    def __copy__(self) -> Dict[str, Any]:
        return dict(self)

    def __reduce__(self):
        return type(self), (dict(self),)


class FrozenList(list):
    """A ``list`` that cannot be changed."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = clear = extend = insert = pop = remove = reverse = sort = _read_only

    def __deepcopy__(self, memo: Dict[int, Any]) -> List[Any]:
        return thaw(self)

    def __copy__(self) -> List[Any]:
        return list(self)

    def __reduce__(self):
        return type(self), (list(self),)


def freeze(value: Any) -> Any:
    """A read-only copy: mappings -> :class:`FrozenDict`, lists and tuples ->
    :class:`FrozenList` (tuples stay tuples), recursively; other values as they are."""
    if isinstance(value, Mapping):
        return FrozenDict((k, freeze(v)) for k, v in value.items())
    if isinstance(value, tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, list):
        return FrozenList(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, editable deep copy: mappings -> dict, lists -> list (tuples stay tuples)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(thaw(v) for v in value)
    if isinstance(value, list):
        return [thaw(v) for v in value]
    return value
