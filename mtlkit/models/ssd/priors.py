"""SSD prior (default) boxes, computed from the actual feature-map sizes.

For source map k of m (0-based), scale s_k is linearly spaced from
``min_scale`` (k = 0) to ``max_scale`` (k = m-1), and s_m continues the line
(s_{m-1} + step). Each cell of map k gets, in this order:

* a square prior of side s_k,
* a square prior of side sqrt(s_k * s_{k+1}),
* for each aspect ratio a of the map: (s_k * sqrt(a), s_k / sqrt(a)) and
  (s_k / sqrt(a), s_k * sqrt(a)),

so ``2 + 2 * len(aspect_ratios[k])`` priors per cell ([2] -> 4, [2, 3] -> 6).
Centres are ((j + 0.5) / W_k, (i + 0.5) / H_k); cells are in row-major order
(row i, then column j), priors within a cell last: the same order as a
multibox head's (B, A*4, H, W) output permuted to (B, H, W, A*4). Everything
is normalised to the image ([0, 1]), sides relative to the image's side
(as in SSD, a ratio-1 prior is square in normalised units), and each
(cx, cy, w, h) value is clipped to [0, 1].
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch

from mtlkit.errors import ConfigError


def prior_scales(num_maps: int, min_scale: float, max_scale: float) -> List[float]:
    """``num_maps + 1`` scales: linear from min_scale to max_scale, plus one step
    more (a single map gets [min_scale, max_scale])."""
    if num_maps < 1:
        raise ConfigError("detection: need at least one source map for priors")
    if not 0 < min_scale <= max_scale:
        raise ConfigError(f"detection.min_scale/max_scale: expected 0 < min_scale <= max_scale, "
                          f"got {min_scale} and {max_scale}")
    if num_maps == 1:
        return [min_scale, max_scale]
    step = (max_scale - min_scale) / (num_maps - 1)
    scales = [min_scale + step * k for k in range(num_maps)]
    scales.append(max_scale + step)
    return scales


def priors_per_cell(aspect_ratios: Sequence[Sequence[float]]) -> List[int]:
    """Number of priors per cell for each map: ``2 + 2 * len(ratios)``."""
    return [2 + 2 * len(r) for r in aspect_ratios]


def make_priors(feature_sizes: Sequence[Tuple[int, int]], aspect_ratios: Sequence[Sequence[float]],
                min_scale: float, max_scale: float, clip: bool = True,
                device=None, dtype=torch.float32) -> torch.Tensor:
    """Priors (P, 4) (cx, cy, w, h) for maps of ``feature_sizes`` [(H_k, W_k), ...]."""
    if len(feature_sizes) != len(aspect_ratios):
        raise ConfigError(f"detection.aspect_ratios: {len(aspect_ratios)} entries for "
                          f"{len(feature_sizes)} source maps; give one list per source map")
    scales = prior_scales(len(feature_sizes), min_scale, max_scale)
    chunks = []
    for k, ((h, w), ratios) in enumerate(zip(feature_sizes, aspect_ratios)):
        s, s_next = scales[k], scales[k + 1]
        shapes = [(s, s), (math.sqrt(s * s_next),) * 2]
        for a in ratios:
            r = math.sqrt(float(a))
            shapes += [(s * r, s / r), (s / r, s * r)]
        wh = torch.tensor(shapes, dtype=torch.float64)  # (A, 2)
        cy = (torch.arange(h, dtype=torch.float64) + 0.5) / h
        cx = (torch.arange(w, dtype=torch.float64) + 0.5) / w
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")  # (h, w)
        centres = torch.stack([cx, cy], dim=-1).reshape(h * w, 1, 2).expand(h * w, len(shapes), 2)
        sides = wh.reshape(1, -1, 2).expand(h * w, len(shapes), 2)
        chunks.append(torch.cat([centres, sides], dim=-1).reshape(-1, 4))
    priors = torch.cat(chunks) if chunks else torch.zeros((0, 4), dtype=torch.float64)
    if clip:
        priors = priors.clamp_(0.0, 1.0)
    return priors.to(device=device, dtype=dtype)


class PriorCache:
    """Priors for a given list of feature sizes, computed once per (sizes, device, dtype)."""

    def __init__(self, aspect_ratios: Sequence[Sequence[float]], min_scale: float,
                 max_scale: float, clip: bool = True):
        self.aspect_ratios = [list(map(float, r)) for r in aspect_ratios]
        self.min_scale, self.max_scale, self.clip = float(min_scale), float(max_scale), clip
        prior_scales(len(self.aspect_ratios), self.min_scale, self.max_scale)  # validate early
        for k, ratios in enumerate(self.aspect_ratios):
            if any(not (a > 0 and math.isfinite(a)) for a in ratios):
                raise ConfigError(f"detection.aspect_ratios[{k}]: expected positive numbers, "
                                  f"got {ratios}")
        self._cache: Dict[tuple, torch.Tensor] = {}

    def __call__(self, feature_sizes: Sequence[Tuple[int, int]], device=None,
                 dtype=torch.float32) -> torch.Tensor:
        key = (tuple((int(h), int(w)) for h, w in feature_sizes), str(device), dtype)
        priors = self._cache.get(key)
        if priors is None:
            priors = make_priors(key[0], self.aspect_ratios, self.min_scale, self.max_scale,
                                 self.clip, device=device, dtype=dtype)
            self._cache[key] = priors
        return priors
