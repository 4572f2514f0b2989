"""mtlkit: multi-task learning for visual detection (ROCK, SSD) with plugins."""

import pluggy

__version__ = "0.1.0"

#: Marker for hook implementations in plugins (see :mod:`mtlkit.hookspecs`).
hookimpl = pluggy.HookimplMarker("mtlkit")

from mtlkit.errors import ConfigError, DataError, MtlkitError  # noqa: E402

__all__ = ["__version__", "hookimpl", "MtlkitError", "ConfigError", "DataError", "build_model"]


def build_model(cfg):
    """Build a multi-task model from a config path or dict (see :mod:`mtlkit.models.compose`)."""
    from mtlkit.models.compose import build_model as _build

    return _build(cfg)
