"""Evaluation metrics: COCO bbox mAP (pycocotools-exact), depth, normals, scene."""

from mtlkit.metrics.coco_eval import CocoEvalResult, coco_map, evaluate
from mtlkit.metrics.coco_format import (
    Detections,
    GroundTruth,
    load_detections,
    load_ground_truth,
    to_coco_detections,
    to_coco_gt,
)

__all__ = [
    "coco_map",
    "evaluate",
    "CocoEvalResult",
    "GroundTruth",
    "Detections",
    "load_ground_truth",
    "load_detections",
    "to_coco_detections",
    "to_coco_gt",
]
