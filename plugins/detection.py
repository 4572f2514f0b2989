"""Built-in detection task (registered through the `mtlkit` entry point 'detection')."""

from mtlkit import hookimpl


@hookimpl
def mtlkit_register_tasks(registry):
    """Register the built-in detection task (none yet: a name appears when it is implemented)."""
