"""Detection ops: IoU, NMS, SSD matching / encoding, decoding and post-processing.

Every op takes ``backend="native" | "torch" | None`` (None: the active backend,
see :func:`backend`). ``"native"`` runs the C++ / CUDA kernels of ``mtlkit._C``
(registered as ``torch.ops.mtlkit.*``); ``"torch"`` runs the pure-PyTorch
reference in :mod:`mtlkit.ops.reference`, which defines the semantics. Both give
the same results (bit-identical on float32; see ``docs/ops.md``).

Inputs: boxes are xyxy, priors are (cx, cy, w, h). float16 / bfloat16 inputs are
computed in float32; mixing float32 and float64 computes in float64. Bad inputs
raise :class:`OpsValueError` / :class:`OpsTypeError` (``ValueError`` /
``TypeError`` and ``mtlkit.errors.MtlkitError``) naming the argument.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mtlkit.ops import _checks as C
from mtlkit.ops import reference
from mtlkit.ops._backend import backend, choose, native_error, native_supports
from mtlkit.ops._checks import OpsTypeError, OpsValueError
from mtlkit.ops.reference import Detections, cxcywh_to_xyxy

__all__ = [
    "Detections",
    "OpsTypeError",
    "OpsValueError",
    "backend",
    "batched_nms",
    "box_iou",
    "cxcywh_to_xyxy",
    "native_error",
    "nms",
    "ssd_decode",
    "ssd_match",
    "ssd_postprocess",
]


def _use_native(op: str, requested: str | None, device: torch.device) -> bool:
    return choose(requested) == "native" and native_supports(op, device)


def box_iou(a: torch.Tensor, b: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """Pairwise IoU of a (N, 4) and b (M, 4) xyxy boxes -> (N, M).

    0 where the union is not positive (zero-area pairs, NaN coordinates).
    """
    a, b = C.boxes("a", a, leading=1), C.boxes("b", b, leading=1)
    C.same_device(a=a, b=b)
    dt = C.common_float(a, b)
    a, b = a.to(dt), b.to(dt)
    if a.device.type == "meta":
        return a.new_empty((a.shape[0], b.shape[0]))
    if _use_native("box_iou", backend, a.device):
        return torch.ops.mtlkit.box_iou(a.contiguous(), b.contiguous())
    return reference.box_iou(a, b)


def _nms_inputs(boxes, scores, iou_threshold):
    boxes = C.boxes("boxes", boxes, leading=1)
    scores = C.float_tensor("scores", scores)
    C.vector("scores", scores, boxes.shape[0], "boxes")
    C.same_device(boxes=boxes, scores=scores)
    thr = C.unit_threshold("iou_threshold", iou_threshold)
    C.not_meta("nms", boxes)
    dt = C.common_float(boxes, scores)
    return boxes.to(dt).contiguous(), scores.to(dt).contiguous(), thr


def nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, *, backend: str | None = None
) -> torch.Tensor:
    """Greedy non-maximum suppression (torchvision semantics).

    boxes (N, 4) xyxy, scores (N,) -> int64 indices of the kept boxes by
    decreasing score (equal scores: lower index first). A box is suppressed
    when its IoU with a kept higher-ranked box is > iou_threshold. A box with
    a NaN score is dropped (never kept, never suppresses).
    """
    boxes, scores, thr = _nms_inputs(boxes, scores, iou_threshold)
    if _use_native("nms", backend, boxes.device):
        scored = reference._scored(scores)
        if scored is not None:  # NaN scores are dropped (the reference's rule), then the kernel runs
            return scored[torch.ops.mtlkit.nms(boxes[scored].contiguous(), scores[scored].contiguous(), thr)]
        return torch.ops.mtlkit.nms(boxes, scores, thr)
    return reference.nms(boxes, scores, thr)


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """NMS done independently for each value of idxs (N,) int (e.g. class ids).

    Kept indices over all groups by decreasing score, lower index on ties.
    """
    boxes, scores, thr = _nms_inputs(boxes, scores, iou_threshold)
    idxs = C.int_tensor("idxs", idxs)
    C.vector("idxs", idxs, boxes.shape[0], "boxes")
    C.same_device(boxes=boxes, idxs=idxs)
    idxs = idxs.to(torch.int64).contiguous()
    if _use_native("batched_nms", backend, boxes.device):
        scored = reference._scored(scores)
        if scored is not None:
            return scored[torch.ops.mtlkit.batched_nms(boxes[scored].contiguous(), scores[scored].contiguous(),
                                                       idxs[scored].contiguous(), thr)]
        return torch.ops.mtlkit.batched_nms(boxes, scores, idxs, thr)
    return reference.batched_nms(boxes, scores, idxs, thr)


def ssd_match(
    gt_boxes: Sequence[torch.Tensor],
    gt_labels: Sequence[torch.Tensor],
    priors: torch.Tensor,
    iou_threshold: float = 0.5,
    variances: Sequence[float] = (0.1, 0.2),
    *,
    num_classes: int | None = None,
    check_labels: bool = True,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match ground truth to priors and encode the regression targets.

    gt_boxes: list of B tensors (N_i, 4) xyxy; gt_labels: list of B tensors
    (N_i,) int in 1..C; priors (P, 4) cx, cy, w, h; all normalised to [0, 1].

    Each prior takes the GT of highest IoU (ties: lowest GT index) and is
    positive when that IoU >= iou_threshold; then each GT's best prior (ties:
    lowest prior index) is forced to it, GTs in order so a later GT wins a
    shared prior (a GT overlapping no prior at all is not forced). Returns
    loc_targets (B, P, 4) in the priors' dtype, 0 on background priors, and
    labels (B, P) int64, 0 = background. Targets: ((cx-pcx)/(pw*v0),
    (cy-pcy)/(ph*v0), log(w/pw)/v1, log(h/ph)/v1).

    iou_threshold must be in [0, 1]; labels in 1..num_classes (any positive
    int32 when num_classes is None), checked unless ``check_labels=False``
    (the caller checked them: the check reads their range back from the
    device, a host sync). On the meta device only the shapes are computed.
    """
    if isinstance(gt_boxes, torch.Tensor) or not isinstance(gt_boxes, (list, tuple)):
        raise OpsTypeError(f"gt_boxes: expected a list of (N_i, 4) tensors, got {type(gt_boxes).__name__}")
    if isinstance(gt_labels, torch.Tensor) or not isinstance(gt_labels, (list, tuple)):
        raise OpsTypeError(f"gt_labels: expected a list of (N_i,) tensors, got {type(gt_labels).__name__}")
    if len(gt_boxes) != len(gt_labels):
        raise OpsValueError(
            f"gt_labels: expected {len(gt_boxes)} tensors (one per image of gt_boxes), got {len(gt_labels)}"
        )
    priors = C.boxes("priors", priors, leading=1)
    thr = C.unit_threshold("iou_threshold", iou_threshold)
    v = C.variances(variances)
    boxes, labels = [], []
    for i, (g, l) in enumerate(zip(gt_boxes, gt_labels)):
        g = C.boxes(f"gt_boxes[{i}]", g, leading=1)
        l = C.int_tensor(f"gt_labels[{i}]", l)
        C.vector(f"gt_labels[{i}]", l, g.shape[0], f"gt_boxes[{i}]")
        C.same_device(priors=priors, **{f"gt_boxes[{i}]": g, f"gt_labels[{i}]": l})
        boxes.append(g.to(priors.dtype))
        labels.append(l.to(torch.int64))
    if check_labels:
        C.labels_range("gt_labels", labels, num_classes)
    if priors.device.type == "meta":
        B, P = len(boxes), priors.shape[0]
        return (priors.new_empty((B, P, 4)), torch.empty((B, P), dtype=torch.int64, device="meta"))
    if _use_native("ssd_match", backend, priors.device):
        counts = [0] + [g.shape[0] for g in boxes]
        offsets = torch.tensor(counts, dtype=torch.int64).cumsum(0).to(priors.device, non_blocking=True)
        flat_boxes = torch.cat(boxes) if boxes else priors.new_zeros((0, 4))
        flat_labels = (
            torch.cat(labels) if labels else torch.zeros((0,), dtype=torch.int64, device=priors.device)
        )
        return torch.ops.mtlkit.ssd_match(
            flat_boxes.contiguous(), flat_labels.contiguous(), offsets, priors.contiguous(), thr, *v
        )
    return reference.ssd_match(boxes, labels, priors, thr, v)


def ssd_decode(
    loc: torch.Tensor,
    priors: torch.Tensor,
    variances: Sequence[float] = (0.1, 0.2),
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Decode offsets loc (..., P, 4) against priors (P, 4) cxcywh -> boxes (..., P, 4) xyxy.

    Computed in float64, returned in the common dtype of loc and priors.
    """
    loc = C.boxes("loc", loc)
    priors = C.boxes("priors", priors, leading=1)
    if loc.dim() < 2 or loc.shape[-2] != priors.shape[0]:
        raise OpsValueError(
            f"loc: expected shape (..., {priors.shape[0]}, 4) to match priors, got {tuple(loc.shape)}"
        )
    C.same_device(loc=loc, priors=priors)
    v = C.variances(variances)
    dt = C.common_float(loc, priors)
    loc, priors = loc.to(dt).contiguous(), priors.to(dt).contiguous()
    if loc.device.type == "meta":
        return loc.new_empty(loc.shape)
    if _use_native("ssd_decode", backend, loc.device):
        return torch.ops.mtlkit.ssd_decode(loc, priors, *v)
    return reference.ssd_decode(loc, priors, v)


def ssd_postprocess(
    loc: torch.Tensor,
    conf: torch.Tensor,
    priors: torch.Tensor,
    score_threshold: float,
    iou_threshold: float,
    top_k: int | None,
    max_detections: int | None,
    variances: Sequence[float] = (0.1, 0.2),
    *,
    backend: str | None = None,
) -> list[Detections]:
    """SSD post-processing: decode + softmax + per-class filter / top-k / NMS + merge.

    loc (B, P, 4) offsets, conf (B, P, C) logits (class 0 background), priors
    (P, 4) cxcywh. Per image: softmax over classes; per class c >= 1 the
    scores > score_threshold, the top_k highest, NMS at iou_threshold; then the
    max_detections highest over all classes (None or <= 0: no limit; the
    settings have no default here: the detection task's are the config's);
    score_threshold and iou_threshold in [0, 1]. A prior with a NaN / inf score row, offset or
    prior gives no detection (never a non-finite box). Returns
    B :class:`Detections` (boxes (K, 4) xyxy in prior units, scores (K,),
    labels (K,) int64 in 1..C-1) sorted by score, then class, then prior index.
    """
    loc = C.boxes("loc", loc, leading=2)
    conf = C.float_tensor("conf", conf)
    priors = C.boxes("priors", priors, leading=1)
    if conf.dim() != 3 or conf.shape[:2] != loc.shape[:2] or conf.shape[2] < 1:
        raise OpsValueError(
            f"conf: expected shape ({loc.shape[0]}, {loc.shape[1]}, C) to match loc, got {tuple(conf.shape)}"
        )
    if loc.shape[1] != priors.shape[0]:
        raise OpsValueError(
            f"priors: expected shape ({loc.shape[1]}, 4) to match loc, got {tuple(priors.shape)}"
        )
    C.same_device(loc=loc, conf=conf, priors=priors)
    # scores are probabilities: above 1 nothing could pass (an empty result, not an answer)
    st = C.unit_threshold("score_threshold", score_threshold)
    it = C.unit_threshold("iou_threshold", iou_threshold)
    C.not_meta("ssd_postprocess", loc)
    k = C.count("top_k", top_k)
    m = C.count("max_detections", max_detections)
    v = C.variances(variances)
    dt = C.common_float(loc, conf, priors)
    loc, conf, priors = loc.to(dt).contiguous(), conf.to(dt).contiguous(), priors.to(dt).contiguous()
    # A prior whose box decodes to NaN / inf (NaN offsets or priors, an exp()
    # overflow) gives no detection, as a NaN score row does.
    bad = ~torch.isfinite(ssd_decode(loc, priors, v, backend=backend)).all(-1)
    if bool(bad.any()):
        conf = conf.masked_fill(bad[..., None], float("nan")).contiguous()
    if _use_native("ssd_postprocess", backend, loc.device):
        boxes, scores, labels, counts = torch.ops.mtlkit.ssd_postprocess(loc, conf, priors, st, it, k, m, *v)
        sizes = counts.tolist()
        dets = [
            Detections(bb, ss, ll)
            for bb, ss, ll in zip(boxes.split(sizes), scores.split(sizes), labels.split(sizes))
        ]
    else:
        dets = reference.ssd_postprocess(loc, conf, priors, st, it, k, m, v)
    # and a box finite in one decode but not in the fused one (at the overflow edge)
    return [d if bool(torch.isfinite(d.boxes).all()) else
            Detections(*(t[torch.isfinite(d.boxes).all(-1)] for t in d)) for d in dets]

# Load the extension now (registers torch.ops.mtlkit.* and their fake kernels), or
# warn once why the reference is used.
backend()
