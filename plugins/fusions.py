"""Built-in fusions (registered through the `mtlkit` entry point 'fusions')."""

from mtlkit import hookimpl


@hookimpl
def mtlkit_register_fusions(registry):
    """Register the built-in fusions (none yet: a name appears when it is implemented)."""
