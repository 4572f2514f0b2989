"""The built-in ``detection`` task: SSD as the primary task (registered by
``mtlkit_plugins.detection``).

An SSD head (extra layers, priors, multibox predictors: :mod:`.head`,
:mod:`.priors`) on the backbone's source maps, the MultiBox loss
(:mod:`.loss`), SSD post-processing (:func:`mtlkit.ops.ssd_postprocess`) and
COCO-style mAP. See ``docs/models-detection.md``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mtlkit import ops
from mtlkit.errors import ConfigError, DataError
from mtlkit.metrics import DetectionMetric, to_coco_detections
from mtlkit.models.inputs import check_boxes
from mtlkit.task import PRIMARY, Task
from mtlkit.viz import draw_boxes, to_uint8_image

from .head import SSDHead
from .loss import device_targets, multibox_loss, normalised_targets


class LabelError(DataError, ValueError):
    """Detection labels outside 1..num_classes (a user error, and a ValueError)."""


class DetectionTask(Task):
    """SSD object detection (the primary task).

    Prediction (raw, from the head): ``{"loc": (B, P, 4) offsets, "conf":
    (B, P, C+1) logits (0 = background), "priors": (P, 4) cx, cy, w, h in [0, 1]}``.
    Postprocessed: a list of B dicts ``{"boxes": (K, 4) xyxy pixels, "scores":
    (K,), "labels": (K,) int64 in 1..C}`` sorted by decreasing score.

    Options (besides the common ``weight``):

    * ``num_classes`` (int): C, object classes without background.
    * Priors / head: ``aspect_ratios`` (one list per source map: backbone maps
      then extra maps; ``[2]`` -> 4 priors per cell, ``[2, 3]`` -> 6; its
      length fixes the number of extra layers), ``min_scale`` / ``max_scale``
      (prior scale of the first / last map, linear in between),
      ``extra_channels`` (widths of the extra layers, the first ones used),
      ``extra_norm`` (``group`` | ``batch`` | ``none``: normalisation in the
      extra layers; GroupNorm works at any batch size).
    * Loss: ``match_iou`` (a prior is positive at IoU >= this with a GT box),
      ``variances`` (box encoding), ``neg_pos_ratio`` (hard negatives kept
      per positive, per image), ``min_negatives`` (negatives kept in an image
      with no or very few positives), ``loc_weight`` (weight of Smooth-L1).
    * Post-processing (:attr:`postprocess_options`: set in the config's
      ``eval`` section, their one home): ``score_threshold``,
      ``iou_threshold`` (NMS), ``top_k`` (per class, before NMS),
      ``max_detections`` (per image).
    * Pictures: ``class_names`` (list of C names, or null for numbers),
      ``vis_score_threshold`` (boxes drawn from this score up).

    :attr:`defaults` is the one home of every default here, the
    post-processing ones included (the ``eval`` section reads them from here).
    """

    role = PRIMARY
    batch_keys = ("boxes", "labels")
    postprocess_options = ("score_threshold", "iou_threshold", "top_k", "max_detections")
    ranges = {"num_classes": ">= 1", "match_iou": "[0, 1]", "score_threshold": "[0, 1]",
              "iou_threshold": "[0, 1]", "top_k": ">= 1", "max_detections": ">= 1",
              "neg_pos_ratio": ">= 0", "min_negatives": ">= 0", "variances": "> 0"}
    lengths = {"variances": 2}
    choices = {"extra_norm": ("group", "batch", "none")}
    picture_threshold_option = "vis_score_threshold"
    draws_on_original = True
    defaults: Dict[str, Any] = {
        "num_classes": 19,
        "aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        "min_scale": 0.1,
        "max_scale": 0.9,
        "extra_channels": [512, 256, 256, 256, 256],
        "extra_norm": "group",
        "match_iou": 0.5,
        "variances": [0.1, 0.2],
        "neg_pos_ratio": 3.0,
        "min_negatives": 3,
        "loc_weight": 1.0,
        "score_threshold": 0.01,
        "iou_threshold": 0.45,
        "top_k": 200,
        "max_detections": 100,
        "class_names": None,
        "vis_score_threshold": 0.3,
    }

    @classmethod
    def check_options(cls, options: Dict[str, Any], where: str) -> None:
        """``class_names``: null or one distinct name per class."""
        names = options["class_names"]
        if names is not None and (not isinstance(names, (list, tuple)) or len(names) != options["num_classes"]):
            raise ConfigError(f"{where}.class_names: expected a list of num_classes="
                              f"{options['num_classes']} names, got {names!r}")
        if names is not None and len({str(n) for n in names}) != len(names):
            twice = next(str(n) for k, n in enumerate(names) if str(n) in map(str, names[:k]))
            raise ConfigError(f"{where}.class_names: '{twice}' is listed twice; each class needs its own "
                              f"name (the per-class AP is reported by name)")

    def __init__(self, name: str, options: Optional[Dict[str, Any]] = None):
        super().__init__(name, options)
        o = self.options
        self.num_classes = int(o["num_classes"])
        #: detached loss parts of the last :meth:`loss` call (for logging)
        self.last_loss_parts: Dict[str, torch.Tensor] = {}

    @property
    def variances(self) -> Tuple[float, float]:
        v = self.options["variances"]
        return float(v[0]), float(v[1])

    # -- model side ----------------------------------------------------------
    def build_head(self, in_channels: Sequence[int], **context: Any) -> SSDHead:
        """An :class:`~mtlkit.models.ssd.SSDHead` on the backbone's source maps.
        ``context`` (``image_size``, ``strides``) is accepted and unused: priors
        follow the actual feature sizes at each forward."""
        o = self.options
        return SSDHead(in_channels, self.num_classes, o["aspect_ratios"], o["extra_channels"],
                       min_scale=float(o["min_scale"]), max_scale=float(o["max_scale"]),
                       extra_norm=str(o["extra_norm"]))

    def loss(self, prediction: Dict[str, torch.Tensor], batch: Dict[str, Any]) -> torch.Tensor:
        """MultiBox loss (see :func:`mtlkit.models.ssd.multibox_loss`), masked per
        sample by ``batch["has"]["detection"]`` (all samples when absent).

        The targets cost one host synchronisation (the checks of boxes and
        labels, :func:`mtlkit.models.inputs.check_boxes`) when ``match_iou >
        0`` (:func:`~mtlkit.models.ssd.device_targets`); with ``match_iou ==
        0`` degenerate boxes must be dropped, one sync per image."""
        loc, conf, priors = prediction["loc"], prediction["conf"], prediction["priors"]
        mask = self.sample_mask(batch, conf.shape[0])
        if not isinstance(batch.get("image"), torch.Tensor):
            raise DataError("batch['image'] is missing: the detection loss needs it for the size the boxes "
                            "are in (xyxy pixels of batch['image'])")
        image_size = tuple(batch["image"].shape[-2:])
        if batch.get("boxes") is None and batch.get("labels") is None and not bool(mask.any()):
            return conf.sum() * 0.0  # no detection label in this batch
        # one host sync for every check of the targets: structure, boxes, label range
        lo, hi = check_boxes(batch.get("boxes"), batch.get("labels"), image_size, conf.shape[0], mask)
        self._check_labels(lo, hi)
        labels = [torch.as_tensor(l).reshape(-1) for l in batch["labels"]]
        match_iou = float(self.options["match_iou"])
        if match_iou > 0:
            boxes, labels = device_targets(batch["boxes"], labels, image_size, mask=mask, device=priors.device)
        else:
            boxes, labels = normalised_targets(batch["boxes"], labels, image_size, mask=mask.cpu(),
                                               device=priors.device)
        loc_t, lab_t = ops.ssd_match(boxes, labels, priors.float(), match_iou, self.variances,
                                     check_labels=False)  # checked above, the labelled samples only
        out = multibox_loss(loc, conf, loc_t, lab_t, mask=mask.to(conf.device, non_blocking=True),
                            neg_pos_ratio=float(self.options["neg_pos_ratio"]),
                            min_negatives=int(self.options["min_negatives"]),
                            loc_weight=float(self.options["loc_weight"]))
        self.last_loss_parts = {k: v for k, v in out.items() if k != "loss"}
        return out["loss"]

    def _check_labels(self, lo: int, hi: int) -> None:
        """The labels of the labelled samples, lowest ``lo`` and highest ``hi``
        (:func:`mtlkit.models.inputs.check_boxes`; ``lo > hi`` when there are
        none), in 1..num_classes, else :class:`LabelError`."""
        if lo <= hi and (lo < 1 or hi > self.num_classes):
            raise LabelError(f"detection labels must be in 1..{self.num_classes} (0 is background), "
                             f"got {lo}..{hi}: does model.tasks.{self.name}.num_classes fit the data?")

    def class_logits(self, prediction: Dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, P, C) logits of every prior, class 0 the background."""
        return prediction["conf"]

    # -- evaluation side -----------------------------------------------------
    def postprocess(self, prediction: Dict[str, torch.Tensor],
                    image_size: Tuple[int, int]) -> List[Dict[str, torch.Tensor]]:
        """Raw prediction -> list of B dicts {"boxes" (K, 4) xyxy pixels clipped
        to the image, "scores" (K,), "labels" (K,) in 1..C}, by decreasing score."""
        o = self.options
        dets = ops.ssd_postprocess(
            prediction["loc"].detach().float(), prediction["conf"].detach().float(),
            prediction["priors"].float(), score_threshold=float(o["score_threshold"]),
            iou_threshold=float(o["iou_threshold"]), top_k=int(o["top_k"]),
            max_detections=int(o["max_detections"]), variances=self.variances)
        h, w = float(image_size[0]), float(image_size[1])
        out = []
        for d in dets:
            scale = torch.tensor([w, h, w, h], dtype=d.boxes.dtype, device=d.boxes.device)
            boxes = d.boxes * scale
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0.0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0.0, h)
            out.append({"boxes": boxes, "scores": d.scores, "labels": d.labels})
        return out

    def new_metric(self) -> Any:
        """COCO-style detection mAP accumulator (``mtlkit.metrics.DetectionMetric``)."""
        return DetectionMetric(num_classes=self.num_classes, class_names=self.options["class_names"],
                               task=self.name, derived_from=self.derived_from)

    def rescale(self, prediction: List[Dict[str, torch.Tensor]], from_size: Tuple[int, int],
                to_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, torch.Tensor]]:
        """Boxes (K, 4) xyxy in pixels of ``from_size`` (H, W) -> pixels of each
        image's ``to_sizes[i]``; a new list, the input is not changed."""
        out = []
        for det, size in zip(prediction, to_sizes):
            sy = float(size[0]) / float(from_size[0])
            sx = float(size[1]) / float(from_size[1])
            boxes = det["boxes"].float()
            out.append({**det, "boxes": boxes * boxes.new_tensor([sx, sy, sx, sy])})
        return out

    def record(self, prediction: List[Dict[str, torch.Tensor]], index: int,
               threshold: Optional[float] = None,
               class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """``{boxes, scores, labels, class_names}`` of the detections of image
        ``index`` scoring at least ``threshold`` (default ``score_threshold``);
        names from the ``class_names`` option, else the given ones."""
        det = prediction[index]
        thr = float(self.options["score_threshold"]) if threshold is None else float(threshold)
        keep = det["scores"] >= thr
        labels = [int(v) for v in det["labels"][keep].tolist()]
        names = self.options["class_names"] or class_names
        return {
            "boxes": [[round(v, 2) for v in b] for b in det["boxes"][keep].tolist()],
            "scores": [round(float(v), 5) for v in det["scores"][keep].tolist()],
            "labels": labels,
            "class_names": [names[k - 1] if names and 1 <= k <= len(names) else None for k in labels],
        }

    def results(self, prediction: List[Dict[str, torch.Tensor]], metas: Sequence[Any],
                image_size: Tuple[int, int]) -> List[Dict[str, Any]]:
        """COCO results of a batch, boxes in each image's original pixels
        (``meta["orig_size"]``) and ids ``meta["id"]`` (the index without meta)."""
        metas = [m if isinstance(m, dict) else {} for m in metas] + \
            [{}] * max(0, len(prediction) - len(metas))
        sizes = [tuple(int(v) for v in m["orig_size"]) if m.get("orig_size") is not None else image_size
                 for m in metas[:len(prediction)]]
        preds = [{k: v.detach().float().cpu() if k != "labels" else v.detach().cpu() for k, v in d.items()}
                 for d in self.rescale(prediction, image_size, sizes)]
        ids = [int(m.get("id", i)) for i, m in enumerate(metas[:len(prediction)])]
        return to_coco_detections(preds, ids, box_decimals=3, score_decimals=5)

    def per_class(self, metric: Any) -> Dict[str, float]:
        """Class name -> AP@[.5:.95] of the merged metric."""
        return metric.per_class()

    def visualize(self, prediction: List[Dict[str, torch.Tensor]], index: int,
                  sample: Dict[str, Any]) -> Optional[np.ndarray]:
        """The sample's image with the predicted boxes (score >=
        ``vis_score_threshold``), captioned "name score"; (H, W, 3) uint8."""
        det = prediction[index]
        keep = det["scores"] >= float(self.options["vis_score_threshold"])
        image = to_uint8_image(sample["image"])
        return draw_boxes(image, det["boxes"][keep], det["labels"][keep], det["scores"][keep],
                          class_names=self.options["class_names"])
