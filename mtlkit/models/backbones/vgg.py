"""VGG16 as in SSD300 (Liu et al., 2016): the base network of the original SSD."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.backbone import Backbone

from .common import load_backbone_weights

#: torchvision vgg16 "D" configuration: conv widths, "M" = 2x2 max pool
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
#: index in ``features`` of the ReLU after conv4_3 (the first SSD source)
_CONV4_3_RELU = 22
#: ``features`` slices of the five conv blocks (each ends with its pool)
_BLOCKS = [(0, 5), (5, 10), (10, 17), (17, 24), (24, 31)]


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learnable per-channel scale
    (SSD's conv4_3 normalisation, scale initialised to ``init``).
    (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, init: float = 20.0, eps: float = 1e-10):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(self.eps)
        return x / norm * self.weight.view(1, -1, 1, 1)


class VGG16SSD(Backbone):
    """SSD300's VGG16: ``features`` as torchvision's ``vgg16`` (same indices,
    so ``features.N.weight`` load by name), pool3 with ``ceil_mode``, pool5
    3x3 stride 1, ``fc6`` a 3x3 conv 512->1024 with dilation 6 and ``fc7`` a
    1x1 conv 1024->1024 (ReLU after each), ``conv4_3_norm`` an
    :class:`L2Norm` (scale 20) on conv4_3.

    Returns ``[conv4_3 normalised, fc7]``: 300x300 -> 512x38x38 and
    1024x19x19; ``out_channels == [512, 1024]``, ``strides == [8, 16]``.

    Options:

    * ``weights`` (path or null): a torchvision ``vgg16`` state dict. The conv
      layers load by name. ``fc6``/``fc7`` load by name when the file has them
      (e.g. a checkpoint of this backbone); otherwise, when the file has
      torchvision's ``classifier.0``/``classifier.3``, they are subsampled
      from them as in the SSD paper (fc6: every 4th filter, every 3rd tap of
      the 7x7 kernel -> 3x3 with dilation 6; fc7: every 4th input and output);
      else they stay randomly initialised (their names are then listed in
      the attribute ``random_init``). ``conv4_3_norm`` keeps its init unless given.
    * ``frozen_bn`` (bool): accepted for a uniform interface; VGG16 has no
      BatchNorm, so it changes nothing.
    * ``frozen_stages`` (int 0..6): how many of [block1, ..., block5, fc6+fc7]
      get no gradient.
    """

    defaults: Dict[str, Any] = {"weights": None, "frozen_bn": False, "frozen_stages": 0}
    ranges = {"frozen_stages": "[0, 6]"}  # [block1, ..., block5, fc6 + fc7]

    def __init__(self, weights: Optional[str] = None, frozen_bn: bool = False,
                 frozen_stages: int = 0):
        self.checked(weights=weights, frozen_bn=frozen_bn, frozen_stages=frozen_stages)
        super().__init__()
        layers: List[nn.Module] = []
        cin, n_pools = 3, 0
        for v in _VGG16:
            if v == "M":
                n_pools += 1
                if n_pools == 3:
                    layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                elif n_pools == 5:
                    layers.append(nn.MaxPool2d(3, 1, padding=1))
                else:
                    layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=6, dilation=6)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.conv4_3_norm = L2Norm(512, 20.0)
        self.out_channels = [512, 1024]
        self.strides = [8, 16]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.random_init: List[str] = []
        self._maybe_load(weights)
        self._setup_freezing(frozen_bn, frozen_stages)

    def stages(self) -> List[nn.Module]:
        blocks = [self.features[a:b] for a, b in _BLOCKS]
        return blocks + [nn.ModuleList([self.fc6, self.fc7])]

    def load_weights(self, state: Mapping[str, torch.Tensor], source: str = "<state dict>"):
        """Load a torchvision-format vgg16 state dict; see the class docstring."""
        state = dict(state)
        if "fc6.weight" not in state and "classifier.0.weight" in state:
            state.update(_subsample_classifier(state))
        self.random_init = load_backbone_weights(
            self, state, source, ignore_prefixes=("classifier.",),
            optional_prefixes=("fc6.", "fc7.", "conv4_3_norm."))
        return self.random_init

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, H, W) normalised -> [conv4_3 normalised (B, 512, H/8, W/8),
        fc7 (B, 1024, H/16, W/16)] (sizes rounded as the pools round)."""
        x = self.features[: _CONV4_3_RELU + 1](images)
        source = self.conv4_3_norm(x)
        x = self.features[_CONV4_3_RELU + 1:](x)
        x = F.relu(self.fc6(x), inplace=True)
        x = F.relu(self.fc7(x), inplace=True)
        return [source, x]


def _subsample_classifier(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """fc6/fc7 conv weights from torchvision's fully connected classifier
    (SSD paper, "atrous" conversion). Empty when the shapes are not vgg16's."""
    w6, b6 = state.get("classifier.0.weight"), state.get("classifier.0.bias")
    w7, b7 = state.get("classifier.3.weight"), state.get("classifier.3.bias")
    if any(t is None for t in (w6, b6, w7, b7)):
        return {}
    if tuple(w6.shape) != (4096, 512 * 7 * 7) or tuple(w7.shape) != (4096, 4096):
        return {}
    fc6 = w6.reshape(4096, 512, 7, 7)[::4, :, ::3, ::3].contiguous()
    fc7 = w7[::4, ::4].reshape(1024, 1024, 1, 1).contiguous()
    return {"fc6.weight": fc6, "fc6.bias": b6[::4].contiguous(),
            "fc7.weight": fc7, "fc7.bias": b7[::4].contiguous()}
