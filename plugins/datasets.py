"""Registers the built-in datasets (written in :mod:`mtlkit.data`) through the
``mtlkit`` entry point 'datasets'.

* ``synthetic`` — procedurally rendered rooms (:mod:`mtlkit.data.synthetic`);
* ``nyuv2`` — NYU Depth v2 from the cache of ``mtlkit data nyuv2``;
* ``coco`` — a COCO detection JSON with optional depth / normal folders;
* ``concat`` — several datasets mixed with sampling weights.
"""

import warnings

from mtlkit import hookimpl
from mtlkit.data.coco import COCODetection
from mtlkit.data.concat import ConcatDataset
from mtlkit.data.nyuv2 import NYUv2


@hookimpl
def mtlkit_register_datasets(registry):
    """Register the built-in datasets.

    The synthetic renderer is imported under a guard: if it cannot be
    imported (its renderer's dependencies trimesh and embreex are missing or
    broken on this platform), the other datasets still register and a
    warning says why ``synthetic`` is absent.
    """
    registry.add("nyuv2", NYUv2)
    registry.add("coco", COCODetection)
    registry.add("concat", ConcatDataset)
    try:
        from mtlkit.data.synthetic import SyntheticRooms  # optional: trimesh + embreex (the renderer)
    except Exception as exc:  # noqa: BLE001 - keep the other datasets available
        warnings.warn(f"mtlkit: dataset 'synthetic' unavailable: {type(exc).__name__}: {exc}",
                      RuntimeWarning, stacklevel=2)
    else:
        registry.add("synthetic", SyntheticRooms)
