"""Baselines for the ops' speed figures, written with plain torch (and
torchvision where it is importable): what a user would write without mtlkit.

* :func:`batched_match`: SSD matching for a whole batch with padded ground
  truth, one (B, G, P) IoU tensor, no Python loop over images or boxes. It
  follows the same rule as ``mtlkit.ops.ssd_match`` (so its result is a second
  oracle for the CUDA kernel).
* :func:`per_image_postprocess`: the post-processing of torchvision's
  detection models: per image, per-class top-k of the scores above the
  threshold, then one ``batched_nms`` over the classes.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch


def torchvision_ops():
    """``torchvision.ops`` when torchvision imports and its compiled ops load, else None."""
    try:
        import torchvision

        torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
        return torchvision.ops
    except Exception:  # noqa: BLE001 - any import / load failure means "not available"
        return None


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of (..., N, 4) and (..., M, 4) xyxy -> (..., N, M); 0 where the union
    is not positive (the mtlkit rule)."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def batched_match(gt_boxes: Sequence[torch.Tensor], gt_labels: Sequence[torch.Tensor], priors: torch.Tensor,
                  threshold: float = 0.5, variances: Tuple[float, float] = (0.1, 0.2)
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(loc_targets (B, P, 4), labels (B, P)) by the rule of ``ssd_match``,
    with GT padded to the largest image (padding: NaN boxes, IoU 0)."""
    B, P, dev = len(gt_boxes), priors.shape[0], priors.device
    G = max([int(g.shape[0]) for g in gt_boxes] + [1])
    gt = torch.full((B, G, 4), float("nan"), dtype=priors.dtype, device=dev)
    labels = torch.zeros((B, G), dtype=torch.int64, device=dev)
    for i, (g, l) in enumerate(zip(gt_boxes, gt_labels)):  # the padding copy: B small copies
        gt[i, : g.shape[0]] = g
        labels[i, : l.shape[0]] = l
    pri = torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], 1)
    iou = _iou(gt, pri.expand(B, P, 4))  # (B, G, P)
    best_gt_iou, best_gt = iou.max(1)  # (B, P): first maximum = lowest GT index
    best_prior_iou, best_prior = iou.max(2)  # (B, G): lowest prior index
    forced = (best_prior[:, :, None] == torch.arange(P, device=dev)) & (best_prior_iou > 0)[:, :, None]
    order = torch.arange(1, G + 1, device=dev).view(1, G, 1)
    forced_gt = (forced * order).amax(1) - 1  # (B, P): the last GT that forces the prior, or -1
    matched = torch.where(forced_gt >= 0, forced_gt, best_gt)
    positive = (forced_gt >= 0) | (best_gt_iou.double() >= threshold)
    out_labels = labels.gather(1, matched) * positive
    g = gt.gather(1, matched[..., None].expand(B, P, 4)).double()
    p = priors.double()
    v0, v1 = variances
    loc = torch.stack([((g[..., 0] + g[..., 2]) / 2 - p[:, 0]) / (p[:, 2] * v0),
                       ((g[..., 1] + g[..., 3]) / 2 - p[:, 1]) / (p[:, 3] * v0),
                       torch.log((g[..., 2] - g[..., 0]) / p[:, 2]) / v1,
                       torch.log((g[..., 3] - g[..., 1]) / p[:, 3]) / v1], -1)
    loc = torch.where(positive[..., None], loc, torch.zeros_like(loc)).to(priors.dtype)
    return loc, out_labels


def per_image_postprocess(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor, score_threshold: float,
                          iou_threshold: float, top_k: int, max_detections: int,
                          nms: Callable[..., torch.Tensor], decode: Callable[..., torch.Tensor]
                          ) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """torchvision-style SSD post-processing: softmax, then per image the
    per-class top_k above the threshold and one ``nms(boxes, scores, classes,
    iou)`` (a batched NMS) over the classes; the max_detections best.
    Returns per image (boxes, scores, labels)."""
    probs = torch.softmax(conf, -1)
    boxes = decode(loc, priors)
    C, P = conf.shape[-1], conf.shape[1]
    k = min(top_k, P) if top_k > 0 else P
    classes = torch.arange(1, C, device=conf.device).view(-1, 1).expand(C - 1, k)
    out = []
    for b in range(loc.shape[0]):
        scores = probs[b, :, 1:].t()  # (C-1, P)
        masked = torch.where(scores > score_threshold, scores, torch.full_like(scores, float("-inf")))
        vals, idx = masked.topk(k, dim=1)
        keep = vals > score_threshold
        sc, pr, cl = vals[keep], idx[keep], classes[keep]
        bx = boxes[b][pr]
        kept = nms(bx, sc, cl, iou_threshold)
        if max_detections > 0:
            kept = kept[:max_detections]
        out.append((bx[kept], sc[kept], cl[kept]))
    return out


def same_detections(ours, theirs: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                    atol: float = 1e-6) -> Optional[bool]:
    """Whether mtlkit's detections equal a baseline's (labels and boxes, scores
    to ``atol``), image by image."""
    if len(ours) != len(theirs):
        return False
    for d, (bx, sc, cl) in zip(ours, theirs):
        if d.labels.shape != cl.shape:
            return False
        if not (torch.equal(d.labels.cpu(), cl.cpu())
                and torch.allclose(d.scores.cpu(), sc.cpu().to(d.scores.dtype), atol=atol, rtol=0)
                and torch.allclose(d.boxes.cpu(), bx.cpu().to(d.boxes.dtype), atol=atol, rtol=0)):
            return False
    return True
