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

#: above this many boxes the reference NMS suppresses through a spatial grid
#: (:func:`_nms_spatial`); below, the blocked loop of :func:`nms` is as fast
_NMS_GRID_MIN = 4096
#: boxes resolved together by :func:`_nms_spatial` (one block at a time, in rank order)
_SPATIAL_BLOCK = 512
#: a box spanning more grid cells than this is kept out of the grid ("big")
_BIG_CELLS = 256
#: rounds of the vectorised resolution of a block before it finishes one box at a time
_BLOCK_ROUNDS = 16


def _pair_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of a[k] with b[k] (both (K, 4)), with the arithmetic of :func:`box_iou`."""
    area_a, area_b = box_area(a), box_area(b)
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union, torch.zeros((), dtype=inter.dtype, device=inter.device))


class _Grid:
    """Boxes (positions in rank order) bucketed by the uniform grid cells they
    cover, as a sorted CSR table ``cell key -> positions``. Two boxes with a
    positive intersection share a cell (cell indices are a monotonic function
    of the coordinates, clamped at the border). Boxes covering more than
    :data:`_BIG_CELLS` cells are left out: :attr:`big`."""

    def __init__(self, b: torch.Tensor, positions: torch.Tensor):
        g = b[positions].double().cpu()
        self.x0, self.y0 = float(g[:, 0].min()), float(g[:, 1].min())
        side = torch.maximum(g[:, 2] - g[:, 0], g[:, 3] - g[:, 1])
        m = positions.numel()
        # half the median side: fewer boxes per cell (a lookup reads whole cells), ~9 cells per box
        cell = max(float(side.median()) / 2, 1e-300)
        for _ in range(2100):  # doubling from 1e-300 reaches any finite size
            spans = self._spans(g, cell)
            cells = spans[2] * spans[3]
            big = cells > _BIG_CELLS
            if int(big.sum()) <= 64 + m // 4096 and float(cells[~big].sum()) <= 16.0 * m:
                break
            cell *= 2.0
        self.cell = cell
        cx, cy, ncx, ncy = spans
        self.big = positions[big]
        small = ~big
        cx, cy, ncx, ncy = cx[small], cy[small], ncx[small], ncy[small]
        counts = ncx * ncy
        owner = torch.repeat_interleave(torch.arange(counts.numel()), counts)
        offset = torch.arange(int(counts.sum())) - (torch.cumsum(counts, 0) - counts)[owner]
        keys = self._key(cx[owner] + offset % ncx[owner], cy[owner] + offset // ncx[owner])
        pos = positions[small].cpu()[owner]
        order = torch.sort(keys, stable=True).indices
        self._build(keys[order], pos[order])

    #: cells per axis (indices beyond are clamped to the last: still monotonic)
    _LIMIT = 2 ** 20

    def _spans(self, g: torch.Tensor, cell: float):
        """(first column, first row, columns, rows) of the cells boxes ``g`` (K, 4) float64 cover."""
        lim = float(self._LIMIT - 1)
        c1 = torch.floor((g[:, 0] - self.x0) / cell).clamp(0, lim)
        r1 = torch.floor((g[:, 1] - self.y0) / cell).clamp(0, lim)
        c2 = torch.floor((g[:, 2] - self.x0) / cell).clamp(0, lim)
        r2 = torch.floor((g[:, 3] - self.y0) / cell).clamp(0, lim)
        return c1.long(), r1.long(), (c2 - c1 + 1).long(), (r2 - r1 + 1).long()

    def _key(self, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
        return cx * self._LIMIT + cy

    def _build(self, keys: torch.Tensor, pos: torch.Tensor) -> None:
        self.keys, counts = torch.unique_consecutive(keys, return_counts=True)
        self.starts = torch.cumsum(counts, 0) - counts
        self.counts = counts
        self.pos = pos

    def compact(self, keep: torch.Tensor) -> None:
        """Drop the entries whose position is not in ``keep`` (a bool mask over positions)."""
        sel = keep[self.pos]
        run = torch.repeat_interleave(self.keys, self.counts)
        self._build(run[sel], self.pos[sel])
        self.big = self.big[keep[self.big]]

    def wide(self, boxes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        """(K,) bool: the queries :meth:`lookup` leaves out, whose region
        spans more than :data:`_BIG_CELLS` cells."""
        g = self._query_regions(boxes, iou_threshold)
        _, _, ncx, ncy = self._spans(g, self.cell)
        return ncx * ncy > _BIG_CELLS

    @staticmethod
    def _query_regions(boxes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        """(K, 4) float64: where a box overlapping each of ``boxes`` with IoU >
        threshold must reach (see :meth:`lookup`)."""
        g = boxes.double().cpu()
        t = max(0.0, min(float(iou_threshold), 1.0) - 1e-4)
        w, h = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
        lo_x, hi_x = g[:, 0] + t * w, g[:, 2] - t * w
        lo_y, hi_y = g[:, 1] + t * h, g[:, 3] - t * h
        mid_x, mid_y = (g[:, 0] + g[:, 2]) / 2, (g[:, 1] + g[:, 3]) / 2
        lo_x, hi_x = torch.minimum(lo_x, mid_x) - 1e-6 * w, torch.maximum(hi_x, mid_x) + 1e-6 * w
        lo_y, hi_y = torch.minimum(lo_y, mid_y) - 1e-6 * h, torch.maximum(hi_y, mid_y) + 1e-6 * h
        return torch.stack([lo_x, lo_y, hi_x, hi_y], 1)

    def lookup(self, boxes: torch.Tensor, iou_threshold: float) -> "tuple[torch.Tensor, torch.Tensor]":
        """(query index, cell) for every non-empty cell that may hold a box
        overlapping one of ``boxes`` (K, 4) with IoU > ``iou_threshold``;
        :meth:`expand` lists the cells' boxes.

        IoU(k, j) > t needs an intersection wider than t * w_k (as inter > t *
        area_k and its height is at most h_k), so box j reaches into k shrunk
        by t * w_k on each side (by t * h_k vertically): for t >= 0.5, k's
        centre. Only the cells of that region are looked up (with a margin
        for the rounding of a float IoU); a query whose region spans more than
        :data:`_BIG_CELLS` cells is left out (:meth:`wide`)."""
        g = self._query_regions(boxes, iou_threshold)
        cx, cy, ncx, ncy = self._spans(g, self.cell)
        counts = torch.where(ncx * ncy > _BIG_CELLS, 0, ncx * ncy)
        q = torch.repeat_interleave(torch.arange(g.shape[0]), counts)
        if self.keys.numel() == 0 or q.numel() == 0:
            return q[:0], q[:0]
        offset = torch.arange(int(counts.sum())) - (torch.cumsum(counts, 0) - counts)[q]
        keys = self._key(cx[q] + offset % ncx[q], cy[q] + offset // ncx[q])
        idx = torch.searchsorted(self.keys, keys).clamp(max=self.keys.numel() - 1)
        found = self.keys[idx] == keys
        return q[found], idx[found]

    def size(self, cells: torch.Tensor) -> int:
        """How many entries :meth:`expand` would list for these cells."""
        return int(self.counts[cells].sum())

    def expand(self, q: torch.Tensor, cells: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor]":
        """(query index, position) for every box of the looked-up cells (a pair may repeat)."""
        n = self.counts[cells]
        owner = torch.repeat_interleave(torch.arange(q.numel()), n)
        within = torch.arange(int(n.sum())) - (torch.cumsum(n, 0) - n)[owner]
        return q[owner], self.pos[self.starts[cells][owner] + within]


def _resolve_block(s: torch.Tensor) -> torch.Tensor:
    """Greedy NMS inside a block from its suppression matrix ``s`` (B, B)
    bool, ``s[i, j]``: box i suppresses box j (i < j). Returns the kept mask.
    Vectorised rounds (each keeps every box no undecided box above it can
    suppress, and drops what they suppress), then one box at a time if the
    block's suppression chains are long."""
    n = s.shape[0]
    undecided = torch.ones(n, dtype=torch.bool, device=s.device)
    kept = torch.zeros(n, dtype=torch.bool, device=s.device)
    if not bool(s.any()):
        return ~kept
    for _ in range(_BLOCK_ROUNDS):
        sure = undecided & ~(s & undecided[:, None]).any(0)
        kept |= sure
        undecided &= ~sure
        undecided &= ~(s & sure[:, None]).any(0)
        if not bool(undecided.any()):
            return kept
    rest = undecided.nonzero().squeeze(1).tolist()
    alive = dict.fromkeys(rest, True)
    rows = s[rest][:, rest].tolist() if rest else []
    for a, i in enumerate(rest):
        if not alive[i]:
            continue
        kept[i] = True
        for c in range(a + 1, len(rest)):
            if rows[a][c]:
                alive[rest[c]] = False
    return kept


def _nms_spatial(b: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS of boxes ``b`` (n, 4) already in rank order -> kept positions.

    Blocks of :data:`_SPATIAL_BLOCK` undecided boxes are taken in rank order.
    One grid lookup (:class:`_Grid`: IoU > threshold >= 0 needs a positive
    intersection, hence a shared cell) gives the pairs (i in the block, j
    undecided after i) with IoU > threshold; the pairs inside the block are
    resolved greedily (:func:`_resolve_block`), and the boxes the block keeps
    suppress their later partners. Boxes with no positive finite area have
    IoU 0 with everything (never suppress, never suppressed). The same result
    as the plain greedy loop, in about O(n + near pairs) for boxes of similar
    sizes however dense: decided boxes leave the grid as the walk goes."""
    n = b.shape[0]
    dev = b.device
    area = box_area(b)
    valid = (torch.isfinite(b).all(1) & (area > 0) & torch.isfinite(area)).cpu()
    vpos = valid.nonzero().squeeze(1)
    keep = ~valid  # the boxes that never interact are kept
    if vpos.numel() < 2:
        keep[vpos] = True
        return keep.nonzero().squeeze(1).to(dev)
    alive = valid.clone()  # undecided: neither kept yet nor suppressed
    grid = _Grid(b, vpos)
    cursor = 0  # every position before it is decided (alive is False there)
    in_grid, gone = vpos.numel(), 0  # boxes in the grid, and how many of them were decided since
    while cursor < n:
        block = _next_live(alive, cursor, _SPATIAL_BLOCK)
        if block.numel() == 0:
            break
        last = int(block[-1])
        boxes = b[block.to(dev)]
        q, cells = grid.lookup(boxes, iou_threshold)
        if grid.size(cells) <= block.numel() ** 2 // 2:
            # sparse block: one lookup gives the pairs inside the block and after it
            i, j = _near_pairs(b, grid, block, q, cells, alive, iou_threshold)
            inside = j <= last  # an undecided position up to the block's last is in the block
            s = torch.zeros(block.numel(), block.numel(), dtype=torch.bool)
            s[i[inside], torch.searchsorted(block, j[inside])] = True
            won = _resolve_block(s)
            later = ~inside & won[i]
            dead = j[later]
        else:  # dense block: resolve it by its IoU matrix, then look up the kept boxes only
            won = _resolve_block((box_iou(boxes, boxes).to(torch.float64) > iou_threshold).triu(1).cpu())
            kept = block[won]
            q, cells = grid.lookup(b[kept.to(dev)], iou_threshold)
            _, dead = _near_pairs(b, grid, kept, q, cells, alive, iou_threshold)
            dead = dead[dead > last]
        keep[block[won]] = True
        alive[block] = False  # decided
        alive[dead] = False
        gone += block.numel() + dead.numel()
        cursor = last + 1
        # drop the decided and suppressed boxes from the grid once they are most of it
        if 2 * gone > in_grid and cursor < n:
            grid.compact(alive)
            in_grid, gone = int(alive.sum()), 0
    return keep.nonzero().squeeze(1).to(dev)


def _next_live(alive: torch.Tensor, cursor: int, count: int) -> torch.Tensor:
    """The first ``count`` positions >= ``cursor`` still undecided."""
    found, total, start, step = [], 0, cursor, 4 * count
    n = alive.numel()
    while start < n and total < count:
        chunk = alive[start:start + step].nonzero().squeeze(1) + start
        found.append(chunk)
        total += chunk.numel()
        start += step
        step *= 2
    return torch.cat(found)[:count] if found else torch.zeros(0, dtype=torch.int64)


def _near_pairs(b: torch.Tensor, grid: _Grid, block: torch.Tensor, q: torch.Tensor, cells: torch.Tensor,
                alive: torch.Tensor, iou_threshold: float) -> "tuple[torch.Tensor, torch.Tensor]":
    """(i, j): ``block[i]`` overlaps the undecided box at position ``j >
    block[i]`` with IoU > threshold, every such pair, from the grid cells
    ``grid.lookup`` gave (``q``, ``cells``), the boxes outside the grid, and
    the queries too wide for a lookup (a pair may repeat)."""
    dev = b.device
    boxes = b[block.to(dev)]
    q, pos = grid.expand(q, cells)
    if grid.big.numel():  # the undecided boxes outside the grid face every box of the block
        big = grid.big[alive[grid.big]]
        if big.numel():
            q = torch.cat([q, torch.arange(block.numel()).repeat_interleave(big.numel())])
            pos = torch.cat([pos, big.repeat(block.numel())])
    sel = alive[pos] & (pos > block[q])
    q, pos = q[sel], pos[sel]
    if pos.numel():
        over = (_pair_iou(boxes[q.to(dev)], b[pos.to(dev)]).to(torch.float64) > iou_threshold).cpu()
        q, pos = q[over], pos[over]
    for k in grid.wide(boxes, iou_threshold).nonzero().squeeze(1).tolist():
        start = int(block[k]) + 1  # a box whose region covers much of the grid faces every later box
        later = start + alive[start:].nonzero().squeeze(1)
        if later.numel() == 0:
            continue
        over = (_pair_iou(boxes[k:k + 1].expand(later.numel(), 4), b[later.to(dev)]).to(torch.float64)
                > iou_threshold).cpu()
        hits = later[over]
        q = torch.cat([q, torch.full((hits.numel(),), k, dtype=torch.int64)])
        pos = torch.cat([pos, hits])
    return q, pos


def _sort_desc(scores: torch.Tensor) -> torch.Tensor:
    """Indices by decreasing score, lower index first on ties (NaN sorts first)."""
    return torch.sort(scores, descending=True, stable=True).indices


def _scored(scores: torch.Tensor) -> "torch.Tensor | None":
    """The indices of the non-NaN scores when some are NaN, else None."""
    nan = torch.isnan(scores)
    if not bool(nan.any()):
        return None
    return (~nan).nonzero().squeeze(1)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS. boxes (N, 4) xyxy, scores (N,) -> kept indices (K,) int64 by decreasing score.

    A box is suppressed by a kept, higher-ranked box when their IoU > iou_threshold.
    A box whose score is NaN is dropped: never kept, never suppresses (it
    would otherwise rank first, torch.sort's place for NaN, and hide the boxes
    it overlaps).
    Boxes are visited in rank order by blocks: a block is first checked against
    every box kept so far (one vectorised IoU), then resolved greedily inside.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    scored = _scored(scores)
    if scored is not None:  # a NaN score is no score: never kept, never suppresses
        return scored[nms(boxes[scored], scores[scored], iou_threshold)]
    order = _sort_desc(scores)
    b = boxes[order]
    if n > _NMS_GRID_MIN and iou_threshold >= 0:
        return order[_nms_spatial(b, iou_threshold)]
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
    scored = _scored(scores)
    if scored is not None:
        return scored[batched_nms(boxes[scored], scores[scored], idxs[scored], iou_threshold)]
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
