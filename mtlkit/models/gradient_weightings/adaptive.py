"""Weightings whose update is a weighted sum of the task gradients with
weights that adapt (GradNorm, FAMO) or are drawn (RLW). Their weights
multiply the whole loss (``weights_losses``): the task-specific heads see the
same weights. FAMO and RLW need no per-task gradient (``needs_gradients``
false): the trainer back-propagates ``head_loss`` once, as for ``fixed``.
"""

from __future__ import annotations

import torch

from mtlkit.gradient_weighting import GradientWeighting, StepInputs


class GradNorm(GradientWeighting):
    """GradNorm: "Gradient Normalization for Adaptive Loss Balancing in Deep
    Multitask Networks" (Chen, Badrinarayanan, Lee, Rabinovich, ICML 2018).

    update = sum_t w_t g_t with learned weights w (from 1). Each step, with
    G_t = w_t ||g_t|| (the norm at the chosen place: the paper takes the last
    shared layer's weights; the representation is that layer's output),
    Gbar = mean_t G_t, loss ratios L~_t = L_t / L_t(0) (L_t(0): the task's
    first loss), r_t = L~_t / mean L~, the weights take one gradient step on
    L_grad = sum_t |G_t - Gbar r_t^alpha| (the target held constant):
    w_t <- w_t - lr sign(G_t - Gbar r_t^alpha) ||g_t||, are clamped at 0 and
    renormalised to keep their sum (k at the start). The step uses the
    weights from before the update.

    Options: ``place`` ("representation"), ``alpha`` (1.5), ``lr`` (0.025;
    the step on w is lr ||g_t||: it depends on the gradients' scale).
    Cost: k gradients, a k x k Gram matrix (its diagonal); state: w, the
    first losses (buffers).
    """

    defaults = {**GradientWeighting.defaults, "alpha": 1.5, "lr": 0.025}
    ranges = {"alpha": ">= 0", "lr": ">= 0"}
    needs_losses = True
    stateful = True
    weights_losses = True

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        k = len(self.task_names)
        self.register_buffer("loss_weights", torch.ones(k, dtype=torch.float64))
        self.register_buffer("initial_losses", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros(k, dtype=torch.bool))

    def coefficients(self, inputs: StepInputs) -> torch.Tensor:
        idx = inputs.index
        w = self.loss_weights.detach().cpu()[idx].clone()
        for name, value in zip(inputs.names, w.tolist()):
            self.note(f"w/{name}", value)
        if inputs.update_state:
            self._step(inputs, w)
        return w

    def _step(self, inputs: StepInputs, w: torch.Tensor) -> None:
        idx, losses = inputs.index, inputs.losses
        seen = self.seen.detach().cpu()[idx]
        if (~seen).any():
            first = self.initial_losses.detach().cpu()
            first[idx[~seen]] = losses[~seen]
            self.initial_losses.copy_(first)
            self.seen[idx.to(self.seen.device)] = True
        start = self.initial_losses.detach().cpu()[idx]
        ratio = torch.where(start > 0, losses / torch.where(start > 0, start, torch.ones_like(start)),
                            torch.ones_like(losses))
        mean_ratio = float(ratio.mean())
        r = ratio / mean_ratio if mean_ratio > 0 else torch.ones_like(ratio)
        norms = torch.sqrt(torch.diagonal(inputs.gram).clamp_min(0.0))
        grad_norms = w * norms
        target = grad_norms.mean() * r.pow(float(self.options["alpha"]))
        step = torch.sign(grad_norms - target) * norms
        new = (w - float(self.options["lr"]) * step).clamp_min(0.0)
        if float(new.sum()) > 0.0:
            new = new * (float(w.sum()) / float(new.sum()))
        else:
            new = w
        all_w = self.loss_weights.detach().cpu()
        all_w[idx] = new
        self.loss_weights.copy_(all_w)


class FAMO(GradientWeighting):
    """FAMO: "Fast Adaptive Multitask Optimization" (Liu, Feng, Stone, Liu,
    NeurIPS 2023).

    Task weights z = softmax(xi) over the active tasks; the update is
    d = sum_t c_t grad L_t with c_t = (z_t / l_t) / sum_s (z_s / l_s),
    l_t = L_t - ``min_loss`` (the gradient of sum_t z_t log l_t, normalised):
    O(1) per step, no per-task gradient. The logits follow the balanced-
    improvement objective: after a step, with delta_t = log l_t(before) -
    log l_t(after), xi <- xi - lr (J_z^T delta + decay xi), J_z the softmax
    Jacobian ((J_z^T delta)_t = z_t (delta_t - <z, delta>)): tasks that
    improved less gain weight. delta compares the losses of consecutive
    steps, each on its own batch (the amortised form; the same batch before
    and after would cost an extra forward). Only tasks active in both steps
    enter an update.

    Options: ``lr`` (0.025), ``decay`` (0.001), ``min_loss`` (0.0, the lower
    bound l* of every loss).
    Cost: one backward (as ``fixed``); state: xi, the previous losses.
    """

    defaults = {"lr": 0.025, "decay": 0.001, "min_loss": 0.0}
    choices = {}
    ranges = {"lr": ">= 0", "decay": ">= 0"}
    needs_gradients = False
    needs_losses = True
    stateful = True
    weights_losses = True

    #: a loss within this of ``min_loss`` counts as that much above it (no log 0)
    EPS = 1e-8

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        k = len(self.task_names)
        self.register_buffer("logits", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("previous_losses", torch.ones(k, dtype=torch.float64))
        self.register_buffer("has_previous", torch.zeros(k, dtype=torch.bool))

    def coefficients(self, inputs: StepInputs) -> torch.Tensor:
        idx = inputs.index
        shifted = (inputs.losses - float(self.options["min_loss"])).clamp_min(self.EPS)
        if inputs.update_state:
            self._update_logits(idx, shifted)
        z = torch.softmax(self.logits.detach().cpu()[idx], dim=0)
        raw = z / shifted
        for name, value in zip(inputs.names, z.tolist()):
            self.note(f"z/{name}", value)
        if inputs.update_state:
            prev = self.previous_losses.detach().cpu()
            prev[idx] = shifted
            self.previous_losses.copy_(prev)
            has = torch.zeros_like(self.has_previous)
            has[idx.to(has.device)] = True
            self.has_previous.copy_(has)
        return raw / raw.sum()

    def _update_logits(self, idx: torch.Tensor, shifted: torch.Tensor) -> None:
        both = self.has_previous.detach().cpu()[idx]
        if not bool(both.any()):
            return
        sel = idx[both]
        delta = torch.log(self.previous_losses.detach().cpu()[sel]) - torch.log(shifted[both])
        xi = self.logits.detach().cpu()
        z = torch.softmax(xi[sel], dim=0)
        grad = z * (delta - (z * delta).sum())
        xi[sel] = xi[sel] - float(self.options["lr"]) * (grad + float(self.options["decay"]) * xi[sel])
        self.logits.copy_(xi)


class RandomLossWeighting(GradientWeighting):
    """RLW: "Reasonable Effectiveness of Random Weighting: A Litmus Test for
    Multi-Task Learning" (Lin, Ye, Xu, Shi, Zhang, TMLR 2022).

    Each step draws weights lambda and the update is sum_t lambda_t grad L_t:

    * ``distribution: normal`` (the paper's main choice): lambda = softmax(z),
      z ~ N(0, I);
    * ``uniform``: softmax(z), z ~ U(0, 1);
    * ``dirichlet``: lambda ~ Dirichlet(1, ..., 1) (normalised Exp(1) draws).

    The weights sum to ``total`` (1 in the paper; the number of tasks
    matches the scale of ``fixed`` with unit weights). A value is drawn for
    every task each step (absent ones included, then dropped), so the stream
    does not depend on which tasks a batch has.

    Options: ``distribution`` ("normal"), ``total`` (1.0), ``seed`` (None:
    the torch seed when the model is built, i.e. the training seed).
    Cost: one backward (as ``fixed``); state: the generator (``rng_state``).
    """

    defaults = {"distribution": "normal", "total": 1.0, "seed": None}
    choices = {"distribution": ("normal", "uniform", "dirichlet")}
    ranges = {"total": "> 0"}
    needs_gradients = False
    stateful = True
    randomised = True
    weights_losses = True

    def coefficients(self, inputs: StepInputs) -> torch.Tensor:
        k = len(self.task_names)
        kind = self.options["distribution"]
        with self.generator(inputs.update_state) as gen:
            if kind == "normal":
                draw = torch.randn(k, generator=gen, dtype=torch.float64)
            else:
                draw = torch.rand(k, generator=gen, dtype=torch.float64)
        sub = draw[inputs.index]
        if kind == "dirichlet":
            e = -torch.log1p(-sub)  # Exp(1) from U[0, 1): -log(1 - u), finite
            weights = e / e.sum() if float(e.sum()) > 0 else torch.full_like(e, 1.0 / len(e))
        else:
            weights = torch.softmax(sub, dim=0)
        return float(self.options["total"]) * weights
