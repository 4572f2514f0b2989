"""Samples on disk: one compressed ``.npz`` per sample (written atomically),
plus a ``dataset.json`` describing a set written by ``mtlkit data synth``.

Layout of a written set::

    DIR/dataset.json          format, version, classes, scenes, config, count
    DIR/samples/000000.npz    arrays of generate.generate_sample (with a sensor: its sensor_* arrays too)
    DIR/preview.png           a grid of some samples (image + boxes, depth, normals)
    DIR/pack/KEY.npy          optional (:func:`write_pack`): every sample's array KEY
                              stacked into one uncompressed file (ragged boxes / labels /
                              box_instance concatenated, with ``offsets.npy``), read
                              memory-mapped so parallel readers share one copy
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Dict

import numpy as np

from mtlkit.errors import DataError
from mtlkit.utils.io import atomic_write

FORMAT = "mtlkit-synthetic"
FORMAT_VERSION = 1

#: key -> (dtype, number of dimensions) of a stored sample
SCHEMA = {
    "image": (np.uint8, 3),
    "depth": (np.float32, 2),
    "depth_mask": (np.bool_, 2),
    "normals": (np.float32, 3),
    "normals_mask": (np.bool_, 2),
    "boxes": (np.float32, 2),
    "labels": (np.int64, 1),
    "scene": (np.int64, 0),
    "instances": (np.uint8, 2),
    "box_instance": (np.int64, 1),
}
#: keys a sample may have (a simulated sensor's, :mod:`.sensor`): saved, checked and packed when present
OPTIONAL_SCHEMA = {
    "sensor_depth": (np.float32, 2),
    "sensor_depth_mask": (np.bool_, 2),
    "sensor_normals": (np.float32, 3),
    "sensor_normals_mask": (np.bool_, 2),
}


def sample_path(root: str, index: int) -> str:
    return os.path.join(root, "samples", f"{index:06d}.npz")


def save_sample(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """Write one sample as a compressed npz, atomically."""
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **{k: arrays[k] for k in (*SCHEMA, *OPTIONAL_SCHEMA) if k in arrays})


def load_sample(path: str) -> Dict[str, np.ndarray]:
    """Read one sample, checking keys, dtypes and ranks; :class:`DataError` otherwise."""
    if not os.path.exists(path):
        raise DataError(f"synthetic sample file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"synthetic sample file {path} is not a readable npz: {exc}") from None
    for key, (dtype, ndim) in {**SCHEMA, **OPTIONAL_SCHEMA}.items():
        if key not in arrays:
            if key in OPTIONAL_SCHEMA:
                continue
            raise DataError(f"synthetic sample file {path} has no array '{key}'")
        a = arrays[key]
        if a.dtype != dtype or a.ndim != ndim:
            raise DataError(f"synthetic sample file {path}: '{key}' should be {np.dtype(dtype).name} "
                            f"with {ndim} dimensions, got {a.dtype.name} with shape {a.shape}")
    h, w = arrays["image"].shape[:2]
    for key in ("depth", "depth_mask", "normals_mask", "instances", "sensor_depth", "sensor_depth_mask",
                "sensor_normals_mask"):
        if key in arrays and arrays[key].shape != (h, w):
            raise DataError(f"synthetic sample file {path}: '{key}' has shape {arrays[key].shape}, "
                            f"expected {(h, w)} like the image")
    if arrays["normals"].shape != (3, h, w) or arrays["image"].shape[2] != 3 or \
            arrays.get("sensor_normals", arrays["normals"]).shape != (3, h, w):
        raise DataError(f"synthetic sample file {path}: image / normals / sensor_normals should be "
                        "(H, W, 3) / (3, H, W) / (3, H, W)")
    if arrays["boxes"].shape != (len(arrays["labels"]), 4):
        raise DataError(f"synthetic sample file {path}: boxes {arrays['boxes'].shape} do not match "
                        f"labels {arrays['labels'].shape}")
    return arrays


def write_json(path: str, payload: dict) -> None:
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")


def read_dataset_json(root: str, require_complete: bool = True) -> dict:
    """The ``dataset.json`` of a written set, validated (an unfinished set is
    refused unless ``require_complete`` is False)."""
    path = os.path.join(root, "dataset.json")
    if not os.path.isdir(root):
        raise DataError(f"synthetic root {root} is not a folder")
    if not os.path.exists(path):
        raise DataError(f"{path} not found: 'root' must be a folder written by 'mtlkit data synth'")
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: 'format' should be '{FORMAT}'")
    if meta.get("version") != FORMAT_VERSION:
        raise DataError(f"{path}: format version {meta.get('version')!r} is not supported "
                        f"(this mtlkit reads version {FORMAT_VERSION})")
    for key in ("classes", "scenes", "config", "count"):
        if key not in meta:
            raise DataError(f"{path} has no '{key}' entry")
    if require_complete and meta.get("complete") is False:
        raise DataError(f"{root} is an unfinished set: rerun the 'mtlkit data synth' command that wrote it")
    return meta


PACK_DIR = "pack"
#: the keys stacked per sample (same shape for every sample of a set)
_STACKED = ("image", "depth", "depth_mask", "normals", "normals_mask", "scene", "instances")
#: the ragged keys (first dimension = boxes of the sample)
_RAGGED = ("boxes", "labels", "box_instance")


def write_pack(root: str, count: int) -> str:
    """Stack the ``count`` samples of ``root`` into ``root/pack/`` (one .npy per
    key, written atomically; ``pack/count.json`` last, so a pack without it is
    unfinished and ignored). Returns the pack folder."""
    folder = os.path.join(root, PACK_DIR)
    os.makedirs(folder, exist_ok=True)
    first = load_sample(sample_path(root, 0)) if count else None
    keys = _STACKED + tuple(k for k in OPTIONAL_SCHEMA if count and k in first)
    stacked = {k: np.empty((count,) + first[k].shape, first[k].dtype) for k in keys} if count else {}
    ragged: Dict[str, list] = {k: [] for k in _RAGGED}
    offsets = np.zeros(count + 1, np.int64)
    for i in range(count):
        arrays = first if i == 0 else load_sample(sample_path(root, i))
        for key in keys:
            if key not in arrays or arrays[key].shape != stacked[key].shape[1:]:
                raise DataError(f"{sample_path(root, i)}: '{key}' has shape "
                                f"{arrays[key].shape if key in arrays else None}, "
                                f"other samples of the set {stacked[key].shape[1:]}")
            stacked[key][i] = arrays[key]
        for key in _RAGGED:
            ragged[key].append(arrays[key])
        offsets[i + 1] = offsets[i] + len(arrays["labels"])
    for key in _RAGGED:
        dtype, ndim = SCHEMA[key]
        empty = np.zeros((0,) + (4,) * (ndim - 1), dtype)
        stacked[key] = np.concatenate(ragged[key]) if ragged[key] else empty
    stacked["offsets"] = offsets
    for key, value in stacked.items():
        with atomic_write(os.path.join(folder, f"{key}.npy"), "wb") as handle:
            np.save(handle, value)
    write_json(os.path.join(folder, "count.json"), {"count": int(count)})
    return folder


class Pack:
    """The arrays of ``root/pack/`` (memory-mapped); :meth:`sample` gives the
    same dict as :func:`load_sample` (copies, writable)."""

    def __init__(self, root: str):
        folder = os.path.join(root, PACK_DIR)
        with open(os.path.join(folder, "count.json"), encoding="utf-8") as handle:
            self.count = int(json.load(handle)["count"])
        optional = tuple(k for k in OPTIONAL_SCHEMA if os.path.isfile(os.path.join(folder, f"{k}.npy")))
        self.stacked = _STACKED + optional
        keys = self.stacked + _RAGGED + ("offsets",)
        try:
            self.arrays = {k: np.load(os.path.join(folder, f"{k}.npy"), mmap_mode="r") for k in keys}
        except (OSError, ValueError) as exc:
            raise DataError(f"{folder}: unreadable pack ({exc}); delete the folder to read the samples") from None
        if len(self.arrays["offsets"]) != self.count + 1:
            raise DataError(f"{folder}: offsets.npy does not match count.json; delete the folder")

    @staticmethod
    def exists(root: str) -> bool:
        return os.path.isfile(os.path.join(root, PACK_DIR, "count.json"))

    def sample(self, index: int) -> Dict[str, np.ndarray]:
        a = self.arrays
        start, stop = int(a["offsets"][index]), int(a["offsets"][index + 1])
        out = {k: np.array(a[k][index]) for k in self.stacked}
        out.update({k: np.array(a[k][start:stop]) for k in _RAGGED})
        return out
