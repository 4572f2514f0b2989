"""Validation of a component's options against its ``defaults`` (docs/architecture.md).

The rule is the project-wide one: unknown options are refused with a
did-you-mean; a value whose type differs from the default's is refused
(``int`` is accepted for ``float``; a ``None`` default accepts anything; a
``list``/``tuple`` default accepts either). A ``None`` value means "not set"
and keeps the default (as in :mod:`mtlkit.config`; the rule itself is :mod:`mtlkit.options`).

Used by the data builders for callers that pass options not validated by
:func:`mtlkit.config.validate_config` (a config validated there is built as
it is: ``validated=True``).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from mtlkit.options import expected_type, type_ok
from mtlkit.errors import ConfigError
from mtlkit.registry import did_you_mean


def _type_ok(value: Any, default: Any) -> bool:
    return type_ok(value, expected_type(default))


def _type_name(default: Any) -> str:
    if isinstance(default, (list, tuple)):
        return "a list"
    if isinstance(default, float):
        return "a number"
    return f"a {type(default).__name__}"


def validate_options(options: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """Return ``defaults`` updated with ``options`` after checking them.

    :param where: how the error names the section, e.g. ``"data.train (dataset 'nyuv2')"``.
    :raises ConfigError: on an unknown option or a value of the wrong type.
    """
    merged = dict(defaults)
    for key, value in options.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(
                f"{where}: unknown option '{key}'{did_you_mean(key, defaults)}; known options: {known}"
            )
        if value is None:
            continue
        if not _type_ok(value, defaults[key]):
            raise ConfigError(
                f"{where}: option '{key}' must be {_type_name(defaults[key])} "
                f"(like its default {defaults[key]!r}), got {value!r}"
            )
        merged[key] = value
    return merged
