"""Primary-aware gradient weightings: the auxiliary gradients are judged by
how they agree with the primary task's, which is never changed.

All three work on the gradients of the configured weighted losses w_t L_t
(``uses_task_weights``), so a task's ``weight`` is its lambda in the papers.
When the primary task is not active in a step (absent or non-finite), there
is nothing to agree with: the auxiliary gradients pass as they are
(``info["primary_missing"] = 1``).
"""

from __future__ import annotations

import math

import torch

from mtlkit.gradient_weighting import GradientWeighting, StepInputs


def cosine(gram: torch.Tensor, i: int, j: int) -> float:
    """cos(g_i, g_j) from the Gram matrix; 0 when either gradient is zero."""
    nn = float(gram[i, i]) * float(gram[j, j])
    if nn <= 0.0:
        return 0.0
    return max(-1.0, min(1.0, float(gram[i, j]) / math.sqrt(nn)))


class GradientCosineSimilarity(GradientWeighting):
    """GCS: "Adapting auxiliary losses using gradient similarity" (Du,
    Czarnecki, Jayakumar, Farajtabar, Pascanu, Lakshminarayanan, 2018).

    update = g_p + sum_a s_a g_a with, for each auxiliary task a and
    c_a = cos(g_p, g_a):

    * ``mode: gate`` (the paper's unweighted version): s_a = 1 if c_a > 0 else 0;
    * ``mode: scale`` (the weighted version): s_a = max(c_a, 0).

    g_t are the gradients of w_t L_t (task ``weight``). Cosines are taken on
    the whole gradient at the chosen place (``info["cos/<task>"]``).

    Options: ``place`` ("representation"), ``mode`` ("gate").
    Cost: k gradients at the place, a k x k Gram matrix; no state.
    """

    defaults = {**GradientWeighting.defaults, "mode": "gate"}
    choices = {**GradientWeighting.choices, "mode": ("gate", "scale")}
    primary_aware = True
    uses_task_weights = True

    def coefficients(self, inputs: StepInputs) -> torch.Tensor:
        c = torch.ones(inputs.m, dtype=torch.float64)
        p = inputs.primary
        if p is None:
            self.note("primary_missing", 1.0)
            return c
        gate = self.options["mode"] == "gate"
        for a, name in enumerate(inputs.names):
            if a == p:
                continue
            cos = cosine(inputs.gram, p, a)
            self.note(f"cos/{name}", cos)
            c[a] = (1.0 if cos > 0.0 else 0.0) if gate else max(cos, 0.0)
        return c


class OnlineAuxiliaryWeighting(GradientWeighting):
    """OL-AUX: "Adaptive Auxiliary Task Weighting for Reinforcement Learning"
    (Lin, Baweja, Kantor, Held, NeurIPS 2019).

    The loss is L_p + sum_a lambda_a L_a (each times its task ``weight``);
    the auxiliary weights follow the gradient of the primary loss N steps
    ahead, which the paper approximates to first order by

        lambda_a <- lambda_a + lr * sum_{j < N} <g_p(theta_j), g_a(theta_j)>

    (``lr`` stands for the paper's beta times the model's step size alpha),
    applied every ``horizon`` = N steps with the inner products summed over
    those steps; lambda starts at 1. ``nonnegative`` keeps lambda >= 0 (an
    auxiliary loss is never ascended; not in the paper). The weights multiply
    the whole auxiliary loss (also its head).

    Options: ``place`` ("representation"), ``lr`` (0.1; the inner products'
    scale depends on the place and the losses: tune it), ``horizon`` (5),
    ``nonnegative`` (true).
    Cost: k gradients, a k x k Gram matrix; state: lambda, the running sums,
    the step count (buffers).
    """

    defaults = {**GradientWeighting.defaults, "lr": 0.1, "horizon": 5, "nonnegative": True}
    ranges = {"lr": ">= 0", "horizon": ">= 1"}
    primary_aware = True
    stateful = True
    uses_task_weights = True
    weights_losses = True

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        k = len(self.task_names)
        self.register_buffer("aux_weights", torch.ones(k, dtype=torch.float64))
        self.register_buffer("dot_sums", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def coefficients(self, inputs: StepInputs) -> torch.Tensor:
        idx = inputs.index
        c = self.aux_weights.detach().cpu()[idx].clone()
        p = inputs.primary
        if p is not None:
            c[p] = 1.0
        else:
            self.note("primary_missing", 1.0)
        for a, name in enumerate(inputs.names):
            if a != p:
                self.note(f"lambda/{name}", float(c[a]))
        if inputs.update_state:
            if p is not None:
                dots = torch.zeros(len(self.task_names), dtype=torch.float64)
                for a in range(inputs.m):
                    if a != p:
                        dots[int(idx[a])] = inputs.gram[p, a]
                self.dot_sums += dots.to(self.dot_sums.device)
            self.steps += 1
            if int(self.steps) % int(self.options["horizon"]) == 0:
                new = self.aux_weights + float(self.options["lr"]) * self.dot_sums
                if self.options["nonnegative"]:
                    new = new.clamp_min(0.0)
                self.aux_weights.copy_(new)
                self.dot_sums.zero_()
        return c


class PrimaryPCGrad(GradientWeighting):
    """Primary-PCGrad / primary-GradVac: only the auxiliary gradients are
    altered, against the primary's (the auxiliary-learning variant discussed
    in ForkMerge, Jiang et al., NeurIPS 2023; PCGrad: Yu et al. 2020; GradVac:
    Wang et al. ICLR 2021).

    With phi_a = cos(g_a, g_p):

    * ``mode: project``: if phi_a < 0, g_a <- g_a - (<g_a, g_p> / ||g_p||^2) g_p
      (onto the normal plane of g_p): no auxiliary gradient opposes the primary.
    * ``mode: gradvac``: per auxiliary task a target cosine phi^_a (EMA of the
      observed phi_a with rate ``ema``, from 0); if phi_a < phi^_a,
      g_a <- g_a + g_p ||g_a|| (phi^ sqrt(1 - phi^2) - phi sqrt(1 - phi^^2))
      / (||g_p|| sqrt(1 - phi^^2)), which sets cos(g_a, g_p) to phi^_a. With
      phi^ = 0 it is ``project``.

    update = g_p + sum_a g_a (gradients of w_t L_t).

    Options: ``place`` ("representation"), ``mode`` ("project"), ``ema``
    (0.01, gradvac only).
    Cost: k gradients, a k x k Gram matrix; state: the targets (gradvac).
    """

    defaults = {**GradientWeighting.defaults, "mode": "project", "ema": 0.01}
    choices = {**GradientWeighting.choices, "mode": ("project", "gradvac")}
    ranges = {"ema": "[0, 1]"}
    primary_aware = True
    stateful = True
    uses_task_weights = True

    #: a target cosine is kept below 1 so sqrt(1 - target^2) never divides by 0
    MAX_TARGET = 1.0 - 1e-6

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        self.register_buffer("targets", torch.zeros(len(self.task_names), dtype=torch.float64))

    def directions(self, inputs: StepInputs) -> torch.Tensor:
        m, p, g = inputs.m, inputs.primary, inputs.gram
        d = torch.eye(m, dtype=torch.float64)
        if p is None:
            self.note("primary_missing", 1.0)
            return d
        gradvac = self.options["mode"] == "gradvac"
        beta = float(self.options["ema"])
        conflicts = 0
        for a, name in enumerate(inputs.names):
            if a == p:
                continue
            phi = cosine(g, a, p)
            self.note(f"cos/{name}", phi)
            if not gradvac:
                if float(g[a, p]) < 0.0:
                    d[a, p] = -float(g[a, p]) / float(g[p, p])
                    conflicts += 1
                continue
            t_index = int(inputs.index[a])
            target = min(float(self.targets[t_index]), self.MAX_TARGET)
            if phi < target and float(g[a, a]) > 0.0 and float(g[p, p]) > 0.0:
                norm_a, norm_p = math.sqrt(float(g[a, a])), math.sqrt(float(g[p, p]))
                root_t = math.sqrt(1.0 - target ** 2)
                d[a, p] = norm_a * (target * math.sqrt(max(0.0, 1.0 - phi ** 2)) - phi * root_t) \
                    / (norm_p * root_t)
                conflicts += 1
            if inputs.update_state:
                self.targets[t_index] = (1.0 - beta) * target + beta * phi
        self.note("altered", conflicts)
        return d
