"""Built-in weightings (registered through the `mtlkit` entry point 'weightings')."""

from mtlkit import hookimpl


@hookimpl
def mtlkit_register_weightings(registry):
    """Register the built-in weightings (none yet: a name appears when it is implemented)."""
