"""Registers the built-in auxiliary tasks (scene, depth, normals; written in
:mod:`mtlkit.models.auxiliary_tasks`) through the ``mtlkit`` entry point
'auxiliary_tasks'."""

from mtlkit import hookimpl
from mtlkit.models.auxiliary_tasks import (  # noqa: F401 - also imported from here
    DepthTask,
    NormalsTask,
    SceneTask,
    berhu,
    normals_loss,
)


@hookimpl
def mtlkit_register_tasks(registry):
    """Register the built-in auxiliary tasks: scene, depth, normals."""
    registry.add("scene", SceneTask)
    registry.add("depth", DepthTask)
    registry.add("normals", NormalsTask)
