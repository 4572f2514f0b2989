"""Built-in datasets (registered through the `mtlkit` entry point 'datasets')."""

from mtlkit import hookimpl


@hookimpl
def mtlkit_register_datasets(registry):
    """Register the built-in datasets (none yet: a name appears when it is implemented)."""
