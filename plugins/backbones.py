"""Built-in backbones (registered through the `mtlkit` entry point 'backbones')."""

from mtlkit import hookimpl


@hookimpl
def mtlkit_register_backbones(registry):
    """Register the built-in backbones (none yet: a name appears when it is implemented)."""
