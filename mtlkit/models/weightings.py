"""Built-in loss weightings: fixed, uncertainty (Kendall et al. 2018), dwa
(Liu et al. 2019). Registered by ``mtlkit_plugins.weightings``.
See :mod:`mtlkit.weighting` for the interface.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from mtlkit.weighting import LossWeighting, weighted_sum


class FixedWeighting(LossWeighting):
    """total = sum_t w_t L_t with w_t each task's ``weight`` option."""

    def forward(self, losses):
        weights = {name: self.task_weights.get(name, 1.0) for name in losses}
        return weighted_sum(losses, weights), weights


class UncertaintyWeighting(LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018).

    One learned s_t = log sigma_t^2 per task (initialised at ``init``).

    * ``form: simplified`` (default): total = sum_t exp(-s_t) L_t + s_t, the
      form most implementations use.
    * ``form: kendall``: the paper's factors: regression tasks (the task's
      ``is_regression``) 1/2 exp(-s_t) L_t + 1/2 s_t, classification tasks
      exp(-s_t) L_t + 1/2 s_t.

    The task's ``weight`` option multiplies its term as well (1 keeps the
    method as published). Reported weights: the effective multiplier of L_t.
    Options: ``form`` ("simplified"), ``init`` (0.0).
    """

    defaults = {"form": "simplified", "init": 0.0}
    choices = {"form": ("simplified", "kendall")}

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        self.log_vars = nn.Parameter(torch.full((len(self.task_names),), float(self.options["init"])))
        self.regression = {name: bool(getattr(task, "is_regression", False)) for name, task in tasks.items()}

    def forward(self, losses):
        total = None
        weights: Dict[str, float] = {}
        kendall = self.options["form"] == "kendall"
        for i, name in enumerate(self.task_names):
            if name not in losses:
                continue
            s = self.log_vars[i]
            precision = torch.exp(-s)
            if kendall:
                factor = 0.5 if self.regression[name] else 1.0
                term = factor * precision * losses[name] + 0.5 * s
            else:
                factor = 1.0
                term = precision * losses[name] + s
            term = term * self.task_weights[name]
            weights[name] = float(factor * precision.detach()) * self.task_weights[name]
            total = term if total is None else total + term
        return total, weights


class DWAWeighting(LossWeighting):
    """Dynamic Weight Average (Liu, Johns, Davison, CVPR 2019).

    Training proceeds in periods of ``period`` training-mode calls (one call
    per batch: with gradient accumulation, per micro-batch; ``period: 0``: one
    period per epoch, closed by ``on_epoch_end``). With Lbar_t(k) the mean loss
    of task t over period k, the weights during period k+1 are
    w_t = K exp(r_t / T) / sum_j exp(r_j / T), r_t = Lbar_t(k) / Lbar_t(k-1),
    K the number of tasks (the weights sum to K); 1 for every task during the
    first two periods. The task's ``weight`` option multiplies w_t.
    Options: ``temperature`` (2.0), ``period`` (100).
    """

    defaults = {"temperature": 2.0, "period": 100}
    ranges = {"temperature": "> 0", "period": ">= 0"}

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        k = len(self.task_names)
        self.register_buffer("weights", torch.ones(k, dtype=torch.float64))
        self.register_buffer("history", torch.zeros(2, k, dtype=torch.float64))  # [k-1, k]
        self.register_buffer("periods", torch.zeros((), dtype=torch.int64))  # closed periods
        self.register_buffer("sums", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, losses):
        if self.training:
            for i, name in enumerate(self.task_names):
                if name in losses:
                    self.sums[i] += float(losses[name].detach())
                    self.counts[i] += 1
        weights = {name: float(self.weights[i]) * self.task_weights[name]
                   for i, name in enumerate(self.task_names) if name in losses}
        total = weighted_sum(losses, weights)
        if self.training:
            self.calls += 1
            period = int(self.options["period"])
            if period > 0 and int(self.calls) % period == 0:
                self.close_period()
        return total, weights

    def close_period(self) -> None:
        """End the current averaging period and update the weights."""
        if float(self.counts.sum()) == 0:
            return
        means = torch.where(self.counts > 0, self.sums / self.counts.clamp_min(1), self.history[1])
        self.history[0] = self.history[1]
        self.history[1] = means
        self.periods += 1
        self.sums.zero_()
        self.counts.zero_()
        if int(self.periods) >= 2:
            ratio = self.history[1] / self.history[0].clamp_min(1e-12)
            t = float(self.options["temperature"])
            self.weights.copy_(len(self.task_names) * torch.softmax(ratio / t, dim=0))

    def on_epoch_end(self, epoch: int) -> None:
        if int(self.options["period"]) == 0:
            self.close_period()
