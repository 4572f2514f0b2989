"""Pure-PyTorch reference implementations of the detection ops.

These define the semantics; the native kernels (``csrc/``) reproduce them bit for
bit on float32 inputs. They take already validated inputs (see ``mtlkit.ops`` for
the public, checked entry points): float32 or float64 tensors on one device.

Exactness rules shared with the native kernels:

* IoU is computed in the boxes' dtype as ``inter / (area_a + area_b - inter)``
  with ``area = clamp(x2 - x1, 0) * clamp(y2 - y1, 0)``; it is 0 whenever the
  union is not a positive number (zero-area pairs, NaN coordinates, inf - inf).
  So ``box_iou`` never returns NaN and a degenerate box never suppresses.
* Thresholds are compared in float64 (``float(iou) > threshold``), like
  torchvision's CPU kernel.
* Encoding / decoding run in float64 and are rounded to the input dtype once, so
  the result does not depend on which ``exp`` / ``log`` implementation ran.
* Orders are stable: equal scores keep the lower index first.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

__all__ = [
    "Detections",
    "box_area",
    "box_iou",
    "cxcywh_to_xyxy",
    "nms",
    "batched_nms",
    "ssd_encode",
    "ssd_match",
    "ssd_decode",
    "ssd_postprocess",
]


class Detections(NamedTuple):
    """Detections of one image, sorted by decreasing score.

    boxes (K, 4) xyxy, scores (K,), labels (K,) int64 in 1..C-1.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) xyxy -> (N,) areas; inverted sides count as 0, NaN propagates."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    return wh[:, 0] * wh[:, 1]


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4), (M, 4) xyxy -> (N, M) IoU, 0 where the union is not positive."""
    area_a = box_area(a)
    area_b = box_area(b)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros((), dtype=inter.dtype, device=inter.device))


_NMS_BLOCK = 128

#: above this many boxes the reference NMS finds the overlapping pairs on a grid
#: (the blocked loop is quadratic when most boxes are kept: 20,000 took 5 s)
_NMS_GRID_MIN = 4096
#: the grid path gives up (back to the blocked loop) above this many candidate pairs
_NMS_MAX_PAIRS = 30_000_000


def _pair_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of a[k] with b[k] (both (K, 4)), with the arithmetic of :func:`box_iou`."""
    area_a, area_b = box_area(a), box_area(b)
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union, torch.zeros((), dtype=inter.dtype, device=inter.device))


def _nms_grid(b: torch.Tensor, iou_threshold: float) -> "torch.Tensor | None":
    """Greedy NMS of boxes ``b`` (n, 4) already in rank order -> kept positions,
    or None when the boxes overlap too much for a grid to help.

    IoU > threshold >= 0 needs a positive intersection, so only pairs of boxes
    sharing a grid cell are candidates; boxes with no positive finite area
    never suppress nor are suppressed (their IoU is 0). The greedy pass then
    walks the sparse "i suppresses j" graph in rank order: the same result as
    the dense loop, in about O(n log n) for boxes of similar sizes."""
    n = b.shape[0]
    valid = torch.isfinite(b).all(1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    idx = valid.nonzero().squeeze(1)
    m = idx.numel()
    keep = torch.ones(n, dtype=torch.bool, device=b.device)
    if m < 2:
        return keep.nonzero().squeeze(1)
    v = b[idx]
    g = v.double().cpu()
    x0, y0 = float(g[:, 0].min()), float(g[:, 1].min())
    side = torch.maximum(g[:, 2] - g[:, 0], g[:, 3] - g[:, 1])
    cell = max(float(side.median()), 1e-300)
    for _ in range(64):
        cx1 = torch.floor((g[:, 0] - x0) / cell)
        cy1 = torch.floor((g[:, 1] - y0) / cell)
        cx2 = torch.floor((g[:, 2] - x0) / cell)
        cy2 = torch.floor((g[:, 3] - y0) / cell)
        if float(cx2.max()) < 2**30 and float(cy2.max()) < 2**30:
            counts = (cx2 - cx1 + 1) * (cy2 - cy1 + 1)
            if float(counts.sum()) <= 4 * m:
                break
        cell *= 2
    else:
        return None
    cx1, cy1, cy2 = cx1.long(), cy1.long(), cy2.long()
    ncx = (cx2.long() - cx1 + 1)
    counts = counts.long()
    total = int(counts.sum())
    box = torch.repeat_interleave(torch.arange(m), counts)
    offset = torch.arange(total) - (torch.cumsum(counts, 0) - counts)[box]
    key = (cx1[box] + offset % ncx[box]) * (int(cy2.max()) + 1) + (cy1[box] + offset // ncx[box])
    key, perm = torch.sort(key, stable=True)
    box = box[perm]
    _, sizes = torch.unique_consecutive(key, return_counts=True)
    if int((sizes * sizes).sum()) > _NMS_MAX_PAIRS:
        return None
    starts = torch.cumsum(sizes, 0) - sizes
    group_size = torch.repeat_interleave(sizes, sizes)
    group_start = torch.repeat_interleave(starts, sizes)
    first = torch.repeat_interleave(torch.arange(total), group_size)
    second = group_start[first] + torch.arange(int(group_size.sum())) - (torch.cumsum(group_size, 0)
                                                                          - group_size)[first]
    i, j = box[first], box[second]
    ahead = i < j
    pairs = torch.unique(i[ahead] * m + j[ahead])
    i, j = pairs // m, pairs % m
    dev = b.device
    over = (_pair_iou(v[i.to(dev)], v[j.to(dev)]).to(torch.float64) > iou_threshold).cpu()
    i, j = i[over].tolist(), j[over].tolist()
    suppressed = bytearray(m)
    for a, c in zip(i, j):  # edges sorted by i, then j
        if not suppressed[a]:
            suppressed[c] = 1
    gone = torch.tensor([k for k in range(m) if suppressed[k]], dtype=torch.int64)
    keep[idx[gone.to(dev)]] = False
    return keep.nonzero().squeeze(1)


def _sort_desc(scores: torch.Tensor) -> torch.Tensor:
    """Indices by decreasing score, lower index first on ties (NaN sorts first)."""
    return torch.sort(scores, descending=True, stable=True).indices


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS. boxes (N, 4) xyxy, scores (N,) -> kept indices (K,) int64 by decreasing score.

    A box is suppressed by a kept, higher-ranked box when their IoU > iou_threshold.
    Boxes are visited in rank order by blocks: a block is first checked against
    every box kept so far (one vectorised IoU), then resolved greedily inside.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = _sort_desc(scores)
    b = boxes[order]
    if n > _NMS_GRID_MIN and iou_threshold >= 0:
        keep = _nms_grid(b, iou_threshold)
        if keep is not None:
            return order[keep]
    kept = []
    kept_boxes = b[:0]
    for start in range(0, n, _NMS_BLOCK):
        blk = b[start : start + _NMS_BLOCK]
        if kept_boxes.shape[0]:
            alive = (~(box_iou(kept_boxes, blk).to(torch.float64) > iou_threshold).any(0)).tolist()
        else:
            alive = [True] * blk.shape[0]
        within = (box_iou(blk, blk).to(torch.float64) > iou_threshold).triu(1)
        suppresses = within.any(1).tolist()
        rows = within.tolist()
        new = []
        for i, ok in enumerate(alive):
            if not ok:
                continue
            new.append(i)
            if suppresses[i]:
                row = rows[i]
                for j in range(i + 1, len(alive)):
                    if row[j]:
                        alive[j] = False
        if new:
            idx = torch.tensor(new, dtype=torch.int64, device=boxes.device) + start
            kept.append(idx)
            kept_boxes = torch.cat([kept_boxes, b[idx]])
    return order[torch.cat(kept)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS within each value of ``idxs`` (N,); kept indices by decreasing score, lower index on ties."""
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    kept = []
    for g in torch.unique(idxs):
        members = (idxs == g).nonzero().squeeze(1)
        kept.append(members[nms(boxes[members], scores[members], iou_threshold)])
    keep = torch.cat(kept).sort().values
    return keep[_sort_desc(scores[keep])]


def cxcywh_to_xyxy(priors: torch.Tensor) -> torch.Tensor:
    """(P, 4) cx, cy, w, h -> (P, 4) x1, y1, x2, y2 (in the priors' dtype)."""
    half = priors[:, 2:] / 2
    return torch.cat([priors[:, :2] - half, priors[:, :2] + half], dim=1)


def ssd_encode(gt: torch.Tensor, priors: torch.Tensor, variances: Sequence[float]) -> torch.Tensor:
    """gt (P, 4) xyxy matched to priors (P, 4) cxcywh -> (P, 4) offsets, computed in float64."""
    v0, v1 = variances
    g = gt.to(torch.float64)
    p = priors.to(torch.float64)
    gcx = (g[:, 0] + g[:, 2]) / 2
    gcy = (g[:, 1] + g[:, 3]) / 2
    gw = g[:, 2] - g[:, 0]
    gh = g[:, 3] - g[:, 1]
    out = torch.stack(
        [
            (gcx - p[:, 0]) / (p[:, 2] * v0),
            (gcy - p[:, 1]) / (p[:, 3] * v0),
            torch.log(gw / p[:, 2]) / v1,
            torch.log(gh / p[:, 3]) / v1,
        ],
        dim=1,
    )
    return out.to(priors.dtype)


def ssd_match(
    gt_boxes: Sequence[torch.Tensor],
    gt_labels: Sequence[torch.Tensor],
    priors: torch.Tensor,
    iou_threshold: float = 0.5,
    variances: Sequence[float] = (0.1, 0.2),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match GT boxes to priors and encode the targets, one image at a time.

    gt_boxes: B tensors (N_i, 4) xyxy; gt_labels: B tensors (N_i,) int;
    priors (P, 4) cxcywh. Returns loc_targets (B, P, 4) in the priors' dtype
    (0 for background priors) and labels (B, P) int64 (0 = background).
    """
    B, P = len(gt_boxes), priors.shape[0]
    pxy = cxcywh_to_xyxy(priors)
    loc = priors.new_zeros((B, P, 4))
    labels = torch.zeros((B, P), dtype=torch.int64, device=priors.device)
    for b in range(B):
        g = gt_boxes[b].to(priors.dtype)
        n = g.shape[0]
        if n == 0 or P == 0:
            continue
        iou = box_iou(g, pxy)  # (n, P)
        best_gt = iou.argmax(0)  # first maximum: lowest GT index on ties
        best_gt_iou = iou.gather(0, best_gt[None]).squeeze(0)
        positive = best_gt_iou.to(torch.float64) >= iou_threshold
        best_prior = iou.argmax(1)  # lowest prior index on ties
        forceable = iou.max(1).values > 0
        # Forced matches, GTs in order: the last GT claiming a prior wins it.
        winner = torch.full((P,), -1, dtype=torch.int64, device=priors.device)
        winner.scatter_reduce_(
            0,
            best_prior[forceable],
            torch.arange(n, device=priors.device)[forceable],
            reduce="amax",
        )
        forced = winner >= 0
        best_gt = torch.where(forced, winner, best_gt)
        positive = positive | forced
        idx = positive.nonzero().squeeze(1)
        gi = best_gt[idx]
        labels[b, idx] = gt_labels[b].to(torch.int64)[gi]
        loc[b, idx] = ssd_encode(g[gi], priors[idx], variances)
    return loc, labels


def ssd_decode(loc: torch.Tensor, priors: torch.Tensor, variances: Sequence[float] = (0.1, 0.2)) -> torch.Tensor:
    """loc (..., P, 4) offsets, priors (P, 4) cxcywh -> boxes (..., P, 4) xyxy in loc's dtype.

    Computed in float64: cx = pcx + l0*v0*pw, w = pw*exp(l2*v1), x1 = cx - w/2, x2 = cx + w/2.
    """
    v0, v1 = variances
    l = loc.to(torch.float64)
    p = priors.to(torch.float64)
    cx = p[:, 0] + l[..., 0] * v0 * p[:, 2]
    cy = p[:, 1] + l[..., 1] * v0 * p[:, 3]
    w = p[:, 2] * torch.exp(l[..., 2] * v1)
    h = p[:, 3] * torch.exp(l[..., 3] * v1)
    out = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    return out.to(loc.dtype)


def ssd_postprocess(
    loc: torch.Tensor,
    conf: torch.Tensor,
    priors: torch.Tensor,
    score_threshold: float,
    iou_threshold: float,
    top_k: int,
    max_detections: int,
    variances: Sequence[float] = (0.1, 0.2),
) -> list[Detections]:
    """SSD detections per image: softmax, per class c >= 1 scores > threshold,
    the top_k highest, NMS; then the max_detections highest over all classes.

    loc (B, P, 4), conf (B, P, C) logits (class 0 = background), priors (P, 4).
    ``top_k`` / ``max_detections`` <= 0 mean no limit. Final order: score
    descending, then class ascending, then prior index ascending.
    """
    B, P, C = conf.shape
    probs = torch.softmax(conf, dim=-1)
    boxes = ssd_decode(loc, priors, variances)
    out = []
    for b in range(B):
        det_boxes, det_scores, det_labels = [], [], []
        for c in range(1, C):
            s = probs[b, :, c]
            cand = (s.to(torch.float64) > score_threshold).nonzero().squeeze(1)
            if cand.numel() == 0:
                continue
            order = _sort_desc(s[cand])
            if top_k > 0:
                order = order[:top_k]
            cand = cand[order]
            keep = cand[nms(boxes[b, cand], s[cand], iou_threshold)]
            det_boxes.append(boxes[b, keep])
            det_scores.append(s[keep])
            det_labels.append(torch.full((keep.numel(),), c, dtype=torch.int64, device=conf.device))
        if det_scores:
            db, ds, dl = torch.cat(det_boxes), torch.cat(det_scores), torch.cat(det_labels)
            order = _sort_desc(ds)
            if max_detections > 0:
                order = order[:max_detections]
            out.append(Detections(db[order], ds[order], dl[order]))
        else:
            out.append(
                Detections(
                    boxes.new_zeros((0, 4)),
                    probs.new_zeros((0,)),
                    torch.zeros((0,), dtype=torch.int64, device=conf.device),
                )
            )
    return out
