"""ResNet backbones with a dilated last stage (output stride 16).

Parameter names follow torchvision's ``resnet*`` (``conv1``, ``bn1``,
``layer1.0.conv1``, ..., ``layer4.2.bn3``, ``layerN.0.downsample.{0,1}``) so
a torchvision state dict loads by name. The classifier (``fc``) is not built.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.errors import ConfigError

from mtlkit.backbone import Backbone

from .common import load_backbone_weights


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _downsample(cin: int, cout: int, stride: int) -> Optional[nn.Sequential]:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34 block)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 x4 with a residual (ResNet-50 v1.5:
    the stride sits on the 3x3 conv, as in torchvision)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_layer(block, cin: int, planes: int, blocks: int, stride: int, dilate: bool,
                dilation_in: int) -> Tuple[nn.Sequential, int, int]:
    """A ResNet stage. With ``dilate`` the stride is replaced by dilation
    (torchvision's ``replace_stride_with_dilation``: the first block keeps the
    incoming dilation, the following ones use ``dilation_in * stride``)."""
    dilation = dilation_in
    if dilate:
        dilation, stride = dilation_in * stride, 1
    layers = [block(cin, planes, stride, dilation=dilation_in)]
    cout = planes * block.expansion
    for _ in range(1, blocks):
        layers.append(block(cout, planes, 1, dilation=dilation))
    return nn.Sequential(*layers), cout, dilation


class _ResNet(Backbone):
    """Stem + 4 stages, the last one dilated; returns ``[layer4]``."""

    def __init__(self, block, layers: Sequence[int], widths: Sequence[int], stem: str,
                 stem_width: int):
        super().__init__()
        if stem == "7x7":  # torchvision: 7x7/2 conv + 3x3/2 max pool
            self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        else:  # lighter stem for the small CPU network
            self.conv1 = nn.Conv2d(3, stem_width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin, dilation = stem_width, 1
        for i, (planes, n) in enumerate(zip(widths, layers)):
            layer, cin, dilation = _make_layer(block, cin, planes, n, 1 if i == 0 else 2,
                                               dilate=(i == 3), dilation_in=dilation)
            setattr(self, f"layer{i + 1}", layer)
        self.out_channels = [cin]
        self.strides = [16]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stages(self) -> List[nn.Module]:
        """[stem, layer1, layer2, layer3, layer4] (stem = conv1 + bn1)."""
        return [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3,
                self.layer4]

    def load_weights(self, state: Mapping[str, torch.Tensor], source: str = "<state dict>"):
        """Load a torchvision-format state dict (``fc.*`` ignored; the extra
        input channels' weights, absent from RGB weights, keep their zeros)."""
        return load_backbone_weights(self, state, source, ignore_prefixes=("fc.",),
                                     optional_prefixes=("conv1_extra",))

    def add_input_channels(self, count: int) -> None:
        """``conv1_extra`` (stem_width, count, k, k), zeros: the stem computes
        conv1(RGB) + conv1_extra(extra channels). A parameter of its own,
        outside :meth:`stages`, so ``frozen_stages`` never freezes it; made
        without drawing random numbers, so the rest of the model is
        initialised as it would be without it."""
        if count <= 0:
            return
        conv = self.conv1
        self.conv1_extra = nn.Parameter(torch.zeros(conv.out_channels, int(count), *conv.kernel_size))
        self.extra_input_channels = int(count)

    def _stem_conv(self, images: torch.Tensor) -> torch.Tensor:
        if not self.extra_input_channels:
            return self.conv1(images)
        conv = self.conv1
        rgb = conv(images[:, :3])
        extra = F.conv2d(images[:, 3:], self.conv1_extra.to(rgb.dtype), None, conv.stride, conv.padding)
        return rgb + extra

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3 + extra, H, W) normalised -> ``[X]`` with X (B, C, ceil(H/16), ceil(W/16))."""
        x = self.maxpool(self.relu(self.bn1(self._stem_conv(images))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return [self.layer4(x)]


class ResNet50Dilated(_ResNet):
    """ResNet-50 with layer4 dilated instead of strided (output stride 16).

    480x640 -> X of 2048x30x40 (the ROCK paper configuration). Returns
    ``[layer4]``; ``out_channels == [2048]``, ``strides == [16]``.

    Options:

    * ``weights`` (path or null): a torchvision ``resnet50`` state dict
      (``torch.save(torchvision.models.resnet50(weights=...).state_dict(), path)``);
      ``fc.*`` is ignored, a missing weight is a :class:`ConfigError` naming it,
      extra keys are warned about. Never downloads.
    * ``frozen_bn`` (bool): every BatchNorm becomes a
      :class:`~mtlkit.models.backbones.common.FrozenBatchNorm2d` (fixed
      statistics and affine; the usual choice with small batches).
    * ``frozen_stages`` (int 0..5): how many of [stem, layer1, ..., layer4]
      get no gradient (their BatchNorm statistics stay fixed too).
    """

    defaults: Dict[str, Any] = {"weights": None, "frozen_bn": False, "frozen_stages": 0}
    ranges = {"frozen_stages": "[0, 5]"}  # [stem, layer1, ..., layer4]

    def __init__(self, weights: Optional[str] = None, frozen_bn: bool = False,
                 frozen_stages: int = 0):
        self.checked(weights=weights, frozen_bn=frozen_bn, frozen_stages=frozen_stages)
        super().__init__(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], stem="7x7",
                         stem_width=64)
        self._maybe_load(weights)
        self._setup_freezing(frozen_bn, frozen_stages)


class ResNetSmall(_ResNet):
    """A small ResNet for CPU experiments (basic blocks, dilated last stage).

    Stem: 3x3/2 conv (``stem_width``) + 3x3/2 max pool; four stages of basic
    blocks of ``widths`` (default 32-64-128-256), strides 1, 2, 2 and the last
    dilated (output stride 16): 240x320 -> X of 256x15x20. Returns ``[X]``,
    exactly like :class:`ResNet50Dilated`, so the same SSD layout applies.

    Options:

    * ``widths`` (list of 4 ints), ``blocks`` (list of 4 ints: blocks per stage),
      ``stem_width`` (int).
    * ``weights`` (path or null): a state dict of this same network (e.g. taken
      from an earlier run's checkpoint), torchvision names.
    * ``frozen_bn`` (bool), ``frozen_stages`` (int 0..5): as for ``resnet50``.
    """

    defaults: Dict[str, Any] = {
        "weights": None,
        "frozen_bn": False,
        "frozen_stages": 0,
        "widths": [32, 64, 128, 256],
        "blocks": [1, 1, 1, 1],
        "stem_width": 32,
    }
    ranges = {"frozen_stages": "[0, 5]", "widths": ">= 1", "blocks": ">= 1", "stem_width": ">= 1"}
    lengths = {"widths": 4, "blocks": 4}

    @classmethod
    def check_options(cls, options: Mapping[str, Any], where: str) -> None:
        """``weights`` (:class:`Backbone`); ``widths`` / ``blocks``: integers."""
        super().check_options(options, where)
        for field in ("widths", "blocks"):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in options[field]):
                raise ConfigError(f"{where}.{field}: expected 4 positive integers, got {list(options[field])!r}")

    def __init__(self, weights: Optional[str] = None, frozen_bn: bool = False,
                 frozen_stages: int = 0, widths: Sequence[int] = (32, 64, 128, 256),
                 blocks: Sequence[int] = (1, 1, 1, 1), stem_width: int = 32):
        self.checked(weights=weights, frozen_bn=frozen_bn, frozen_stages=frozen_stages,
                     widths=widths, blocks=blocks, stem_width=stem_width)
        super().__init__(BasicBlock, list(blocks), list(widths), stem="3x3", stem_width=stem_width)
        self._maybe_load(weights)
        self._setup_freezing(frozen_bn, frozen_stages)
