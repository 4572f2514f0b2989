"""Inputs shared by the ops benchmarks (also runnable with another torch, e.g. the CUDA venv)."""

from __future__ import annotations

import math

import torch


def ssd300_priors() -> torch.Tensor:
    """The 8732 SSD300 priors (cx, cy, w, h), normalised, as in the SSD paper."""
    fmaps = [38, 19, 10, 5, 3, 1]
    steps = [8, 16, 32, 64, 100, 300]
    sizes = [30, 60, 111, 162, 213, 264, 315]
    ratios = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    out = []
    for k, f in enumerate(fmaps):
        s = sizes[k] / 300
        s2 = math.sqrt(s * sizes[k + 1] / 300)
        for i in range(f):
            for j in range(f):
                cx, cy = (j + 0.5) * steps[k] / 300, (i + 0.5) * steps[k] / 300
                out += [[cx, cy, s, s], [cx, cy, s2, s2]]
                for r in ratios[k]:
                    q = math.sqrt(r)
                    out += [[cx, cy, s * q, s / q], [cx, cy, s / q, s * q]]
    return torch.tensor(out, dtype=torch.float32).clamp(0, 1)


def random_boxes(n: int, seed: int = 0, extent: float = 1000.0, max_size: float = 100.0) -> tuple:
    """n boxes with corners in [0, extent] and sides in [1, max_size], scores in [0, 1)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * (max_size - 1) + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


def random_gt(batch: int, seed: int = 0, max_objects: int = 12) -> tuple:
    """Per image 1..max_objects GT boxes (xyxy in [0, 1]) and labels in 1..20."""
    g = torch.Generator().manual_seed(seed)
    boxes, labels = [], []
    for _ in range(batch):
        n = int(torch.randint(1, max_objects + 1, (), generator=g))
        xy = torch.rand(n, 2, generator=g) * 0.8
        wh = torch.rand(n, 2, generator=g) * 0.5 + 0.02
        boxes.append(torch.cat([xy, (xy + wh).clamp(max=1.0)], 1))
        labels.append(torch.randint(1, 21, (n,), generator=g))
    return boxes, labels


def random_head(batch: int, priors: torch.Tensor, classes: int = 21, seed: int = 0) -> tuple:
    """SSD head outputs: loc (B, P, 4) offsets and conf (B, P, C) logits."""
    g = torch.Generator().manual_seed(seed)
    p = priors.shape[0]
    loc = torch.randn(batch, p, 4, generator=g) * 0.5
    conf = torch.randn(batch, p, classes, generator=g) * 2.0
    return loc, conf


def per_class_loop_postprocess(loc, conf, priors, decode, nms, score_threshold=0.01, iou_threshold=0.45,
                          top_k=200, keep=200):
    """The usual per-image, per-class SSD post-processing loop (as in
    torchvision's SSD), the baseline of mtlkit's fused ``ssd_postprocess``.

    loc (B, P, 4), conf (B, P, C) with class 0 the background, priors (P, 4);
    ``decode(loc[b], priors)`` -> (P, 4) boxes, ``nms(boxes, scores, iou)`` ->
    kept indices. Returns per image (boxes (K, 4), scores (K,), labels (K,)),
    at most ``keep`` detections, best first."""
    out = []
    for b in range(loc.shape[0]):
        boxes = decode(loc[b], priors)
        scores = torch.softmax(conf[b], dim=-1)
        img_boxes, img_scores, img_labels = [], [], []
        for c in range(1, scores.shape[1]):
            s = scores[:, c]
            idx = torch.where(s > score_threshold)[0]
            s, bx = s[idx], boxes[idx]
            s, order = s.topk(min(top_k, s.numel()))
            bx = bx[order]
            k = nms(bx, s, iou_threshold)
            img_boxes.append(bx[k])
            img_scores.append(s[k])
            img_labels.append(torch.full((k.numel(),), c, dtype=torch.int64, device=s.device))
        s = torch.cat(img_scores)
        s, order = s.topk(min(keep, s.numel()))
        out.append((torch.cat(img_boxes)[order], s, torch.cat(img_labels)[order]))
    return out
