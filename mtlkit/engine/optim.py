"""Optimisers and the learning-rate schedule from the ``train`` config section.

The schedule is a pure function of the iteration (:func:`lr_factor`), applied
before every optimiser step (:class:`LRSchedule`), so resuming needs nothing
but the iteration. It is the one schedule of every training loop: the
trainer's, and through it ``mtlkit pretrain`` and the research probe.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping

import torch
from torch import nn

from mtlkit.errors import ConfigError

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> List[Dict[str, Any]]:
    """Trainable parameters; with ``no_decay_norm_bias`` biases and
    normalisation weights go to a group without weight decay."""
    if not no_decay_norm_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad],
                 "weight_decay": weight_decay}]
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if isinstance(module, _NORM_TYPES) or name == "bias" else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, opt: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or Adam / AdamW from ``train.optimizer``."""
    name = opt["name"]
    groups = param_groups(model, float(opt["weight_decay"]), bool(opt["no_decay_norm_bias"]))
    if not any(g["params"] for g in groups):
        raise ConfigError("the model has no trainable parameters")
    lr = float(opt["lr"])
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(opt["momentum"]),
                               nesterov=bool(opt["nesterov"]) and float(opt["momentum"]) > 0)
    betas = tuple(float(b) for b in opt["betas"])
    if len(betas) != 2:
        raise ConfigError(f"train.optimizer.betas: expected two numbers, got {list(opt['betas'])}")
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(name)
    if cls is None:
        raise ConfigError(f"train.optimizer.name: unknown optimizer {name!r}; expected sgd, adam or adamw")
    fused = opt.get("fused")
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return cls(groups, lr=lr, betas=betas, eps=float(opt["eps"]), fused=bool(fused))


def milestones(schedule: Mapping[str, Any], iters: int) -> List[int]:
    """Milestones in iterations: values < 1 are fractions of ``iters``."""
    out = []
    for m in schedule.get("milestones") or []:
        if not isinstance(m, (int, float)) or isinstance(m, bool) or m < 0:
            raise ConfigError(f"train.schedule.milestones: expected non-negative numbers, got {m!r}")
        out.append(int(round(m * iters)) if m < 1 else int(m))
    return sorted(out)


def lr_factor(it: int, iters: int, schedule: Mapping[str, Any]) -> float:
    """The lr multiplier for the optimiser step of iteration ``it`` (0-based).

    ``warmup_iters``: linear ramp from ``warmup_factor`` to 1 over the first
    iterations, multiplied with the main schedule: ``constant`` (1),
    ``multistep`` (``gamma`` ** number of milestones <= it) or ``cosine``
    (from 1 to ``min_lr_factor`` over ``iters``).
    """
    name = schedule["name"]
    if name == "constant":
        f = 1.0
    elif name == "multistep":
        f = float(schedule["gamma"]) ** sum(1 for m in milestones(schedule, iters) if it >= m)
    elif name == "cosine":
        lo = float(schedule["min_lr_factor"])
        t = min(1.0, it / max(1, iters))
        f = lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t))
    else:
        raise ConfigError(f"train.schedule.name: unknown schedule {name!r}; expected multistep, cosine or constant")
    warm = int(schedule["warmup_iters"])
    if warm > 0 and it < warm:
        w0 = float(schedule["warmup_factor"])
        f *= w0 + (1.0 - w0) * it / warm
    return f


class LRSchedule:
    """Sets every param group's lr to ``initial_lr * lr_factor(it)``."""

    def __init__(self, optimizer: torch.optim.Optimizer, iters: int, schedule: Mapping[str, Any]):
        self.optimizer, self.iters, self.schedule = optimizer, int(iters), dict(schedule)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.last_iter = -1

    def step(self, it: int) -> float:
        """Set the lr for iteration ``it``; returns the first group's lr."""
        f = lr_factor(it, self.iters, self.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f
        self.last_iter = int(it)
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> Dict[str, Any]:
        return {"name": str(self.schedule["name"]), "last_iter": self.last_iter, "iters": self.iters}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_iter = int(state.get("last_iter", -1))
