"""COCO detection format: parse it into compact arrays, and produce it from mtlkit data.

Parsing (:func:`load_ground_truth`, :func:`load_detections`) turns the COCO
dicts (or JSON files) into :class:`GroundTruth` / :class:`CocoResults`, plain
numpy arrays that :mod:`mtlkit.metrics.coco_eval` works on. The same classes
can be built straight from arrays (``from_arrays``), which is how the
detection accumulator avoids a round trip through dicts.

Production (:func:`to_coco_detections`, :func:`to_coco_gt`) writes the COCO
format from mtlkit predictions (xyxy pixels) and dataset samples.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from mtlkit.errors import DataError

PathLike = Union[str, "os.PathLike[str]"]


def _load_json(path: PathLike, what: str) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{what} file '{os.fspath(path)}' does not exist") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{what} file '{os.fspath(path)}' is not valid JSON: {exc}") from None


def _field(records: Sequence[Mapping[str, Any]], key: str, what: str, default: Any = None) -> list:
    """``[r[key] for r in records]``; a missing key raises DataError naming the record
    (or gives ``default`` when one is provided)."""
    try:
        if default is None:
            return [r[key] for r in records]
        return [r.get(key, default) for r in records]
    except KeyError:
        for i, r in enumerate(records):
            if key not in r:
                raise DataError(f"{what} {i} has no '{key}' field") from None
        raise
    except (TypeError, AttributeError):
        for i, r in enumerate(records):
            if not isinstance(r, Mapping):
                raise DataError(f"{what} {i} must be a dict, got {type(r).__name__}") from None
        raise


def _ids(values: list, what: str, key: str) -> list:
    """COCO ids are integers: a string (``"000123"``), float or bool id is refused naming the record."""
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise DataError(f"{what} {i}: '{key}' must be an integer id, got {type(v).__name__} {v!r}")
    return values


def _boxes(values: list, what: str) -> np.ndarray:
    """(N, 4) float64 array of COCO [x, y, w, h] boxes, finite."""
    if not values:
        return np.zeros((0, 4), dtype=np.float64)
    boxes = None
    try:
        if set(map(len, values)) == {4}:  # fast path: flat iteration, much cheaper than asarray
            boxes = np.fromiter(itertools.chain.from_iterable(values), np.float64, 4 * len(values))
            boxes = boxes.reshape(-1, 4)
        else:
            boxes = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        boxes = None
    if boxes is None or boxes.ndim != 2 or boxes.shape[1] != 4:
        for i, v in enumerate(values):
            if not isinstance(v, (list, tuple, np.ndarray)) or len(v) != 4:
                raise DataError(f"{what} {i}: 'bbox' must be 4 numbers [x, y, w, h], got {v!r}")
        raise DataError(f"{what}: every 'bbox' must be 4 numbers [x, y, w, h]")
    bad = ~np.isfinite(boxes).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{what} {i}: 'bbox' must be finite, got {values[i]!r}")
    return boxes


def _floats(values: list, what: str, key: str) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=np.float64).reshape(len(values))
    except (TypeError, ValueError):
        raise DataError(f"{what}: every '{key}' must be a number") from None
    bad = ~np.isfinite(out)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{what} {i}: '{key}' must be finite, got {values[i]!r}")
    return out


def _index_of(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Position of every entry of ``ids`` in the sorted unique ``table``, -1 when absent."""
    if len(table) == 0 or len(ids) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.searchsorted(table, ids)
    pos_c = np.minimum(pos, len(table) - 1)
    found = table[pos_c] == ids
    return np.where(found, pos_c, -1).astype(np.int64)


@dataclass
class GroundTruth:
    """Ground truth of a COCO detection set as arrays.

    Attributes:
        image_ids: (I,) sorted unique image ids (every image of the set, with or without boxes).
        cat_ids: (K,) sorted unique category ids (every category of the set).
        image: (N,) int64 index into ``image_ids`` of each annotation.
        category: (N,) int64 index into ``cat_ids``.
        boxes: (N, 4) float64 COCO [x, y, w, h].
        area: (N,) float64 the annotation's ``area`` (used for the area ranges).
        iscrowd: (N,) bool.
        ann_ids: (N,) int64 annotation ids (only used to reproduce pycocotools' treatment of id 0).

    ``from_arrays`` drops annotations whose image or category is not listed (as
    pycocotools does); :func:`load_ground_truth` refuses them.
    The order of the annotations matters (it breaks ties between equal IoUs) and is kept.
    """

    image_ids: np.ndarray
    cat_ids: np.ndarray
    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    ann_ids: np.ndarray

    @classmethod
    def from_arrays(
        cls,
        image_ids: Sequence,
        cat_ids: Sequence,
        ann_image_ids: Sequence,
        ann_cat_ids: Sequence,
        boxes_xywh: np.ndarray,
        area: Optional[np.ndarray] = None,
        iscrowd: Optional[np.ndarray] = None,
        ann_ids: Optional[np.ndarray] = None,
    ) -> "GroundTruth":
        """Build from arrays; ``area`` defaults to w*h, ``iscrowd`` to 0, ``ann_ids`` to 1..N."""
        img_table = np.unique(np.asarray(image_ids))
        cat_table = np.unique(np.asarray(cat_ids))
        boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        area = boxes[:, 2] * boxes[:, 3] if area is None else np.asarray(area, dtype=np.float64)
        crowd = np.zeros(n, bool) if iscrowd is None else np.asarray(iscrowd).astype(bool)
        ids = np.arange(1, n + 1) if ann_ids is None else np.asarray(ann_ids)
        img = _index_of(np.asarray(ann_image_ids), img_table)
        cat = _index_of(np.asarray(ann_cat_ids), cat_table)
        keep = (img >= 0) & (cat >= 0)
        if not keep.all():
            img, cat, boxes, area, crowd, ids = (
                img[keep], cat[keep], boxes[keep], area[keep], crowd[keep], ids[keep],
            )
        return cls(img_table, cat_table, img, cat, boxes, area, crowd, ids.astype(np.int64))


@dataclass
class CocoResults:
    """Detections as arrays (each row one COCO result ``{image_id, category_id, bbox, score}``).

    Attributes:
        image_ids: (D,) image id of each detection (raw ids, not indices).
        cat_ids: (D,) category id of each detection.
        boxes: (D, 4) float64 [x, y, w, h].
        scores: (D,) float64.

    The row order matters: it breaks ties between equal scores (earlier first).
    """

    image_ids: np.ndarray
    cat_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    @classmethod
    def from_arrays(cls, image_ids, cat_ids, boxes_xywh, scores) -> "CocoResults":
        boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        image_ids = np.asarray(image_ids).reshape(-1)
        cat_ids = np.asarray(cat_ids).reshape(-1)
        if not (len(boxes) == len(scores) == len(image_ids) == len(cat_ids)):
            raise DataError(
                f"detections: boxes ({len(boxes)}), scores ({len(scores)}), image ids "
                f"({len(image_ids)}) and category ids ({len(cat_ids)}) must have the same length"
            )
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise DataError("detections: boxes and scores must be finite")
        return cls(image_ids, cat_ids, boxes, scores)


def load_ground_truth(gt: Union[PathLike, Mapping[str, Any], GroundTruth]) -> GroundTruth:
    """A COCO detection dict (``images``, ``annotations``, ``categories``) or the path
    of its JSON file -> :class:`GroundTruth`.

    Annotation fields: ``image_id``, ``category_id``, ``bbox`` [x, y, w, h] are required;
    ``area`` defaults to w*h, ``iscrowd`` to 0, ``id`` to the position + 1. Duplicate
    annotation ids are refused (pycocotools silently mixes them up).
    """
    if isinstance(gt, GroundTruth):
        return gt
    if isinstance(gt, (str, os.PathLike)):
        gt = _load_json(gt, "ground-truth")
    if not isinstance(gt, Mapping):
        raise DataError(f"ground truth must be a COCO dict or a path, got {type(gt).__name__}")
    for key in ("images", "categories"):
        if key not in gt:
            raise DataError(f"ground truth has no '{key}' list (COCO detection format expected)")
    images, categories = gt["images"], gt["categories"]
    anns = gt.get("annotations", []) or []
    image_ids = _ids(_field(images, "id", "ground-truth image"), "ground-truth image", "id")
    cat_ids = _ids(_field(categories, "id", "ground-truth category"), "ground-truth category", "id")
    what = "ground-truth annotation"
    ann_images = _ids(_field(anns, "image_id", what), what, "image_id")
    ann_cats = _ids(_field(anns, "category_id", what), what, "category_id")
    # An annotation of an unlisted image or category is an error, as such a
    # detection is (pycocotools would drop it silently).
    known_images, known_cats = set(image_ids), set(cat_ids)
    for i, (iid, cid) in enumerate(zip(ann_images, ann_cats)):
        if iid not in known_images:
            raise DataError(f"{what} {i}: image_id {iid!r} is not the id of any ground-truth image")
        if cid not in known_cats:
            raise DataError(f"{what} {i}: category_id {cid!r} is not the id of any ground-truth category")
    boxes = _boxes(_field(anns, "bbox", "ground-truth annotation"), "ground-truth annotation")
    n = len(anns)
    area_raw = [a.get("area") for a in anns]
    area = boxes[:, 2] * boxes[:, 3]
    if any(v is not None for v in area_raw):
        given = np.array([np.nan if v is None else v for v in area_raw], dtype=np.float64)
        area = np.where(np.isnan(given), area, given)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    ids = np.array([a.get("id", i + 1) for i, a in enumerate(anns)], dtype=np.int64)
    if n and len(np.unique(ids)) != n:
        uniq, counts = np.unique(ids, return_counts=True)
        raise DataError(f"ground-truth annotation id {int(uniq[counts > 1][0])} is used more than once")
    return GroundTruth.from_arrays(
        image_ids,
        cat_ids,
        ann_images,
        ann_cats,
        boxes,
        area,
        crowd,
        ids,
    )


def load_detections(detections: Union[PathLike, Sequence[Mapping[str, Any]], CocoResults]) -> CocoResults:
    """A list of COCO results ``{image_id, category_id, bbox [x,y,w,h], score}`` or the
    path of its JSON file -> :class:`CocoResults`."""
    if isinstance(detections, CocoResults):
        return detections
    if isinstance(detections, (str, os.PathLike)):
        detections = _load_json(detections, "detections")
    if not isinstance(detections, (list, tuple)):
        raise DataError(f"detections must be a list of dicts or a path, got {type(detections).__name__}")
    what = "detection"
    boxes = _boxes(_field(detections, "bbox", what), what)
    scores = _floats(_field(detections, "score", what), what, "score")
    return CocoResults(
        np.asarray(_ids(_field(detections, "image_id", what), what, "image_id"), dtype=np.int64),
        np.asarray(_ids(_field(detections, "category_id", what), what, "category_id"), dtype=np.int64),
        boxes,
        scores,
    )


# -- producing the format -------------------------------------------------------


def _np(x: Any, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def xyxy_to_xywh(boxes: Any) -> np.ndarray:
    """(N, 4) xyxy -> (N, 4) float64 [x, y, w, h]."""
    b = _np(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def to_coco_detections(preds: Sequence[Mapping[str, Any]], image_ids: Sequence[Any],
                       box_decimals: Optional[int] = None,
                       score_decimals: Optional[int] = None) -> List[Dict[str, Any]]:
    """Per-image predictions -> a COCO results list (the one COCO results writer).

    Args:
        preds: one dict per image: ``boxes`` (K, 4) xyxy pixels, ``scores`` (K,),
            ``labels`` (K,) in 1..C (tensors or arrays).
        image_ids: the COCO image id of each entry of ``preds``.
        box_decimals, score_decimals: round the written figures (a smaller
            ``detections.json``); None keeps them exact.

    Returns:
        ``[{"image_id", "category_id" (= label), "bbox" [x, y, w, h], "score"}, ...]``
        in image order, each image's detections in the given order.
    """
    if len(preds) != len(image_ids):
        raise ValueError(f"{len(preds)} predictions but {len(image_ids)} image ids")
    out: List[Dict[str, Any]] = []
    for pred, image_id in zip(preds, image_ids):
        boxes = xyxy_to_xywh(pred["boxes"]).tolist()
        scores = _np(pred["scores"], np.float64).reshape(-1).tolist()
        labels = _np(pred["labels"]).reshape(-1).astype(np.int64).tolist()
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(
                f"image {image_id!r}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
            )
        iid = image_id.item() if hasattr(image_id, "item") else image_id
        if box_decimals is not None:
            boxes = [[round(v, box_decimals) for v in b] for b in boxes]
        if score_decimals is not None:
            scores = [round(v, score_decimals) for v in scores]
        out.extend(
            {"image_id": iid, "category_id": c, "bbox": b, "score": s}
            for b, s, c in zip(boxes, scores, labels)
        )
    return out


def to_coco_gt(
    samples: Iterable[Mapping[str, Any]], classes: Sequence[str], task: str = "detection"
) -> Dict[str, Any]:
    """Dataset samples -> a COCO ground-truth dict.

    Each sample (see docs/architecture.md) gives ``boxes`` (N, 4) xyxy pixels,
    ``labels`` (N,) in 1..C and ``meta["id"]``; its size comes from ``image``
    (3, H, W) or else ``meta["orig_size"]``. Samples whose ``has[task]`` is False
    are left out. Categories are ``{"id": i + 1, "name": classes[i]}``;
    annotations get ids 1.. in order, ``area`` = w*h and ``iscrowd`` 0.
    """
    images: List[Dict[str, Any]] = []
    anns: List[Dict[str, Any]] = []
    for n, sample in enumerate(samples):
        has = sample.get("has", {})
        if task in has and not bool(has[task]):
            continue
        meta = sample.get("meta", {})
        if "id" not in meta:
            raise DataError(f"sample {n} has no meta['id'] (needed as the COCO image id)")
        image_id = meta["id"]
        image_id = image_id.item() if hasattr(image_id, "item") else image_id
        if "image" in sample:
            h, w = (int(s) for s in sample["image"].shape[-2:])
        elif "orig_size" in meta:
            h, w = (int(s) for s in meta["orig_size"])
        else:
            raise DataError(f"sample {n}: no 'image' nor meta['orig_size'] to give the image size")
        images.append({"id": image_id, "height": h, "width": w})
        boxes = xyxy_to_xywh(sample["boxes"])
        labels = _np(sample["labels"]).reshape(-1).astype(np.int64)
        if len(labels) != len(boxes):
            raise DataError(f"sample {n}: {len(boxes)} boxes but {len(labels)} labels")
        if len(labels) and (labels.min() < 1 or labels.max() > len(classes)):
            raise DataError(f"sample {n}: labels must be in 1..{len(classes)}, got {labels.tolist()}")
        for b, c in zip(boxes.tolist(), labels.tolist()):
            anns.append(
                {"id": len(anns) + 1, "image_id": image_id, "category_id": c, "bbox": b,
                 "area": b[2] * b[3], "iscrowd": 0}
            )
    categories = [{"id": i + 1, "name": str(name)} for i, name in enumerate(classes)]
    return {"images": images, "annotations": anns, "categories": categories}
