"""SSD extra layers and multibox head.

:class:`SSDHead` is what the detection task's ``build_head`` returns: it takes
the backbone's source maps (the last one being X~, the refined map), adds the
extra source maps, and predicts per prior 4 box offsets and C+1 class logits.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.errors import ConfigError

from .priors import PriorCache, priors_per_cell


NORMS = ("group", "batch", "none")


def _groups(channels: int) -> int:
    """GroupNorm groups: up to 32, at least 4 channels per group when possible
    (a 1x1 map then still has >= 4 values per group)."""
    g = math.gcd(channels, 32)
    while g > 1 and channels // g < 4:
        g //= 2
    return g


class _ExtraConv2d(nn.Conv2d):
    """A Conv2d that runs in float32 under CPU autocast when its input is
    smaller than its kernel and it is strided: oneDNN's bfloat16 weight
    gradient of such a conv (a 3x3/2 on a 1x1 map, as the extra layers meet on
    small images) reads uninitialised memory, measured with torch 2.13 on CPU:
    gradients that differ between identical steps, sometimes NaN. The maps are
    a few pixels, so float32 costs nothing measurable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        degenerate = (x.shape[-2] < self.kernel_size[0] or x.shape[-1] < self.kernel_size[1]) \
            and self.stride != (1, 1)
        if degenerate and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def _conv_block(cin: int, cout: int, kernel: int, stride: int, padding: int,
                norm: str) -> nn.Sequential:
    layers: List[nn.Module] = [_ExtraConv2d(cin, cout, kernel, stride=stride, padding=padding,
                                            bias=norm == "none")]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(cout))
    elif norm == "group":
        layers.append(nn.GroupNorm(_groups(cout), cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ExtraLayer(nn.Module):
    """One SSD extra layer: 1x1 conv to ``out/2`` then 3x3 conv to ``out``.

    Normal layers use stride 2, padding 1 (H -> ceil(H/2)). The ``last`` layer
    collapses its input to 1x1: the reduced map is average-pooled to 3x3
    (identity when it is already 3x3, as in SSD300) and a 3x3 conv without
    padding follows, so any input size ends in a 1x1 map.
    """

    def __init__(self, cin: int, cout: int, last: bool, norm: str = "group"):
        super().__init__()
        mid = max(1, cout // 2)
        self.last = last
        self.reduce = _conv_block(cin, mid, 1, 1, 0, norm)
        self.conv = _conv_block(mid, cout, 3, 1 if last else 2, 0 if last else 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        if self.last:
            x = F.adaptive_avg_pool2d(x, 3)
        return self.conv(x)


class ExtraLayers(nn.Module):
    """Extra source maps after the last backbone map: ``len(widths)`` layers,
    the last one ending in 1x1 (see :class:`ExtraLayer`). (B, C_in, H, W) ->
    list of (B, widths[i], H_i, W_i)."""

    def __init__(self, in_channels: int, widths: Sequence[int], norm: str = "group"):
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"detection.extra_norm: expected one of {', '.join(NORMS)}, "
                              f"got {norm!r}")
        layers, cin = [], in_channels
        for i, w in enumerate(widths):
            layers.append(ExtraLayer(cin, int(w), last=(i == len(widths) - 1), norm=norm))
            cin = int(w)
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        return out


class SSDHead(nn.Module):
    """Extra layers + priors + multibox predictors.

    :param in_channels: channels of the backbone's source maps (last = X~).
    :param num_classes: C, object classes without background (the
        predictor outputs C + 1 logits per prior, index 0 = background).
    :param aspect_ratios: one list per source map (backbone maps then extra
        maps); its length fixes the number of extra layers
        (``len(aspect_ratios) - len(in_channels)``).
    :param extra_channels: widths of the extra layers; the first
        ``len(aspect_ratios) - len(in_channels)`` are used.
    :param min_scale, max_scale: prior scales of the first and last map.
    :param extra_norm: normalisation after each extra conv: ``"group"``
        (GroupNorm, the default: works at any batch size, even on the 1x1
        maps with one image per batch), ``"batch"`` (BatchNorm: needs more
        than one value per channel in training) or ``"none"`` (original SSD).

    ``forward(features)`` with features a list of (B, C_k, H_k, W_k) ->
    ``{"loc": (B, P, 4), "conf": (B, P, C+1), "priors": (P, 4)}``; priors are
    (cx, cy, w, h) in [0, 1], computed from the maps' actual sizes and cached.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int,
                 aspect_ratios: Sequence[Sequence[float]], extra_channels: Sequence[int],
                 min_scale: float = 0.1, max_scale: float = 0.9, extra_norm: str = "group"):
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        n_extra = len(aspect_ratios) - len(in_channels)
        if n_extra < 0:
            raise ConfigError(f"detection.aspect_ratios: {len(aspect_ratios)} entries but the "
                              f"backbone already gives {len(in_channels)} source maps")
        if len(extra_channels) < n_extra:
            raise ConfigError(f"detection.extra_channels: {n_extra} extra layers are needed "
                              f"({len(aspect_ratios)} source maps, {len(in_channels)} from the "
                              f"backbone) but only {len(extra_channels)} widths are given")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"detection.num_classes: expected a positive integer (classes "
                              f"without background), got {num_classes!r}")
        widths = [int(w) for w in extra_channels[:n_extra]]
        self.num_classes = num_classes
        self.extras = ExtraLayers(in_channels[-1], widths, norm=extra_norm)
        self.priors = PriorCache(aspect_ratios, min_scale, max_scale)
        self.anchors = priors_per_cell(aspect_ratios)
        channels = in_channels + widths
        self.loc = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1)
                                 for c, a in zip(channels, self.anchors))
        self.conf = nn.ModuleList(nn.Conv2d(c, a * (num_classes + 1), 3, padding=1)
                                  for c, a in zip(channels, self.anchors))
        for m in list(self.loc) + list(self.conf):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def source_maps(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Backbone maps + extra maps (the input of the predictors)."""
        features = list(features)
        return features + self.extras(features[-1])

    def forward(self, features: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        if len(features) != len(self.anchors) - len(self.extras.layers):
            raise ValueError(f"SSDHead expects {len(self.anchors) - len(self.extras.layers)} "
                             f"source maps from the backbone, got {len(features)}")
        maps = self.source_maps(features)
        B = maps[0].shape[0]
        locs, confs = [], []
        for x, loc, conf in zip(maps, self.loc, self.conf):
            locs.append(loc(x).permute(0, 2, 3, 1).reshape(B, -1, 4))
            confs.append(conf(x).permute(0, 2, 3, 1).reshape(B, -1, self.num_classes + 1))
        sizes = [tuple(x.shape[-2:]) for x in maps]
        priors = self.priors(sizes, device=maps[0].device, dtype=torch.float32)
        return {"loc": torch.cat(locs, 1), "conf": torch.cat(confs, 1), "priors": priors}
