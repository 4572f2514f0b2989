"""Registers the built-in detection task (SSD, the primary task; written in
:mod:`mtlkit.models.ssd.task`) through the ``mtlkit`` entry point 'detection'."""

from mtlkit import hookimpl
from mtlkit.models.ssd.task import DetectionTask, LabelError  # noqa: F401 - also imported from here


@hookimpl
def mtlkit_register_tasks(registry):
    """Register the built-in detection task."""
    registry.add("detection", DetectionTask)
