"""AdaBN (Li et al., "Revisiting Batch Normalization For Practical Domain
Adaptation", ICLR workshop 2017): a network's BatchNorm statistics replaced by
those of the target domain's images; no label, no gradient, no other weight
changes.

Each layer's new statistics are its inputs' population mean and (biased)
variance over every pixel of every target image, computed while the earlier
layers already normalise with the target's batch statistics (train-mode BN),
as AdaBN does; the running statistics are then overwritten with them.
"""

from __future__ import annotations

from typing import Dict, Iterable, List

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mtlkit.errors import DataError


def batchnorm_layers(model: nn.Module) -> List[_BatchNorm]:
    """Every BatchNorm layer of ``model`` with running statistics (frozen-stage
    ones included: they are BatchNorms kept in eval mode by their backbone)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


class Moments:
    """Per-channel sums of one layer's inputs (float64)."""

    def __init__(self) -> None:
        self.count = 0
        self.sum = None
        self.sum_sq = None

    def __call__(self, module: nn.Module, inputs) -> None:
        x = inputs[0].detach()
        dims = [d for d in range(x.dim()) if d != 1]
        x64 = x.double()
        s, sq = x64.sum(dims), (x64 * x64).sum(dims)
        self.sum = s if self.sum is None else self.sum + s
        self.sum_sq = sq if self.sum_sq is None else self.sum_sq + sq
        self.count += x.numel() // x.shape[1]

    def state_dict(self) -> Dict[str, object]:
        return {"count": self.count, "sum": self.sum, "sum_sq": self.sum_sq}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.count, self.sum, self.sum_sq = int(state["count"]), state["sum"], state["sum_sq"]

    def mean_var(self):
        mean = self.sum / self.count
        return mean, (self.sum_sq / self.count - mean * mean).clamp_min(0.0)


def adabn(model: nn.Module, images: Iterable[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm layer's running statistics of ``model`` on
    ``images`` (an iterable of (B, 3, H, W) batches on the model's device and
    memory format); the model ends in eval mode. Layers the forward pass does
    not reach keep their statistics. Returns the number of images.

    :raises DataError: when ``images`` yields nothing.
    """
    layers = batchnorm_layers(model)
    moments: Dict[_BatchNorm, Moments] = {bn: Moments() for bn in layers}
    hooks = [bn.register_forward_pre_hook(moments[bn]) for bn in layers]
    model.eval()
    saved = [(bn, bn.momentum, bn.num_batches_tracked.clone()) for bn in layers]
    for bn in layers:
        bn.train()  # normalise with the target batch's statistics on the way
        bn.momentum = 0.0  # and leave the running statistics to the end
    seen = 0
    try:
        # with gradients enabled: inference-only fast paths (e.g. a BatchNorm
        # folded into its convolution under no_grad) would skip the layers
        with torch.enable_grad():
            for batch in images:
                model(batch)
                seen += int(batch.shape[0])
    finally:
        for hook in hooks:
            hook.remove()
        for bn, momentum, tracked in saved:
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(tracked)
        model.eval()
    if seen == 0:
        raise DataError("adabn: no target images to estimate BatchNorm statistics from")
    with torch.no_grad():
        for bn, m in moments.items():
            if m.count == 0:
                continue  # a layer the forward pass does not use keeps its statistics
            mean, var = m.mean_var()
            bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
            bn.running_var.copy_(var.to(bn.running_var.dtype))
    return seen
