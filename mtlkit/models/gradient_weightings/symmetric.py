"""Symmetric gradient weightings (every task counts alike; no primary): PCGrad,
CAGrad, MGDA(-UB), IMTL-G, Aligned-MTL. Each is written on the Gram matrix
of the active tasks' gradients (:class:`mtlkit.gradient_weighting.StepInputs`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mtlkit.gradient_weighting import GradientWeighting, StepInputs

from .simplex import min_norm_simplex, minimize_on_simplex


class PCGrad(GradientWeighting):
    """PCGrad: "Gradient Surgery for Multi-Task Learning" (Yu, Kumar, Gupta,
    Levine, Hausman, Finn, NeurIPS 2020).

    For each task i, g_i^PC starts at g_i; for each other task j in a random
    order, if <g_i^PC, g_j> < 0: g_i^PC <- g_i^PC - (<g_i^PC, g_j> / ||g_j||^2) g_j
    (projection onto the normal plane of the *original* g_j). update =
    sum_i g_i^PC (``reduction: sum``, the paper) or the mean. g_t are the
    gradients of w_t L_t (task ``weight``).

    Options: ``place`` ("representation"), ``shuffle`` (true: a new random
    order per task and step from the seeded generator; false: task order),
    ``reduction`` ("sum"), ``seed`` (None: the torch seed when the model is
    built, i.e. the training seed).
    Cost: k gradients, a k x k Gram matrix, O(k^3) scalar work; state: the
    generator (buffer ``rng_state``).
    """

    defaults = {**GradientWeighting.defaults, "shuffle": True, "reduction": "sum", "seed": None}
    choices = {**GradientWeighting.choices, "reduction": ("sum", "mean")}
    stateful = True
    randomised = True
    uses_task_weights = True

    def directions(self, inputs: StepInputs) -> torch.Tensor:
        m, g = inputs.m, inputs.gram
        d = torch.eye(m, dtype=torch.float64)
        conflicts = 0
        with self.generator(inputs.update_state) as gen:
            for i in range(m):
                order = torch.randperm(m, generator=gen).tolist() if self.options["shuffle"] \
                    else list(range(m))
                for j in order:
                    if j == i or float(g[j, j]) <= 0.0:
                        continue
                    dot = float(d[i] @ g[:, j])
                    if dot < 0.0:
                        d[i, j] -= dot / float(g[j, j])
                        conflicts += 1
        self.note("projections", conflicts)
        if self.options["reduction"] == "mean":
            d /= m
        return d


class CAGrad(GradientWeighting):
    """CAGrad: "Conflict-Averse Gradient Descent for Multi-task Learning"
    (Liu, Liu, Jin, Stone, Liu, NeurIPS 2021).

    g0 = mean_i g_i; the update d maximises min_i <g_i, d> within the ball
    ||d - g0|| <= c ||g0||. Its dual: w* = argmin_{w in simplex}
    <g_w, g0> + c ||g0|| ||g_w|| (g_w = sum_i w_i g_i), then
    d = g0 + (c ||g0|| / ||g_w*||) g_w*. c = 0 is the mean gradient; as c
    grows d approaches MGDA's direction. ``rescale`` divides d by 1 + c^2 to
    keep its length near the mean gradient's. g_t are the gradients of
    w_t L_t (task ``weight``).

    Options: ``place`` ("representation"), ``c`` (0.4), ``rescale`` (false).
    Cost: k gradients, a k x k Gram matrix, a k-variable convex problem
    (SLSQP, CPU); no state.
    """

    defaults = {**GradientWeighting.defaults, "c": 0.4, "rescale": False}
    ranges = {"c": ">= 0"}
    uses_task_weights = True

    def coefficients(self, inputs: StepInputs) -> torch.Tensor:
        m = inputs.m
        mean = torch.full((m,), 1.0 / m, dtype=torch.float64)
        c = float(self.options["c"])
        scale = float(torch.diagonal(inputs.gram).mean())
        if c == 0.0 or scale <= 0.0:
            return mean
        g = (inputs.gram / scale).numpy()  # the weights do not depend on the scale of G
        b = g @ mean.numpy()                  # <g_i, g0>
        g0_sq = float(mean.numpy() @ b)       # ||g0||^2
        if g0_sq <= 0.0:
            return mean
        radius = c * math.sqrt(g0_sq)
        tiny = 1e-18

        def fun(w):
            return float(w @ b) + radius * math.sqrt(max(float(w @ g @ w), 0.0) + tiny)

        def grad(w):
            return b + radius * (g @ w) / math.sqrt(max(float(w @ g @ w), 0.0) + tiny)

        w = minimize_on_simplex(fun, grad, m)
        gw_norm = math.sqrt(max(float(w.numpy() @ g @ w.numpy()), 0.0))
        if gw_norm <= 1e-12 * math.sqrt(g0_sq):
            self.note("gw_zero", 1.0)
            coef = mean
        else:
            coef = mean + (radius / gw_norm) * w
        if self.options["rescale"]:
            coef = coef / (1.0 + c * c)
        return coef


class MGDA(GradientWeighting):
    """MGDA / MGDA-UB: "Multi-Task Learning as Multi-Objective Optimization"
    (Sener & Koltun, NeurIPS 2018).

    update = sum_t alpha_t g^_t with alpha = argmin_{simplex} ||sum alpha_t g^_t||^2,
    the min-norm point of the convex hull of the (normalised) gradients: a
    common descent direction for every task, 0 exactly at Pareto-stationary
    points. At ``place: representation`` it is MGDA-UB (the paper's upper
    bound on the shared representation), at ``parameters`` plain MGDA.
    Normalisation g^_t = g_t / n_t (``normalize``): ``none`` n = 1; ``l2``
    n = ||g_t||; ``loss`` n = L_t; ``loss+`` n = L_t ||g_t||. The solver is
    exact (closed form for 2 tasks, every support up to 12, SLSQP beyond).
    Task ``weight``s only switch tasks off (0): the method sets the scales.

    Options: ``place`` ("representation"), ``normalize`` ("none").
    Cost: k gradients, a k x k Gram matrix, up to 2^k tiny solves; no state.
    """

    defaults = {**GradientWeighting.defaults, "normalize": "none"}
    choices = {**GradientWeighting.choices, "normalize": ("none", "l2", "loss", "loss+")}

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        self.needs_losses = self.options["normalize"] in ("loss", "loss+")

    def coefficients(self, inputs: StepInputs) -> torch.Tensor:
        g = inputs.gram
        norms = torch.sqrt(torch.diagonal(g).clamp_min(0.0))
        mode = self.options["normalize"]
        n = torch.ones(inputs.m, dtype=torch.float64)
        if mode in ("l2", "loss+"):
            n = n * torch.where(norms > 0, norms, torch.ones_like(norms))
        if mode in ("loss", "loss+"):
            losses = inputs.losses
            n = n * torch.where(losses > 0, losses, torch.ones_like(losses))
        alpha = min_norm_simplex(g / (n.unsqueeze(0) * n.unsqueeze(1)))
        for name, a in zip(inputs.names, alpha.tolist()):
            self.note(f"alpha/{name}", a)
        return alpha / n


class IMTLG(GradientWeighting):
    """IMTL-G: the gradient half of "Towards Impartial Multi-task Learning"
    (Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, ICLR 2021).

    update g = sum_t alpha_t g_t, sum alpha = 1, such that g has the same
    projection on every task's unit gradient u_t = g_t / ||g_t||:
    <g, u_1> = <g, u_t>. Closed form: with D rows g_1 - g_t and U rows
    u_1 - u_t (t >= 2), alpha_{2..k} = g_1 U^T (D U^T)^-1, alpha_1 = 1 - sum.
    Written on the Gram matrix (least squares when D U^T is singular, e.g.
    collinear gradients). A task with a zero gradient has no direction: it
    gets 0 and the others are solved alone. Task ``weight``s only switch tasks
    off.

    Options: ``place`` ("representation").
    Cost: k gradients, a k x k Gram matrix, a (k-1) x (k-1) solve; no state.
    """

    def coefficients(self, inputs: StepInputs) -> torch.Tensor:
        m = inputs.m
        g = inputs.gram.numpy()
        diag = np.diag(g)
        live = [i for i in range(m) if diag[i] > 0.0]
        alpha = np.zeros(m)
        if not live:
            return torch.full((m,), 1.0 / m, dtype=torch.float64)
        if len(live) == 1:
            alpha[live[0]] = 1.0
            return torch.from_numpy(alpha)
        q = len(live)
        gl = g[np.ix_(live, live)]
        inv_norm = 1.0 / np.sqrt(np.diag(gl))
        e = np.zeros((q - 1, q))
        e[:, 0] = 1.0
        e[np.arange(q - 1), np.arange(1, q)] = -1.0
        gn = gl * inv_norm[None, :]          # G N: <g_s, u_t>
        a = e @ gn @ e.T                     # D U^T
        rhs = (gn[0:1, :] @ e.T).ravel()     # g_1 U^T
        rest = np.linalg.lstsq(a.T, rhs, rcond=None)[0]
        alpha_live = np.concatenate([[1.0 - rest.sum()], rest])
        alpha[live] = alpha_live
        return torch.from_numpy(alpha)


class AlignedMTL(GradientWeighting):
    """Aligned-MTL: "Independent Component Alignment for Multi-Task Learning"
    (Senushkin, Patakin, Kuznetsov, Konushin, CVPR 2023).

    With the Gram matrix M = G^T G = V diag(lambda) V^T of the gradient matrix
    G = [g_1 ... g_k], the aligned gradients G^ = G B, B = sigma_min V
    diag(lambda)^-1/2 V^T (sigma_min = sqrt of the smallest eigenvalue), have
    orthogonal columns of equal norm sigma_min (condition number 1), and the
    update is G^ w with w the tasks' configured ``weight``s. Eigenvalues below
    1e-10 of the largest are treated as 0 (B on the rest: G^ is then the
    closest equal-norm orthogonal set within the gradients' span).
    ``place: representation`` is the paper's Aligned-MTL-UB.

    Options: ``place`` ("representation").
    Cost: k gradients, a k x k Gram matrix and its eigendecomposition; no state.
    """

    RANK_TOL = 1e-10

    def directions(self, inputs: StepInputs) -> torch.Tensor:
        b, sigma_min = self.basis(inputs.gram)
        self.note("sigma_min", sigma_min)
        return inputs.task_weights.unsqueeze(1) * b.T  # row t: w_t times aligned gradient t

    @classmethod
    def basis(cls, gram: torch.Tensor) -> "tuple[torch.Tensor, float]":
        """(B (m, m), sigma_min): G B has orthogonal columns of norm sigma_min,
        G the gradient matrix whose Gram matrix is ``gram`` (B = 0 when every
        gradient is 0)."""
        lam, v = torch.linalg.eigh(gram)
        top = float(lam.max()) if lam.numel() else 0.0
        if top <= 0.0:
            return torch.zeros_like(gram), 0.0
        keep = lam > cls.RANK_TOL * top
        lam_k, v_k = lam[keep], v[:, keep]
        sigma_min = math.sqrt(float(lam_k.min()))
        return sigma_min * (v_k * lam_k.rsqrt().unsqueeze(0)) @ v_k.T, sigma_min
