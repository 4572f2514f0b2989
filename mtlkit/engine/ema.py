"""Exponential moving average of a model's weights (evaluated instead of the
raw weights when ``train.ema.evaluate``)."""

from __future__ import annotations

from typing import Dict, Mapping

import torch
from torch import nn


class ModelEMA:
    """``ema = d * ema + (1 - d) * w`` after every optimiser step, for every
    floating-point parameter and buffer; integer buffers (BN's counters) are
    copied. With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))``
    after ``n`` updates, so early averages are not dominated by the init."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup: bool = True):
        self.decay, self.warmup = float(decay), bool(warmup)
        self.updates = 0
        self.state: Dict[str, torch.Tensor] = {
            k: v.detach().clone() for k, v in model.state_dict().items()
        }

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for k, v in model.state_dict().items():
            e = self.state[k]
            if e.dtype.is_floating_point:
                e.mul_(d).add_(v.detach().to(e.dtype), alpha=1.0 - d)
            else:
                e.copy_(v)
        self.updates += 1

    def state_dict(self) -> Dict[str, object]:
        return {"decay": self.decay, "updates": self.updates, "weights": dict(self.state)}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.updates = int(state["updates"])
        weights = state["weights"]
        for k, v in self.state.items():
            v.copy_(weights[k])  # type: ignore[index]
