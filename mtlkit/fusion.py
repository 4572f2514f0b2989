"""The fusion interface: how decoded auxiliary features are merged back into X.

A fusion plugin registers a subclass of :class:`Fusion` (kind ``fusion``).
The ROCK block (:class:`mtlkit.models.rock.RockBlock`) builds it as
``cls(channels, names, **options)`` and calls ``fusion(x, decoded)``:

* ``channels``: C, the channels of X (and of every decoded map);
* ``names``: the names of the decoded maps, in the order they are yielded
  (the auxiliary task names with per-task decoders, ``["shared"]`` with the
  shared decoder of ``rock_light``);
* ``x``: (B, C, h, w), the backbone's last source map;
* ``decoded``: an *iterator* of ``(name, map (B, C, h, w))``, produced
  lazily, so a fusion that accumulates (``residual``) never holds more than one
  decoded map at a time; consume it once, in order.

It returns X~ (B, C, h, w). A fusion with ``uses_decoded = False`` (``none``:
flat MTL) gets an empty iterator and the block builds no decoders at all.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Iterator, Sequence, Tuple

import torch
from torch import nn

from mtlkit.options import component_options
from mtlkit.utils.batchnorm import batchnorm_affine


class Fusion(nn.Module):
    """Base class of fusion plugins; see the module docstring.

    Class attributes: ``defaults`` (option name -> default value) and the
    other facets of the one option rule (``choices``, ``ranges``...:
    :mod:`mtlkit.options`), ``uses_decoded`` (whether the block must decode
    the task maps back to C channels and pass them in). The constructor checks
    the options and merges them over the defaults (:attr:`options`).
    """

    defaults: ClassVar[Dict[str, Any]] = {}
    uses_decoded: ClassVar[bool] = True

    def __init__(self, channels: int, names: Sequence[str], **options: Any):
        super().__init__()
        self.channels = int(channels)
        self.names = list(names)
        self.options = dict(component_options(type(self), options, "model.fusion"))

    def forward(self, x: torch.Tensor, decoded: Iterator[Tuple[str, torch.Tensor]]) -> torch.Tensor:
        raise NotImplementedError


class PostNorm(nn.Module):
    """BN + ReLU after the fusion (the paper's block). Eval mode: one affine
    pass, in place on the fusion's own (temporary) sum."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        if not self.training and inplace and not torch.is_grad_enabled():
            bn = self.bn
            scale, shift = batchnorm_affine(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
            # One fused multiply-add pass, then ReLU, both in place.
            return torch.addcmul(shift.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1), out=x).relu_()
        return torch.relu(self.bn(x))
