"""Evaluation metrics: COCO bbox mAP (pycocotools-exact), depth, normals, scene.

* :func:`coco_map` / :func:`evaluate`: COCO detection evaluation (docs/metrics.md).
* :func:`to_coco_detections`, :func:`to_coco_gt`: write the COCO format.
* :func:`depth_metrics`, :func:`normals_metrics`, :func:`scene_accuracy`: dense metrics.
* :class:`DetectionMetric`, :class:`DepthMetric`, :class:`NormalsMetric`,
  :class:`SceneMetric`: mergeable accumulators used by the task plugins.
* :func:`summary`: a printable multi-task table.
"""

from mtlkit.metrics.accumulators import DepthMetric, DetectionMetric, NormalsMetric, SceneMetric
from mtlkit.metrics.coco_eval import CocoEvalResult, coco_map, evaluate
from mtlkit.metrics.coco_format import (
    CocoResults,
    GroundTruth,
    load_detections,
    load_ground_truth,
    to_coco_detections,
    to_coco_gt,
)
from mtlkit.metrics.dense import depth_metrics, normals_metrics, scene_accuracy
from mtlkit.metrics.summary import summary

__all__ = [
    "coco_map",
    "evaluate",
    "CocoEvalResult",
    "GroundTruth",
    "CocoResults",
    "load_ground_truth",
    "load_detections",
    "to_coco_detections",
    "to_coco_gt",
    "depth_metrics",
    "normals_metrics",
    "scene_accuracy",
    "DetectionMetric",
    "DepthMetric",
    "NormalsMetric",
    "SceneMetric",
    "summary",
]
