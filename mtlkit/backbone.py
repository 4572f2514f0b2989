"""The backbone interface: the base class every backbone plugin subclasses.

Contract (``docs/architecture.md``, "Backbones"): ``backbone(images)`` with
images (B, 3, H, W) already normalised -> a list of source maps, shallowest
first, the last one X (the map the ROCK block refines). Attributes:
``out_channels`` and ``strides`` (one per returned map), ``mean`` / ``std``
(3-tuples that normalise [0, 1] RGB; ImageNet's by default), parameter names
as torchvision's so its state dicts load.

The base class also carries what ``frozen_bn`` / ``frozen_stages`` /
``weights`` mean for every backbone that fills :meth:`Backbone.stages` and
:meth:`Backbone.load_weights` (the built-in ones do): BatchNorm frozen into
:class:`FrozenBatchNorm2d`, the first stages without gradient, a state dict
read from a file (:func:`mtlkit.utils.weights.read_state_dict`).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional

import torch
from torch import nn

from mtlkit.errors import ConfigError
from mtlkit.options import Options, component_options
from mtlkit.utils.batchnorm import batchnorm_affine
from mtlkit.utils.weights import read_state_dict

#: ImageNet statistics of torchvision's pretrained models (RGB in [0, 1]):
#: the backbones' normalisation and the fill of the zoom-out augmentation
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters.

    ``weight``, ``bias``, ``running_mean`` and ``running_var`` are *buffers*
    (same names as :class:`torch.nn.BatchNorm2d`, so torchvision state dicts
    load), hence never trained and never updated; ``num_batches_tracked`` in a
    loaded state dict is ignored. (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> "FrozenBatchNorm2d":
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.track_running_stats:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
        return frozen

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = batchnorm_affine(self.weight, self.bias, self.running_mean, self.running_var,
                                        self.eps)
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a
    :class:`FrozenBatchNorm2d` carrying its current statistics (in place;
    returns ``module``, or the frozen layer when ``module`` itself is a BN)."""
    if isinstance(module, nn.BatchNorm2d):
        return FrozenBatchNorm2d.from_batchnorm(module)
    for name, child in module.named_children():
        new = freeze_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def freeze_modules(modules: Iterable[nn.Module]) -> None:
    """Stop gradients to every parameter of ``modules`` (their BatchNorms are
    kept in eval mode by the owning backbone's ``train()``)."""
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)


def set_batchnorm_eval(modules: Iterable[nn.Module]) -> None:
    """Put every BatchNorm inside ``modules`` in eval mode (running stats frozen)."""
    for m in modules:
        for sub in m.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.eval()


class Backbone(nn.Module):
    """Base class of every backbone plugin (the registry refuses others).

    A subclass sets the attributes of the backbone contract (``out_channels``,
    ``strides``; ``mean`` / ``std`` default to ImageNet's) and implements
    ``forward``; its options are declared like every plugin's (``defaults``,
    ``ranges``, ``lengths``: :mod:`mtlkit.options`). The built-in backbones
    also fill :meth:`stages` (a list of modules, shallowest first; the unit of
    ``frozen_stages``, set up by :meth:`_setup_freezing`) and
    :meth:`load_weights`; a plugin that does not has no stage to freeze.
    """

    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    out_channels: List[int]
    strides: List[int]
    frozen_stages: int = 0
    defaults: ClassVar[Dict[str, Any]] = {"weights": None, "frozen_bn": False, "frozen_stages": 0}

    @classmethod
    def check_options(cls, options: Mapping[str, Any], where: str) -> None:
        """``weights``: a file path (or ``builtin:NAME``) or null."""
        weights = options.get("weights")
        if weights is not None and not isinstance(weights, (str, os.PathLike)):
            raise ConfigError(f"{where}.weights: expected a file path or null, got {weights!r}")

    @classmethod
    def checked(cls, **options: Any) -> Options:
        """``options`` checked by the one rule against what the class declares
        (a built-in backbone calls it first, so one made by hand is checked
        like one from a config)."""
        return component_options(cls, options, "model.backbone")

    def _setup_freezing(self, frozen_bn: bool, frozen_stages: int) -> None:
        stages = self.stages()
        self.frozen_bn = bool(frozen_bn)
        self.frozen_stages = int(frozen_stages)
        if self.frozen_bn:
            freeze_batchnorm(self)
        freeze_modules(stages[:self.frozen_stages])

    def stages(self) -> List[nn.Module]:
        return []

    #: input channels beyond RGB (:meth:`add_input_channels`)
    extra_input_channels: int = 0

    def add_input_channels(self, count: int) -> None:
        """Accept ``count`` input channels after the three RGB ones (an RGB-D
        detector's depth, ``model.measured.early_fusion``): the first layer
        gets weights for them, initialised to 0 so that the network computes
        exactly what it computed on RGB alone, and trained even when that
        layer's stage is frozen. Backbones that cannot refuse with a
        :class:`ConfigError`."""
        raise ConfigError(f"model.measured.early_fusion: backbone {type(self).__name__} cannot take "
                          "input channels beyond RGB")

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if mode:
            # Frozen stages keep their BatchNorm statistics as loaded.
            set_batchnorm_eval(self.stages()[: self.frozen_stages])
        return self

    def _maybe_load(self, weights: Optional[str], **kwargs) -> None:
        if weights is None:
            return
        state = read_state_dict(weights)
        self.load_weights(state, source=os.fspath(weights), **kwargs)

    def load_weights(self, state: Mapping[str, torch.Tensor], source: str = "<state dict>"):
        raise NotImplementedError
