"""Built-in tasks (registered through the `mtlkit` entry point 'tasks')."""

from mtlkit import hookimpl


@hookimpl
def mtlkit_register_tasks(registry):
    """Register the built-in tasks (none yet: a name appears when it is implemented)."""
