"""The YAML reader of every file a user writes (configs, ``-o`` override
values): the one home of how mtlkit reads YAML.

:func:`yaml_load` is ``yaml.safe_load`` with one rule added (the numbers
rule of :class:`_Loader`); :func:`read_yaml` reads one file as a mapping and
turns every problem into one :class:`~mtlkit.errors.ConfigError` line naming
the file. Files mtlkit writes itself (``config.yaml``, a checkpoint's config
text) are written with ``yaml.safe_dump`` and read back with it.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Union

import yaml

from mtlkit.errors import ConfigError

PathLike = Union[str, "os.PathLike[str]"]


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
