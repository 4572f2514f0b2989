"""Target data as test-time adaptation sees it: images and what the sensor
measured with them, no annotation."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from torch import nn

from mtlkit.errors import DataError
from mtlkit.task import SENSOR_PREFIX, sensor_view


def sensor_tasks(model: nn.Module) -> List[str]:
    """The auxiliary tasks of ``model`` whose labels a sensor measures with the
    image (:attr:`mtlkit.task.Task.sensor`: depth, normals), in model order."""
    primary = getattr(model, "primary", None)
    return [name for name, task in getattr(model, "tasks", {}).items()
            if name != primary and getattr(task, "sensor", False)]


def unlabelled(batch: Mapping[str, Any], tasks: Sequence[str], model: nn.Module) -> Dict[str, Any]:
    """``batch`` without annotations: the image, ``meta``, and only the maps
    (and ``has`` flags) of the sensor ``tasks``; boxes, labels, scene classes
    and every other task's label are gone, so no loss can read them.

    When the batch carries a sensor's measurement of those maps
    (``sensor_depth``...: :data:`mtlkit.task.SENSOR_PREFIX`, e.g. the
    synthetic rooms' ``sensor: kinect``), the measurement takes the labels'
    place (:func:`mtlkit.task.sensor_view`): what the sensor gives, holes and
    noise included, not the clean maps."""
    keys = [key for name in tasks for key in model.tasks[name].batch_keys]
    source = sensor_view(batch, keys) if any(SENSOR_PREFIX + key in batch for key in keys) else batch
    out = {k: v for k, v in source.items() if k in keys}
    out.update({k: batch[k] for k in ("image", "meta") if k in batch})
    has = source.get("has") or {}
    out["has"] = {name: has[name] for name in tasks if name in has}
    return out


def check_sensor_data(model: nn.Module, tasks: Sequence[str], batch: Mapping[str, Any], where: str) -> None:
    """Refuse a target whose first batch carries none of the sensor ``tasks``'
    labels (an RGB-only set: nothing to adapt with), naming what is missing.

    :raises DataError: one line."""
    size = int(batch["image"].shape[0])
    missing = []
    for name in tasks:
        task = model.tasks[name]
        key = task.batch_keys[0] if task.batch_keys else name
        try:
            present = batch.get(key) is not None and bool(task.sample_mask(batch, size).any())
        except DataError:
            present = False
        if not present:
            missing.append(name)
    if missing:
        raise DataError(f"{where}: the target carries no {' and no '.join(missing)} (none of its first {size} "
                        f"images has it): adaptation through the auxiliary tasks needs what the sensor "
                        f"measures with each image; use --method adabn or tent, or a target with "
                        f"{', '.join(missing)}")
