"""mtlkit: multi-task learning for visual detection (ROCK, SSD) with plugins."""

import pluggy

__version__ = "0.1.0"

#: Marker for hook implementations in plugins (see :mod:`mtlkit.hookspecs`).
hookimpl = pluggy.HookimplMarker("mtlkit")

from mtlkit.errors import ConfigError, DataError, MtlkitError  # noqa: E402

__all__ = ["__version__", "hookimpl", "MtlkitError", "ConfigError", "DataError", "build_model"]


def build_model(cfg, image_size=None, validated: bool = False):
    """Build a multi-task model from a config path or dict (see
    :func:`mtlkit.models.compose.build_model` for the arguments). Its
    ``model(images)`` checks the images first (:mod:`mtlkit.models.inputs`:
    a clear error for a uint8, NaN, HWC or 4-channel batch)."""
    from mtlkit.models import inputs
    from mtlkit.models.compose import build_model as _build

    return inputs.install(_build(cfg, image_size=image_size, validated=validated))
