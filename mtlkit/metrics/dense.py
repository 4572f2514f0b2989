"""Depth, surface-normal and scene metrics as plain functions on tensors with masks.

Aggregation: every figure pools the valid *pixels* of everything passed in (the
standard NYUv2 practice: pixels pooled over the whole test set, not a mean of
per-image figures). The functions are built on sufficient statistics
(:func:`depth_stats`, :func:`normals_stats`) that add up exactly across batches,
which is what the accumulators in :mod:`mtlkit.metrics.accumulators` keep.

Definitions over the N valid pixels, prediction p, ground truth g:

* depth: ``abs_rel`` = mean |p-g|/g; ``sq_rel`` = mean (p-g)²/g; ``rmse`` =
  sqrt(mean (p-g)²); ``rmse_log`` = sqrt(mean (ln p - ln g)²); ``log10`` = mean
  |log10 p - log10 g|; ``delta1..3`` = share of pixels with max(p/g, g/p) < 1.25^k
  (fractions in [0, 1]). Valid: mask, g > 0 (and g <= max_depth when given); p is
  clamped to [min_depth, max_depth] first.
* normals: the angle between p and g in degrees (both normalised; a zero prediction
  is 90° off); ``mean``, ``median``, ``rmse`` of the angle, and ``within_11.25``,
  ``within_22.5``, ``within_30``: percentages (0-100) of pixels with angle < t.
  Valid: mask and a non-zero g.
* scene: ``top1`` accuracy in [0, 1] of argmax(prediction) over the kept samples.

With no valid pixel (or sample) every figure is NaN.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np
import torch

NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)
DEPTH_FIELDS = ("n", "abs_rel", "sq_rel", "sq", "sq_log", "abs_log10", "delta1", "delta2", "delta3")
#: bin width (degrees) of the angle histogram used for the mergeable median
HIST_BIN_DEG = 0.01
HIST_BINS = int(round(180.0 / HIST_BIN_DEG))


def _t(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _valid(mask: Optional[Any], shape, device) -> torch.Tensor:
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    m = _t(mask).to(device=device).bool()
    return m.expand(shape) if m.shape != shape else m


# -- depth -------------------------------------------------------------------


def depth_stats(
    pred: Any, gt: Any, mask: Optional[Any] = None, min_depth: float = 1e-3, max_depth: Optional[float] = None
) -> np.ndarray:
    """Sufficient statistics of depth errors: float64 array over :data:`DEPTH_FIELDS`
    (count, then sums). ``pred``/``gt`` of the same shape (e.g. (B, 1, H, W)) in metres,
    ``mask`` broadcastable bool."""
    p, g = _t(pred), _t(gt)
    if p.shape != g.shape:
        raise ValueError(f"depth prediction {tuple(p.shape)} and ground truth {tuple(g.shape)} differ in shape")
    p, g = p.detach().to(torch.float64), g.detach().to(device=p.device, dtype=torch.float64)
    valid = _valid(mask, g.shape, g.device) & (g > 0) & torch.isfinite(g)
    if max_depth is not None:
        valid &= g <= max_depth
    p, g = p[valid], g[valid]
    p = p.nan_to_num(nan=min_depth).clamp(min=min_depth, max=max_depth if max_depth is not None else math.inf)
    d = p - g
    ratio = torch.maximum(p / g, g / p)
    log_d = torch.log(p) - torch.log(g)
    return np.array([
        float(p.numel()),
        (d.abs() / g).sum().item(),
        (d * d / g).sum().item(),
        (d * d).sum().item(),
        (log_d * log_d).sum().item(),
        (torch.log10(p) - torch.log10(g)).abs().sum().item(),
        (ratio < 1.25).sum().item(),
        (ratio < 1.25**2).sum().item(),
        (ratio < 1.25**3).sum().item(),
    ], dtype=np.float64)


def depth_from_stats(stats: np.ndarray) -> Dict[str, float]:
    """:func:`depth_stats` (summed over batches) -> the depth figures."""
    n = stats[0]
    if n <= 0:
        return {k: float("nan") for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")}
    mean = stats[1:] / n
    return {
        "abs_rel": float(mean[0]),
        "sq_rel": float(mean[1]),
        "rmse": float(np.sqrt(mean[2])),
        "rmse_log": float(np.sqrt(mean[3])),
        "log10": float(mean[4]),
        "delta1": float(mean[5]),
        "delta2": float(mean[6]),
        "delta3": float(mean[7]),
    }


def depth_metrics(pred: Any, gt: Any, mask: Optional[Any] = None, min_depth: float = 1e-3,
                  max_depth: Optional[float] = None) -> Dict[str, float]:
    """Depth figures over the valid pixels of ``pred``/``gt`` (pooled; see the module doc)."""
    return depth_from_stats(depth_stats(pred, gt, mask, min_depth, max_depth))


# -- normals -----------------------------------------------------------------


def normal_angles(pred: Any, gt: Any, mask: Optional[Any] = None) -> torch.Tensor:
    """Angles in degrees (float64, 1-D) between (B, 3, H, W) ``pred`` and ``gt`` at the
    valid pixels (``mask`` (B, 1, H, W) or (B, H, W) and a non-zero ``gt``)."""
    p, g = _t(pred).detach().to(torch.float64), _t(gt).detach().to(torch.float64)
    if p.shape != g.shape or p.dim() < 2 or p.shape[1] != 3:
        raise ValueError(f"normals prediction {tuple(p.shape)} and ground truth {tuple(g.shape)} "
                         "must both be (B, 3, H, W)")
    g = g.to(p.device)
    g_norm = g.norm(dim=1, keepdim=True)
    valid = (g_norm > 0) & torch.isfinite(g_norm)
    if mask is not None:
        m = _t(mask).to(p.device).bool()
        valid = valid & (m if m.dim() == valid.dim() else m.unsqueeze(1))
    valid = valid.squeeze(1)
    pn = torch.nn.functional.normalize(p.nan_to_num(0.0), dim=1)
    gn = g / g_norm.clamp(min=1e-300)
    cos = (pn * gn).sum(dim=1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos[valid]))


def normals_stats(angles: torch.Tensor) -> np.ndarray:
    """Sufficient statistics of angles (degrees): [n, sum, sum of squares, counts below
    each of :data:`NORMAL_THRESHOLDS`]."""
    a = angles.to(torch.float64)
    return np.array(
        [float(a.numel()), a.sum().item(), (a * a).sum().item()]
        + [(a < t).sum().item() for t in NORMAL_THRESHOLDS],
        dtype=np.float64,
    )


def angle_histogram(angles: torch.Tensor) -> np.ndarray:
    """(HIST_BINS,) int64 counts of angles in 0.01° bins over [0°, 180°]."""
    idx = torch.clamp((angles.to(torch.float64) / HIST_BIN_DEG).long(), 0, HIST_BINS - 1)
    return torch.bincount(idx.cpu(), minlength=HIST_BINS).numpy().astype(np.int64)


def histogram_median(hist: np.ndarray) -> float:
    """Median of the angles counted in ``hist``: the mean of the two middle order
    statistics, each taken at its bin centre (error <= half a bin, 0.005°)."""
    n = int(hist.sum())
    if n == 0:
        return float("nan")
    cum = np.cumsum(hist)
    lo = int(np.searchsorted(cum, (n - 1) // 2 + 1))  # bin of the order statistic (n-1)//2
    hi = int(np.searchsorted(cum, n // 2 + 1))
    return float((lo + hi + 1) * HIST_BIN_DEG / 2)


def normals_from_stats(stats: np.ndarray, median: float) -> Dict[str, float]:
    n = stats[0]
    if n <= 0:
        return {k: float("nan") for k in ("mean", "median", "rmse")
                + tuple(f"within_{t:g}" for t in NORMAL_THRESHOLDS)}
    out = {"mean": float(stats[1] / n), "median": float(median), "rmse": float(np.sqrt(stats[2] / n))}
    for t, c in zip(NORMAL_THRESHOLDS, stats[3:]):
        out[f"within_{t:g}"] = float(100.0 * c / n)
    return out


def normals_metrics(pred: Any, gt: Any, mask: Optional[Any] = None) -> Dict[str, float]:
    """Normal figures over the valid pixels (pooled); the median here is exact."""
    angles = normal_angles(pred, gt, mask)
    median = float(np.median(angles.cpu().numpy())) if angles.numel() else float("nan")
    return normals_from_stats(normals_stats(angles), median)


# -- scene -------------------------------------------------------------------


def scene_counts(pred: Any, labels: Any, mask: Optional[Any] = None) -> np.ndarray:
    """[n, correct] for (B, S) scores/probabilities ``pred`` and (B,) ``labels``."""
    p = _t(pred).detach()
    y = _t(labels).to(p.device).reshape(-1).long()
    if p.dim() != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"scene prediction {tuple(p.shape)} must be (B, S) for {y.shape[0]} labels")
    keep = _valid(mask, y.shape, p.device).reshape(-1)
    correct = (p.argmax(dim=1) == y) & keep
    return np.array([float(keep.sum().item()), float(correct.sum().item())], dtype=np.float64)


def scene_accuracy(pred: Any, labels: Any, mask: Optional[Any] = None) -> float:
    """Top-1 accuracy in [0, 1] (NaN with no sample)."""
    n, correct = scene_counts(pred, labels, mask)
    return float(correct / n) if n > 0 else float("nan")
