"""``validate_options``, at its old place: the one option rule lives in
:mod:`mtlkit.options` (the data builders check plain dicts with the config's
own rule, :mod:`mtlkit.resolved`)."""

from __future__ import annotations

from typing import Any, Mapping

from mtlkit.options import Options, Schema


def validate_options(options: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> Options:
    """``options`` checked against ``defaults`` by the one rule and merged
    over them (a ``None`` value keeps the default).

    :param where: how the error names the section, e.g. ``"data.train"``.
    :raises ConfigError: on an unknown option or a value of the wrong type.
    """
    return Schema(defaults).options(options, where)
