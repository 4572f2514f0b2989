"""Hook implementations: what mtlkit calls when it loads this plugin."""

from mtlkit import hookimpl

from mtlkit_contours.task import CentresTask


@hookimpl
def mtlkit_register_tasks(registry):
    """Register the ``centres`` auxiliary task."""
    registry.add("centres", CentresTask)
