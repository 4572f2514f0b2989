"""Which parts of a trained model move during test-time adaptation.

``--params`` names one of :data:`PARAMS`:

* ``bn``: the affine weights and the running statistics of every BatchNorm
  layer outside the primary task's head (TENT's choice: the statistics are
  re-estimated on the target as the affine weights are fitted);
* ``encoder``: the ROCK block's shared encoder (the features every auxiliary
  head and the fusion read), as test-time training adapts its shared part;
* ``last_stage``: the backbone's last stage (:meth:`mtlkit.backbone.Backbone.stages`);
* ``all_but_head``: the backbone and the ROCK block, everything but the primary
  task's head.

Only the chosen modules' parameters require a gradient, and only their
BatchNorm layers run in training mode (re-estimating their statistics); every
other parameter and buffer keeps its value, bit for bit.
"""

from __future__ import annotations

from typing import List, Sequence

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mtlkit.errors import ConfigError

from .adabn import batchnorm_layers

PARAMS = ("bn", "encoder", "last_stage", "all_but_head")


def _head(model: nn.Module) -> nn.Module:
    return model.heads[model.primary]


def moving_modules(model: nn.Module, params: str) -> List[nn.Module]:
    """The modules of ``model`` (a ``MultiTaskModel``) whose parameters move
    under ``params`` (one of :data:`PARAMS`).

    :raises ConfigError: an unknown choice, or one the model does not have
        (``encoder`` of a model without a ROCK block, ``last_stage`` of a
        backbone without stages)."""
    if params not in PARAMS:
        raise ConfigError(f"--params must be one of {', '.join(PARAMS)}, got {params!r}")
    if params == "bn":
        head = set(map(id, _head(model).modules()))
        return [m for m in batchnorm_layers(model) if id(m) not in head]
    if params == "encoder":
        block = getattr(model, "block", None)
        if block is None or getattr(block, "encoder", None) is None:
            raise ConfigError("--params encoder: this model has no ROCK block with a shared encoder "
                              "(an SSD); choose bn, last_stage or all_but_head")
        return [block.encoder]
    if params == "last_stage":
        stages = model.backbone.stages() if callable(getattr(model.backbone, "stages", None)) else []
        if not stages:
            raise ConfigError(f"--params last_stage: backbone {type(model.backbone).__name__} names no "
                              "stages; choose bn, encoder or all_but_head")
        return [stages[-1]]
    return [m for m in (model.backbone, getattr(model, "block", None)) if m is not None]


def moving_norms(modules: Sequence[nn.Module]) -> List[_BatchNorm]:
    """The BatchNorm layers (with running statistics) inside ``modules``, each once."""
    seen, out = set(), []
    for module in modules:
        for bn in batchnorm_layers(module):
            if id(bn) not in seen:
                seen.add(id(bn))
                out.append(bn)
    return out


def freeze_all_but(model: nn.Module, modules: Sequence[nn.Module]) -> List[nn.Parameter]:
    """``requires_grad`` off for every parameter of ``model``, on for those of
    ``modules`` (frozen backbone stages included: the user chose them);
    returns the moving parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    moving, seen = [], set()
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                p.requires_grad_(True)
                moving.append(p)
    return moving


def set_adapt_modes(model: nn.Module, norms: Sequence[_BatchNorm]) -> None:
    """Evaluation mode everywhere but the moving BatchNorm layers (training
    mode: they normalise with the target batch's statistics and update
    their running ones)."""
    model.eval()
    for bn in norms:
        bn.train()
