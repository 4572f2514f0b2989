"""The loss-weighting interface: how per-task losses combine into one.

A weighting plugin registers a subclass of :class:`LossWeighting` (kind
``weighting``). The model builds it as ``cls(tasks, **options)`` with
``tasks`` the model's ordered dict name -> :class:`mtlkit.task.Task` (each has
``.weight``, its configured loss weight, and may have ``is_regression``), and
holds it as ``model.weighting``: an ``nn.Module`` whose parameters and buffers
are part of the model (trained by the optimiser, saved in checkpoints).

Call: ``total, weights = model.weighting(losses)`` with ``losses`` a dict name
-> scalar tensor (unweighted, as returned by ``model.losses``); ``total`` is
the scalar to back-propagate, ``weights`` a dict name -> float, the effective
multiplier applied to each loss in this call (for logging).

Optional hooks the trainer calls (the base class does nothing):

* ``after_backward(model, losses)``: after ``total.backward()``, before the
  optimiser step; a weighting may read or rewrite ``.grad`` here. Methods
  that combine per-task gradients (GradNorm, PCGrad, MGDA, GCS...) subclass
  :class:`mtlkit.gradient_weighting.GradientWeighting` instead
  (``docs/weighting.md``).
* ``on_iteration_end(iteration)``: after the optimiser step (0-based count of
  finished iterations).
* ``on_epoch_end(epoch)``: after a pass over the training set.

State that must survive a resume lives in buffers (saved with the model).
A weighting updates its statistics only in training mode (``self.training``),
so evaluation does not disturb them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Mapping, Tuple

import torch
from torch import nn

from mtlkit.options import component_options


class LossWeighting(nn.Module):
    """Base class of loss weightings; see the module docstring.

    Options are declared like every plugin's (``defaults``, ``choices``,
    ``ranges``...: :mod:`mtlkit.options`); the constructor checks them and
    merges them over the defaults (:attr:`options`)."""

    defaults: ClassVar[Dict[str, Any]] = {}

    def __init__(self, tasks: Mapping[str, Any], **options: Any):
        super().__init__()
        self.task_names = list(tasks)
        self.task_weights = {name: float(getattr(task, "weight", 1.0)) for name, task in tasks.items()}
        self.options = dict(component_options(type(self), options, "model.weighting"))

    def forward(self, losses: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, float]]:
        raise NotImplementedError

    # -- optional trainer hooks --------------------------------------------------
    def after_backward(self, model: nn.Module, losses: Dict[str, torch.Tensor]) -> None:
        """Called after ``total.backward()`` and before the optimiser step."""

    def on_iteration_end(self, iteration: int) -> None:
        """Called after each optimiser step."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each pass over the training set."""


def weighted_sum(losses: Dict[str, torch.Tensor], weights: Dict[str, float]) -> torch.Tensor:
    """sum_t weights[t] * losses[t] (a task missing from ``weights`` counts 1)."""
    total = None
    for name, loss in losses.items():
        term = loss * weights.get(name, 1.0)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no loss to weight")
    return total
