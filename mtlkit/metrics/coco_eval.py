"""COCO bbox mAP, vectorised with numpy, giving the same figures as pycocotools' COCOeval.

The rules reproduced (pycocotools 2.0, iouType='bbox', default parameters):

* IoU thresholds linspace(.5, .95, 10), recall points linspace(0, 1, 101), maxDets
  (1, 10, 100), area ranges all [0, 1e10], small [0, 32²], medium [32², 96²], large
  [96², 1e10] (both ends inclusive; GT area is the annotation's ``area``, a
  detection's is w*h).
* Per (image, category): detections sorted by decreasing score with a *stable* sort
  (ties keep input order) and cut to 100; ``maxDets`` m keeps the first m of them.
* IoU as pycocotools' C ``bbIou``: for a crowd GT the union is the detection's area.
* Greedy matching per (image, category, area range, IoU threshold), detections in
  score order: a detection takes, among GTs not yet taken (crowd GTs can be taken
  again) with IoU >= t, a non-ignored GT first, the highest IoU next, and on equal
  IoU the *later* GT in annotation order. GTs are ignored when crowd or outside the
  area range; a detection matched to an ignored GT, or unmatched and outside the
  area range, is ignored. A match with a GT whose annotation id is 0 counts as no
  match (pycocotools stores the GT id and tests it for non-zero).
* Accumulation per (category, area, maxDets): the detections of all images
  (images in id order, each in its score order) stably sorted by decreasing score;
  precision made monotone from the right; precision read at the first index whose
  recall >= each recall point (0 past the end); -1 where the category has no
  non-ignored GT in that area range.

How it is fast: IoUs are only computed for (detection, GT) pairs of the same image
and category, all at once; only pairs with IoU >= 0.5 take part in matching. The
greedy matching is sequential only within one (image, category), so the loop runs
over the *rank* of detections (at most 100 steps), each step matching the rank-r
detection of every (image, category) at once, for the 4 area ranges x 10
thresholds together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from mtlkit.metrics.coco_format import CocoResults, GroundTruth, _index_of, load_detections, load_ground_truth
from mtlkit.errors import DataError

#: the exact arrays pycocotools uses (np.arange would differ in the last bits)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0.0**2, 1e5**2), (0.0**2, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
AREA_LABELS = ("all", "small", "medium", "large")

#: (name, is_ap, iou threshold or None, area label, maxDets): pycocotools' 12 summary figures
SUMMARY = (
    ("AP", True, None, "all", 100),
    ("AP50", True, 0.5, "all", 100),
    ("AP75", True, 0.75, "all", 100),
    ("APs", True, None, "small", 100),
    ("APm", True, None, "medium", 100),
    ("APl", True, None, "large", 100),
    ("AR1", False, None, "all", 1),
    ("AR10", False, None, "all", 10),
    ("AR100", False, None, "all", 100),
    ("ARs", False, None, "small", 100),
    ("ARm", False, None, "medium", 100),
    ("ARl", False, None, "large", 100),
)


@dataclass
class CocoEvalResult:
    """The accumulated evaluation, laid out like pycocotools' ``COCOeval.eval``.

    Attributes:
        precision: (T=10, R=101, K, A=4, M=3) float64, -1 where undefined.
        recall: (T, K, A, M) float64, -1 where undefined.
        cat_ids: the K category ids, sorted (the K axis).
    """

    precision: np.ndarray
    recall: np.ndarray
    cat_ids: List = field(default_factory=list)

    def _mean(self, is_ap: bool, iou, area: str, max_det: int, k=slice(None)) -> float:
        a = AREA_LABELS.index(area)
        m = MAX_DETS.index(max_det)
        s = self.precision[:, :, k, a, m] if is_ap else self.recall[:, k, a, m]
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        s = s[s > -1]
        return float(np.mean(s)) if s.size else -1.0

    def stats(self) -> Dict[str, float]:
        """The 12 summary figures of ``COCOeval.summarize`` by name (AP, AP50, ..., ARl)."""
        return {name: self._mean(ap, iou, area, md) for name, ap, iou, area, md in SUMMARY}

    def per_class(self) -> Dict:
        """category id -> AP@[.5:.95] (area all, 100 detections); -1 without GT."""
        return {
            (c.item() if hasattr(c, "item") else c): self._mean(True, None, "all", 100, k)
            for k, c in enumerate(self.cat_ids)
        }


def _pair_iou(dbox: np.ndarray, gbox: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired [x, y, w, h] boxes with the exact arithmetic of pycocotools' bbIou."""
    w = np.minimum(dbox[:, 2] + dbox[:, 0], gbox[:, 2] + gbox[:, 0]) - np.maximum(dbox[:, 0], gbox[:, 0])
    h = np.minimum(dbox[:, 3] + dbox[:, 1], gbox[:, 3] + gbox[:, 1]) - np.maximum(dbox[:, 1], gbox[:, 1])
    inter = w * h
    da = dbox[:, 2] * dbox[:, 3]
    ga = gbox[:, 2] * gbox[:, 3]
    union = np.where(crowd, da, da + ga - inter)
    ok = (w > 0) & (h > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def _ragged_pairs(starts: np.ndarray, ends: np.ndarray):
    """For rows with ranges [starts[i], ends[i]): (row index, column index) of every pair."""
    counts = ends - starts
    total = int(counts.sum())
    rows = np.repeat(np.arange(len(starts)), counts)
    offsets = np.cumsum(counts) - counts
    cols = np.arange(total) - np.repeat(offsets - starts, counts)
    return rows, cols


def _stable_argsort(keys, sizes) -> np.ndarray:
    """Stable argsort by several non-negative integer keys (first = primary), each below
    its size: one sort on a composite int64 key, or lexsort when that could overflow."""
    total = 1
    for size in sizes:
        total *= max(int(size), 1)
    if total >= 2**62:
        return np.lexsort(tuple(reversed(keys)))
    composite = np.zeros(len(keys[0]), dtype=np.int64)
    for key, size in zip(keys, sizes):
        composite = composite * max(int(size), 1) + key
    return np.argsort(composite, kind="stable")


def _match(
    rank: np.ndarray,
    pair_det: np.ndarray,
    pair_gt: np.ndarray,
    pair_iou: np.ndarray,
    gt_ignore: np.ndarray,
    gt_crowd: np.ndarray,
    n_gt: int,
) -> np.ndarray:
    """Greedy matching of the detections that have candidate GTs.

    Args:
        rank: (nc,) rank of each such detection within its (image, category).
        pair_det, pair_gt, pair_iou: (P,) candidate pairs (same image and category,
            IoU >= 0.5): detection in 0..nc-1, GT index, IoU.
        gt_ignore: (n_gt, A) ignore flag of every GT per area range; gt_crowd (n_gt,).

    Returns:
        (nc, A, T) int64: the GT each detection is matched to, or -1.
    """
    nc = len(rank)
    A, T = gt_ignore.shape[1], len(IOU_THRESHOLDS)
    match = np.full((nc, A, T), -1, dtype=np.int64)
    if len(pair_det) == 0:
        return match
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    # pairs ordered by (rank of the detection, detection): one step is one slice
    order = _stable_argsort([rank[pair_det], pair_det], [int(rank.max()) + 1, nc])
    pd, pg, piou = pair_det[order], pair_gt[order], pair_iou[order]
    P = len(pd)
    first = np.ones(P, dtype=bool)
    first[1:] = pd[1:] != pd[:-1]
    # Preference among a detection's candidates, per area range (lower = preferred):
    # non-ignored first, then higher IoU, then the later GT. Only needed for the
    # (few) detections with several candidates.
    prio = np.zeros((P, A), dtype=np.int64)
    n_cand = np.bincount(pd, minlength=nc)
    multi = np.flatnonzero(n_cand[pd] > 1)
    for a in range(A):
        o = np.lexsort((-pg[multi], -piou[multi], gt_ignore[pg[multi], a], pd[multi]))
        prio[multi[o], a] = np.arange(len(multi))
    iou_ok = piou[:, None] >= thr[None, :]  # (P, T)
    crowd_p = gt_crowd[pg]
    ranks = rank[pd]
    bounds = np.flatnonzero(np.r_[True, ranks[1:] != ranks[:-1], True])
    taken = np.zeros((n_gt, A, T), dtype=bool)
    big = np.iinfo(np.int64).max
    for s, e in zip(bounds[:-1], bounds[1:]):
        g = pg[s:e]
        busy = taken[g]
        busy[crowd_p[s:e]] = False  # crowd GTs can match many detections
        avail = iou_ok[s:e, None, :] & ~busy  # (p, A, T)
        starts = np.flatnonzero(first[s:e])
        if len(starts) == e - s:  # one candidate per detection: it wins where available
            win = avail
            dets = pd[s:e]
            best_g = np.where(win, g[:, None, None], -1)
        else:
            key = np.where(avail, prio[s:e, :, None], big)
            best = np.minimum.reduceat(key, starts, axis=0)
            seg = np.cumsum(first[s:e]) - 1
            win = avail & (key == best[seg])
            dets = pd[s:e][starts]
            best_g = np.maximum.reduceat(np.where(win, g[:, None, None], -1), starts, axis=0)
        taken[g] |= win  # GTs within one step are distinct (one detection per image+category)
        match[dets] = best_g
    return match


def evaluate(gt, detections) -> CocoEvalResult:
    """Run the evaluation (pycocotools' ``evaluate`` + ``accumulate``).

    Args:
        gt: COCO ground-truth dict, JSON path, or :class:`GroundTruth`.
        detections: list of COCO results, JSON path, or :class:`CocoResults`.

    Raises:
        DataError: malformed input, or a detection on an image absent from ``gt``.
    """
    gt = load_ground_truth(gt)
    dt = load_detections(detections)
    I, K = len(gt.image_ids), len(gt.cat_ids)
    T, R, A, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(MAX_DETS)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    result = CocoEvalResult(precision, recall, list(gt.cat_ids))
    if I == 0 or K == 0:
        return result
    lo = np.array([r[0] for r in AREA_RANGES])
    hi = np.array([r[1] for r in AREA_RANGES])

    # -- detections: known categories, sorted per (image, category) by score, top 100
    d_img = _index_of(dt.image_ids, gt.image_ids)
    if (d_img < 0).any():
        bad = dt.image_ids[int(np.flatnonzero(d_img < 0)[0])]
        raise DataError(f"detection on image id {bad!r}, which is not an image of the ground truth")
    d_cat = _index_of(dt.cat_ids, gt.cat_ids)
    keep = np.flatnonzero(d_cat >= 0)
    d_img, d_cat = d_img[keep], d_cat[keep]
    d_score = dt.scores[keep]
    # dense rank of the scores (equal scores share a rank), reused by both sorts
    uniq, s_rank = np.unique(-d_score, return_inverse=True)
    s_rank = s_rank.reshape(-1)
    order = _stable_argsort([d_img, d_cat, s_rank], [I, K, len(uniq)])  # stable: ties keep input order
    d_group = (d_img * K + d_cat)[order]
    n = len(order)
    new = np.flatnonzero(np.r_[True, d_group[1:] != d_group[:-1]]) if n else np.zeros(0, np.int64)
    d_rank = np.arange(n) - np.repeat(new, np.diff(np.r_[new, n]))
    top = d_rank < MAX_DETS[-1]
    order, d_group, d_rank = order[top], d_group[top], d_rank[top]
    d_img, d_cat, s_rank = d_img[order], d_cat[order], s_rank[order]
    d_box = dt.boxes[keep[order]]
    nd = len(order)

    # -- ground truth sorted per (image, category), keeping annotation order
    g_order = _stable_argsort([gt.image, gt.category], [I, K])
    g_cat = gt.category[g_order]
    g_group = gt.image[g_order] * K + g_cat
    g_box, g_area = gt.boxes[g_order], gt.area[g_order]
    g_crowd, g_id = gt.iscrowd[g_order], gt.ann_ids[g_order]
    g_ignore = g_crowd[:, None] | (g_area[:, None] < lo) | (g_area[:, None] > hi)  # (G, A)

    # -- IoU of every same-(image, category) pair; keep those that can match
    rows, cols = _ragged_pairs(
        np.searchsorted(g_group, d_group, side="left"), np.searchsorted(g_group, d_group, side="right")
    )
    iou = _pair_iou(d_box[rows], g_box[cols], g_crowd[cols])
    cand = iou >= IOU_THRESHOLDS[0]
    pair_det, pair_gt, pair_iou = rows[cand], cols[cand], iou[cand]

    # -- greedy matching, only for the detections that have a candidate GT
    c_det, pair_local = np.unique(pair_det, return_inverse=True)
    match = _match(d_rank[c_det], pair_local.reshape(-1), pair_gt, pair_iou, g_ignore, g_crowd, len(g_id))

    # -- their flags, laid out (A*T, nc); every other detection is matched to nothing:
    # a false positive inside the area range, ignored outside it
    d_area = d_box[:, 2] * d_box[:, 3]
    d_out = (d_area[:, None] < lo) | (d_area[:, None] > hi)  # (nd, A)
    match = match.transpose(1, 2, 0)  # (A, T, nc)
    matched = match >= 0
    mg = np.maximum(match, 0)
    is_match = matched & (g_id[mg] != 0)
    ignored = matched & g_ignore[mg, np.arange(A)[:, None, None]]
    ignored |= ~is_match & d_out[c_det].T[:, None, :]
    nc = len(c_det)
    c_tp = (is_match & ~ignored).reshape(A * T, nc)
    c_fp = (~is_match & ~ignored).reshape(A * T, nc)

    # -- accumulate per category: all images' detections stably sorted by score
    acc = _stable_argsort([d_cat, s_rank], [K, len(uniq)])  # ties: image order, then rank
    cand_row = np.full(nd, -1, dtype=np.int64)
    cand_row[c_det] = np.arange(nc)
    cand_row, d_cat_s, d_rank_s = cand_row[acc], d_cat[acc], d_rank[acc]
    plain_fp = (cand_row < 0)[:, None] & ~d_out[acc]  # (nd, A)
    npig = np.stack([np.bincount(g_cat, weights=~g_ignore[:, a], minlength=K) for a in range(A)], axis=1)
    npig = npig.astype(np.int64)
    vmin = _recall_levels(npig)
    undefined = (npig == 0)[None, :, :]  # (1, K, A)
    for m, max_det in enumerate(MAX_DETS):
        sel = d_rank_s < max_det
        q, rc = _precision_recall(cand_row[sel], d_cat_s[sel], plain_fp[sel], c_tp, c_fp, npig, vmin)
        # q (K, A, T, R) -> (T, R, K, A); rc (K, A, T) -> (T, K, A)
        precision[..., m] = np.where(undefined[None], -1.0, q.transpose(2, 3, 0, 1))
        recall[..., m] = np.where(undefined, -1.0, rc.transpose(2, 0, 1))
    return result


def _recall_levels(npig: np.ndarray) -> np.ndarray:
    """(K, A) GT counts -> (K, A, R) least TP count v whose recall v/npig (the same float
    division pycocotools does) reaches each recall point."""
    K, A = npig.shape
    out = np.zeros((K, A, len(RECALL_THRESHOLDS)), dtype=np.int64)
    for k, a in zip(*np.nonzero(npig)):
        levels = np.arange(npig[k, a] + 1) / float(npig[k, a])
        out[k, a] = np.searchsorted(levels, RECALL_THRESHOLDS, side="left")
    return out


def _segmented_cumsum(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Cumulative sum along axis 1 of (C, n) ``x``, restarting at each of ``starts``
    (sorted positions of the non-empty segments' first columns). Exact (integers)."""
    inc = x.astype(np.int32)  # int32: numpy's int64/float cumsums along rows are far slower
    if len(starts) > 1:
        totals = np.add.reduceat(inc, starts, axis=1)  # (C, S)
        inc[:, starts[1:]] -= totals[:, :-1]
    return np.cumsum(inc, axis=1, dtype=np.int32)


def _precision_recall(cand_row, cat, plain_fp, c_tp, c_fp, npig, vmin):
    """Precision at the recall points and final recall of every category, one maxDets.

    Args:
        cand_row: (n,) detections in accumulation order (category, then decreasing
            score, stable): column of ``c_tp``/``c_fp`` for detections with a candidate
            GT, -1 for the others ("plain" detections, matched to nothing).
        cat: (n,) their category index (sorted).
        plain_fp: (n, A) plain detections' flag "false positive" (inside the area range).
        c_tp, c_fp: (A*T, nc) TP / FP flags of the candidate detections.
        npig: (K, A) non-ignored GT counts; vmin: (K, A, R) from :func:`_recall_levels`.

    Returns:
        precision (K, A, T, R) and recall (K, A, T); meaningless where npig == 0.

    Only the candidate detections are expanded to (A, T) columns: between two of them
    the plain detections only add false positives, counted by one cumulative sum per
    area range. Precision is made monotone from the right; as it only rises at a TP,
    its running maximum over the candidate rows equals that over all rows at every
    TP, and the precision at a recall point is read at a TP (the v-th), or at row 0
    for recall 0, where the maximum over all rows is the one over candidate rows.
    """
    K, A = npig.shape
    C = c_tp.shape[0]
    T = C // A
    R = vmin.shape[2]
    is_c = cand_row >= 0
    rows, ccat = cand_row[is_c], cat[is_c]
    nc = len(rows)
    q = np.zeros((K, C, R))
    rc = np.zeros((K, C))
    if nc == 0:
        return q.reshape(K, A, T, R), rc.reshape(K, A, T)
    # plain false positives since the previous candidate row of the same category
    seg = np.searchsorted(cat, np.arange(K + 1))
    cs = np.concatenate([np.zeros((1, A), np.int32), np.cumsum(plain_fp, axis=0, dtype=np.int32)])
    fp_before = cs[1:][is_c] - cs[seg[ccat]]  # (nc, A), within the category
    cseg = np.searchsorted(ccat, np.arange(K + 1))
    nonempty = np.flatnonzero(np.diff(cseg))
    gap = np.diff(np.concatenate([np.zeros((1, A), np.int32), fp_before]), axis=0)
    gap[cseg[nonempty]] = fp_before[cseg[nonempty]]
    tps = c_tp[:, rows]  # (C, nc)
    tp = _segmented_cumsum(tps, cseg[nonempty]).astype(float)
    fp = _segmented_cumsum(c_fp[:, rows] + np.repeat(gap.T, T, axis=0), cseg[nonempty]).astype(float)
    pr = tp / (fp + tp + np.spacing(1))
    for k in nonempty:
        s, e = cseg[k], cseg[k + 1]
        pr[:, s:e] = np.maximum.accumulate(pr[:, s:e][:, ::-1], axis=1)[:, ::-1]
    rc[nonempty] = tp[:, cseg[nonempty + 1] - 1].T / np.repeat(npig[nonempty], T, axis=1).clip(1)
    # position of the v-th TP of each (category, column): TPs listed column by column
    col, pos = np.nonzero(tps)
    ntp = np.bincount(ccat[pos] * C + col, minlength=K * C).reshape(K, C)
    first_tp = np.cumsum(ntp, axis=0) - ntp + (np.cumsum(ntp.sum(0)) - ntp.sum(0))[None, :]  # (K, C)
    v = np.repeat(vmin, T, axis=1)  # (K, C, R)
    reach = (v <= ntp[:, :, None]) & (np.diff(cseg) > 0)[:, None, None]  # else precision 0
    at = pos[np.clip(first_tp[:, :, None] + v - 1, 0, max(len(pos) - 1, 0))] if len(pos) else np.zeros_like(v)
    row = np.where(v == 0, np.minimum(cseg[:-1], nc - 1)[:, None, None], at)
    q = np.where(reach, pr[np.arange(C)[None, :, None], row], 0.0)
    return q.reshape(K, A, T, R), rc.reshape(K, A, T)


def coco_map(gt, detections) -> Dict:
    """COCO bbox mAP of ``detections`` against ``gt``, identical to pycocotools' COCOeval.

    Args:
        gt: COCO ground-truth dict (``images``, ``annotations`` with ``bbox`` [x,y,w,h],
            ``area``, ``iscrowd``, ``category_id``; ``categories``), or its JSON path.
        detections: list of ``{image_id, category_id, bbox [x,y,w,h], score}``, or its
            JSON path. Detections of categories absent from ``gt['categories']`` are
            dropped; on images absent from ``gt['images']`` they raise DataError.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs",
        "ARm", "ARl"}`` as floats in [0, 1] (-1 where pycocotools gives -1: no GT in
        that area range), and ``"per_class"``: category id -> AP@[.5:.95] (-1 for a
        category without GT).
    """
    res = evaluate(gt, detections)
    out: Dict = dict(res.stats())
    out["per_class"] = res.per_class()
    return out
