"""Backbones: images (B, 3, H, W) normalised -> list of source maps, the last one X.

Contract (``docs/architecture.md``, "Backbones"): attributes ``out_channels``
and ``strides`` (one per returned map), ``mean``/``std`` (normalisation of
[0, 1] RGB), torchvision parameter names. Registered by
``mtlkit_plugins.backbones`` as ``resnet50``, ``vgg16`` and ``resnet_small``.
"""

from .common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    FrozenBatchNorm2d,
    freeze_batchnorm,
    load_backbone_weights,
    read_state_dict,
)
from .resnet import ResNet50Dilated, ResNetSmall
from .vgg import VGG16SSD, L2Norm

__all__ = [
    "Backbone",
    "FrozenBatchNorm2d",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "L2Norm",
    "ResNet50Dilated",
    "ResNetSmall",
    "VGG16SSD",
    "freeze_batchnorm",
    "load_backbone_weights",
    "read_state_dict",
]
