"""Independent brute-force oracles for mtlkit.ops, in plain Python floats (IEEE double).

Written from the contract (DESIGN.md section 3), not from the implementation:
used on float64 tensors, where Python's float arithmetic is the same arithmetic.
"""

from __future__ import annotations

import math


def area(b):
    return max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0) if not any(map(math.isnan, b)) else math.nan


def iou(a, b):
    if any(map(math.isnan, a)) or any(map(math.isnan, b)):
        return 0.0
    w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = w * h
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def rank(scores):
    """Decreasing score, NaN first, lower index first on ties."""
    return sorted(range(len(scores)), key=lambda i: (0 if math.isnan(scores[i]) else 1, -scores[i] if not math.isnan(scores[i]) else 0, i))


def nms(boxes, scores, thr):
    """A NaN score is no score: dropped before ranking."""
    kept = []
    for i in rank(scores):
        if math.isnan(scores[i]):
            continue
        if all(not (iou(boxes[k], boxes[i]) > thr) for k in kept):
            kept.append(i)
    return kept


def batched_nms(boxes, scores, idxs, thr):
    kept = []
    for g in set(idxs):
        members = [i for i in range(len(boxes)) if idxs[i] == g]
        kept += [members[k] for k in nms([boxes[i] for i in members], [scores[i] for i in members], thr)]
    order = rank(scores)
    pos = {i: r for r, i in enumerate(order)}
    return sorted(kept, key=lambda i: pos[i])


def prior_xyxy(p):
    return [p[0] - p[2] / 2, p[1] - p[3] / 2, p[0] + p[2] / 2, p[1] + p[3] / 2]


def encode(g, p, v):
    gcx, gcy = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
    return [
        (gcx - p[0]) / (p[2] * v[0]),
        (gcy - p[1]) / (p[3] * v[0]),
        math.log((g[2] - g[0]) / p[2]) / v[1],
        math.log((g[3] - g[1]) / p[3]) / v[1],
    ]


def ssd_match(gt_boxes, gt_labels, priors, thr, v):
    """Returns (loc, labels) as nested lists."""
    P = len(priors)
    pxy = [prior_xyxy(p) for p in priors]
    all_loc, all_lab = [], []
    for gts, labs in zip(gt_boxes, gt_labels):
        loc = [[0.0] * 4 for _ in range(P)]
        lab = [0] * P
        if gts:
            ious = [[iou(g, q) for q in pxy] for g in gts]
            match = [None] * P
            for p in range(P):
                best = max(range(len(gts)), key=lambda g: (ious[g][p], -g))
                if ious[best][p] >= thr:
                    match[p] = best
            for g in range(len(gts)):
                m = max(ious[g])
                if m > 0:
                    match[min(p for p in range(P) if ious[g][p] == m)] = g
            for p in range(P):
                if match[p] is not None:
                    lab[p] = labs[match[p]]
                    loc[p] = encode(gts[match[p]], priors[p], v)
        all_loc.append(loc)
        all_lab.append(lab)
    return all_loc, all_lab


def decode(l, p, v):
    cx = p[0] + l[0] * v[0] * p[2]
    cy = p[1] + l[1] * v[0] * p[3]
    w = p[2] * math.exp(l[2] * v[1])
    h = p[3] * math.exp(l[3] * v[1])
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def postprocess(boxes, probs, score_thr, iou_thr, top_k, max_det):
    """One image: boxes (P) decoded, probs (P x C) -> list of (score, label, prior)."""
    dets = []
    C = len(probs[0])
    for c in range(1, C):
        cand = [p for p in range(len(boxes)) if probs[p][c] > score_thr]
        cand.sort(key=lambda p: (-probs[p][c], p))
        if top_k > 0:
            cand = cand[:top_k]
        keep = nms([boxes[p] for p in cand], [probs[p][c] for p in cand], iou_thr)
        dets += [(probs[cand[k]][c], c, cand[k]) for k in keep]
    dets.sort(key=lambda d: (-d[0], d[1], d[2]))
    return dets[:max_det] if max_det > 0 else dets
