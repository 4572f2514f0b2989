"""Datasets, transforms and collation for mtlkit (see docs/architecture.md, "Samples and batches").

* :func:`build_dataset` — a dataset from a config dict with ``name`` or
  ``type`` (a dataset plugin: ``synthetic``, ``nyuv2``, ``coco``, ``concat``, ...).
* :func:`build_split` — the dataset of ``data.<split>`` with the transforms of
  ``data.augment`` / ``data.image_size`` applied (augmented when training).
* :func:`collate` — samples -> batch; :func:`build_loader` — a DataLoader.
* :mod:`mtlkit.data.transforms` — augmentation keeping modalities consistent.
"""

from __future__ import annotations

from mtlkit.data.builders import build_dataset, build_split
from mtlkit.data.coco import COCODetection
from mtlkit.data.collate import collate
from mtlkit.data.concat import ConcatDataset
from mtlkit.data.dataset import TransformedDataset, build_loader
from mtlkit.data.nyuv2 import NYUv2, prepare_nyuv2
from mtlkit.data.options import validate_options
from mtlkit.data.transforms import AUGMENT_DEFAULTS, build_transforms

__all__ = [
    "build_dataset",
    "build_split",
    "collate",
    "build_loader",
    "build_transforms",
    "TransformedDataset",
    "AUGMENT_DEFAULTS",
    "validate_options",
    "NYUv2",
    "prepare_nyuv2",
    "COCODetection",
    "ConcatDataset",
]
