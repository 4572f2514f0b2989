"""Metric accumulators used by the task plugins (``task.new_metric()``).

Each has ``update(prediction, batch)``, ``compute() -> dict[str, float]`` and
``merge(other)`` (exact: merging the accumulators of two halves of a set gives the
accumulator of the whole set), holds only CPU numpy data and pickles (for
gathering across DDP ranks). Only the samples with ``batch["has"][task]`` True
count (all of them when the batch has no such entry); a batch without the
label's key (data without that modality) counts for nothing.

``compute()`` on an accumulator that saw nothing returns the usual keys with NaN
values; it never raises.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from mtlkit.metrics import dense
from mtlkit.metrics.coco_eval import SUMMARY, evaluate
from mtlkit.metrics.coco_format import CocoResults, GroundTruth, to_coco_detections, xyxy_to_xywh
from mtlkit.task import labelled


def _has(batch: Dict[str, Any], task: Optional[str], size: int,
         derived_from: Optional[str] = None, key: Optional[str] = None) -> np.ndarray:
    """(B,) bool: which samples of the batch carry the task's label, by the
    rule the losses use (:func:`mtlkit.task.labelled`: a batch without the
    label's ``key`` carries none); every sample holding ``key`` when the metric
    was made without a task name."""
    if task is None:
        return np.full(size, key is None or batch.get(key) is not None, dtype=bool)
    return labelled(batch, task, size, derived_from, key=key).numpy()


def _dense_inputs(prediction: Any, batch: Dict[str, Any], task: Optional[str], key: str,
                  derived_from: Optional[str] = None) -> Optional[Tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """(prediction, GT on its device, has) of a dense task, or None when no
    sample of the batch carries the task's label (a batch without ``key``
    carries none: data without that modality)."""
    pred = torch.as_tensor(prediction)
    has = _has(batch, task, pred.shape[0], derived_from, key)
    if not has.any():
        return None
    gt = torch.as_tensor(batch[key], device=pred.device)
    return pred, gt, has


def _pixel_mask(batch: Dict[str, Any], mask_key: str, has: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool: the batch's validity mask (all valid when absent) and ``has``."""
    b = like.shape[0]
    keep = torch.as_tensor(has, device=like.device).view(b, *([1] * (like.dim() - 1)))
    mask = batch.get(mask_key)
    if mask is None:
        return keep.expand(b, 1, *like.shape[2:])
    mask = torch.as_tensor(mask, device=like.device).bool()
    if mask.dim() == like.dim() - 1:
        mask = mask.unsqueeze(1)
    return mask & keep


def _np(x: Any, dtype=None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


class DetectionMetric:
    """COCO bbox mAP over a set (pycocotools-exact, see :func:`mtlkit.metrics.coco_map`).

    Args:
        classes: class names (``classes[label - 1]``) or their number C.
        task: the task name whose ``batch["has"]`` entry selects the samples (None: all);
            ``derived_from`` as :attr:`mtlkit.task.Task.derived_from`.
        num_classes, class_names: the same given separately (as the primary task plugin does).

    ``update(prediction, batch)``: ``prediction`` a list of B dicts ``{"boxes" (K, 4)
    xyxy pixels, "scores" (K,), "labels" (K,) in 1..C}``; the batch gives ``boxes`` /
    ``labels`` lists (GT, labels 1..C) and ``meta[i]["id"]`` (the image id). GT and
    detections are kept per image as compact float64 / int64 arrays on the CPU.

    ``compute()``: ``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl``
    (fractions; -1 where COCO leaves a figure undefined, e.g. APs without small
    objects) and ``AP/<class name>`` per class. An image id seen twice (e.g. the
    padding of a distributed sampler) counts once (its first occurrence). With no
    image at all every figure is NaN.
    """

    def __init__(
        self,
        classes: Union[Sequence[str], int, None] = None,
        *,
        task: Optional[str] = None,
        derived_from: Optional[str] = None,
        num_classes: Optional[int] = None,
        class_names: Optional[Sequence[str]] = None,
    ):
        if isinstance(classes, int):
            num_classes = classes if num_classes is None else num_classes
        elif classes is not None:
            class_names = list(classes) if class_names is None else class_names
        if num_classes is None:
            if class_names is None:
                raise ValueError("DetectionMetric needs the classes (names or their number)")
            num_classes = len(class_names)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        if class_names is not None and len({str(n) for n in class_names}) != len(class_names):
            raise ValueError(f"class names repeat a name ({list(class_names)}): their per-class AP "
                             f"would merge")
        self.task, self.derived_from = task, derived_from
        self.num_classes = int(num_classes)
        self.class_names = [str(n) for n in class_names] if class_names is not None else [
            str(i + 1) for i in range(self.num_classes)]
        self.image_ids: List[Any] = []
        self.gt_boxes: List[np.ndarray] = []  # (N, 4) xyxy float64 per image
        self.gt_labels: List[np.ndarray] = []  # (N,) int64
        self.dt_boxes: List[np.ndarray] = []  # (K, 4) xyxy float64
        self.dt_scores: List[np.ndarray] = []  # (K,) float64
        self.dt_labels: List[np.ndarray] = []  # (K,) int64
        self._cache: Optional[Dict[str, Any]] = None

    def update(self, prediction: Sequence[Dict[str, Any]], batch: Dict[str, Any]) -> None:
        b = len(prediction)
        has = _has(batch, self.task, b, self.derived_from, key="boxes")
        meta = batch.get("meta")
        if meta is None or len(meta) != b:
            raise ValueError("DetectionMetric.update needs batch['meta'] with an 'id' per sample")
        for i in np.flatnonzero(has):
            pred = prediction[i]
            self.image_ids.append(_image_id(meta[i]["id"]))
            self.gt_boxes.append(_np(batch["boxes"][i], np.float64).reshape(-1, 4))
            self.gt_labels.append(_np(batch["labels"][i]).reshape(-1).astype(np.int64))
            self.dt_boxes.append(_np(pred["boxes"], np.float64).reshape(-1, 4))
            self.dt_scores.append(_np(pred["scores"], np.float64).reshape(-1))
            self.dt_labels.append(_np(pred["labels"]).reshape(-1).astype(np.int64))
        self._cache = None

    def merge(self, other: "DetectionMetric") -> "DetectionMetric":
        if not isinstance(other, DetectionMetric) or other.num_classes != self.num_classes:
            raise ValueError("can only merge a DetectionMetric with the same number of classes")
        for name in ("image_ids", "gt_boxes", "gt_labels", "dt_boxes", "dt_scores", "dt_labels"):
            getattr(self, name).extend(getattr(other, name))
        self._cache = None
        return self

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = None
        return state

    def _unique(self) -> List[int]:
        """Positions of the first occurrence of every image id."""
        seen, keep = set(), []
        for i, image_id in enumerate(self.image_ids):
            if image_id not in seen:
                seen.add(image_id)
                keep.append(i)
        return keep

    def _arrays(self):
        """(GroundTruth, CocoResults) of the unique images."""
        keep = self._unique()

        def cat(parts, width=None, dtype=np.float64):
            chosen = [parts[i] for i in keep]
            if not chosen:
                return np.zeros((0, width) if width else 0, dtype=dtype)
            return np.concatenate(chosen)

        ids = [self.image_ids[i] for i in keep]
        n_gt = [len(self.gt_labels[i]) for i in keep]
        n_dt = [len(self.dt_scores[i]) for i in keep]
        gt_xywh = xyxy_to_xywh(cat(self.gt_boxes, 4))
        gt = GroundTruth.from_arrays(
            ids, np.arange(1, self.num_classes + 1), np.repeat(np.asarray(ids), n_gt),
            cat(self.gt_labels, dtype=np.int64), gt_xywh,
        )
        dets = CocoResults.from_arrays(
            np.repeat(np.asarray(ids), n_dt), cat(self.dt_labels, dtype=np.int64),
            xyxy_to_xywh(cat(self.dt_boxes, 4)), cat(self.dt_scores),
        )
        return gt, dets

    def _evaluate(self) -> Dict[str, Any]:
        if self._cache is None:
            if not self.image_ids:
                self._cache = {
                    "stats": {name: float("nan") for name, *_ in SUMMARY},
                    "per_class": {c: float("nan") for c in range(1, self.num_classes + 1)},
                }
            else:
                res = evaluate(*self._arrays())
                self._cache = {"stats": res.stats(), "per_class": res.per_class()}
        return self._cache

    def compute(self) -> Dict[str, float]:
        result = self._evaluate()
        out = dict(result["stats"])
        for label, ap in result["per_class"].items():
            out[f"AP/{self.class_names[int(label) - 1]}"] = ap
        return out

    def per_class(self) -> Dict[str, float]:
        """class name -> AP@[.5:.95] (-1 for a class without GT, NaN when empty)."""
        return {self.class_names[int(k) - 1]: v for k, v in self._evaluate()["per_class"].items()}

    def to_coco(self):
        """(COCO ground-truth dict, COCO results list) of what was accumulated."""
        keep = self._unique()
        anns = []
        for i in keep:
            for box, label in zip(xyxy_to_xywh(self.gt_boxes[i]).tolist(), self.gt_labels[i].tolist()):
                anns.append({"id": len(anns) + 1, "image_id": self.image_ids[i], "category_id": label,
                             "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        gt = {"images": [{"id": self.image_ids[i]} for i in keep], "annotations": anns,
              "categories": [{"id": c + 1, "name": n} for c, n in enumerate(self.class_names)]}
        preds = [{"boxes": self.dt_boxes[i], "scores": self.dt_scores[i], "labels": self.dt_labels[i]} for i in keep]
        return gt, to_coco_detections(preds, [self.image_ids[i] for i in keep])


def _image_id(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.item()
    if isinstance(x, np.generic):
        return x.item()
    return x


class _LabelledMetric:
    """What the dense and scene metrics share: whose labels they read (the
    task's ``has`` flags, the batch key ``key``, default the task's name)."""

    def __init__(self, task: Optional[str], key: Optional[str], derived_from: Optional[str]):
        if key is None and task is None:
            raise ValueError(f"{type(self).__name__} needs the task name or the batch key of its labels")
        self.task, self.derived_from = task, derived_from
        self.key = key or task


class DepthMetric(_LabelledMetric):
    """Depth errors pooled over the valid pixels of the set (see :mod:`mtlkit.metrics.dense`).

    Args:
        task: the task name (its ``batch["has"]`` entry); ``key``: the batch key of the GT
            map in metres (default: ``task``), whose validity mask is ``<key>_mask``.
        min_depth, max_depth: predictions are clamped to this range; GT above
            ``max_depth`` is not counted.

    ``update(prediction (B, 1, H, W) metres, batch)``; keeps the sums of
    :func:`dense.depth_stats`, so ``merge`` is exact.
    """

    def __init__(self, task: Optional[str] = None, key: Optional[str] = None, min_depth: float = 1e-3,
                 max_depth: Optional[float] = None, derived_from: Optional[str] = None):
        super().__init__(task, key, derived_from)
        self.min_depth = float(min_depth)
        self.max_depth = None if max_depth is None else float(max_depth)
        self.stats = np.zeros(len(dense.DEPTH_FIELDS), dtype=np.float64)

    def update(self, prediction: torch.Tensor, batch: Dict[str, Any]) -> None:
        inputs = _dense_inputs(prediction, batch, self.task, self.key, self.derived_from)
        if inputs is None:
            return
        pred, gt, has = inputs
        mask = _pixel_mask(batch, f"{self.key}_mask", has, gt)
        self.stats += dense.depth_stats(pred, gt, mask, self.min_depth, self.max_depth)

    def merge(self, other: "DepthMetric") -> "DepthMetric":
        self.stats = self.stats + other.stats
        return self

    def compute(self) -> Dict[str, float]:
        return dense.depth_from_stats(self.stats)


class NormalsMetric(_LabelledMetric):
    """Angular errors of unit-vector maps (surface orientation) pooled over the valid pixels of the set.

    Args:
        task: the task name; ``key``: batch key of the GT unit vectors (default ``task``),
            mask ``<key>_mask``.

    Keeps [n, sum, sum of squares, counts under 11.25/22.5/30°] and a histogram of
    the angles in 0.01° bins (18000 int64 counts) for the median, so ``merge`` is
    exact and the median is within 0.005° of the exact one.
    """

    def __init__(self, task: Optional[str] = None, key: Optional[str] = None,
                 derived_from: Optional[str] = None):
        super().__init__(task, key, derived_from)
        self.stats = np.zeros(3 + len(dense.NORMAL_THRESHOLDS), dtype=np.float64)
        self.hist = np.zeros(dense.HIST_BINS, dtype=np.int64)

    def update(self, prediction: torch.Tensor, batch: Dict[str, Any]) -> None:
        inputs = _dense_inputs(prediction, batch, self.task, self.key, self.derived_from)
        if inputs is None:
            return
        pred, gt, has = inputs
        mask = _pixel_mask(batch, f"{self.key}_mask", has, gt[:, :1])
        angles = dense.normal_angles(pred, gt, mask)
        self.stats += dense.normals_stats(angles)
        self.hist += dense.angle_histogram(angles)

    def merge(self, other: "NormalsMetric") -> "NormalsMetric":
        self.stats = self.stats + other.stats
        self.hist = self.hist + other.hist
        return self

    def compute(self) -> Dict[str, float]:
        return dense.normals_from_stats(self.stats, dense.histogram_median(self.hist))


class SceneMetric(_LabelledMetric):
    """Top-1 accuracy of an image-level classification over the samples that have its label.

    ``update(prediction (B, S) probabilities or logits, batch)`` with ``batch[key]``
    (B,) int64 (``key`` defaults to ``task``). ``compute()`` -> ``{"top1": ...}``.
    """

    def __init__(self, task: Optional[str] = None, key: Optional[str] = None,
                 derived_from: Optional[str] = None):
        super().__init__(task, key, derived_from)
        self.counts = np.zeros(2, dtype=np.float64)  # [n, correct]

    def update(self, prediction: torch.Tensor, batch: Dict[str, Any]) -> None:
        pred = torch.as_tensor(prediction)
        has = _has(batch, self.task, pred.shape[0], self.derived_from, self.key)
        if not has.any():
            return
        self.counts += dense.scene_counts(pred, batch[self.key], torch.as_tensor(has))

    def merge(self, other: "SceneMetric") -> "SceneMetric":
        self.counts = self.counts + other.counts
        return self

    def compute(self) -> Dict[str, float]:
        n, correct = self.counts
        return {"top1": float(correct / n) if n > 0 else float("nan")}
