"""BatchNorm in eval mode as one affine map (the one home of BN folding)."""

from __future__ import annotations

from typing import Tuple

import torch


def batchnorm_affine(weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                     running_var: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (C,), such that eval-mode BN(x) = x * scale + shift
    per channel: scale = weight / sqrt(var + eps), shift = bias - mean * scale.
    Folded into a preceding conv (:class:`mtlkit.models.rock.ConvBNReLU`),
    fused with ReLU (:class:`mtlkit.fusion.PostNorm`) or as a frozen BN
    (:class:`mtlkit.backbone.FrozenBatchNorm2d`)."""
    scale = weight * torch.rsqrt(running_var + eps)
    return scale, bias - running_mean * scale
