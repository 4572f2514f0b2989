"""Built-in auxiliary tasks (registered through the `mtlkit` entry point 'auxiliary_tasks')."""

from mtlkit import hookimpl


@hookimpl
def mtlkit_register_tasks(registry):
    """Register the built-in auxiliary tasks (none yet: a name appears when it is implemented)."""
