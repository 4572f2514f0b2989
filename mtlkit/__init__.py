"""mtlkit: multi-task learning for visual detection (ROCK, SSD) with plugins.

The package's face: ``hookimpl`` (for plugins), the errors a user can
cause, and :func:`build_model`. ``import mtlkit`` stays light: the model
stack is imported when :func:`build_model` is first called, so that
importing one module of the package (the data package, say) does not import
the config loader and the models.
"""

from mtlkit.errors import ConfigError, DataError, MtlkitError
from mtlkit.hookspecs import hookimpl
from mtlkit.version import __version__

__all__ = ["__version__", "hookimpl", "MtlkitError", "ConfigError", "DataError", "build_model"]


def build_model(cfg, image_size=None):
    """Build a multi-task model from the resolved config, or a config path or
    dict (see :func:`mtlkit.models.compose.build_model` for the arguments). Its
    ``model(images)`` checks the images first (:mod:`mtlkit.models.inputs`:
    a clear error for a uint8, NaN, HWC or 4-channel batch)."""
    from mtlkit.models.compose import build_model as _build  # lazy: the package face stays light (see above)

    return _build(cfg, image_size=image_size)
