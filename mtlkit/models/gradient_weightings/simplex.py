"""Small solvers over the probability simplex, on Gram matrices (float64, CPU).

* :func:`min_norm_simplex`: argmin_{w in simplex} w^T G w, the min-norm point
  of the convex hull of the gradients (MGDA). Exact: closed form for two
  tasks, every support enumerated up to :data:`MAX_EXACT` tasks (each
  support's equality-constrained minimum from its KKT system; the best
  feasible one is the optimum), SLSQP beyond.
* :func:`minimize_on_simplex`: a smooth convex function over the simplex
  (CAGrad's inner problem), SLSQP from the centre.
"""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import torch
from scipy.optimize import minimize
#: largest number of tasks solved by enumerating supports (2^m - 1 small solves)
MAX_EXACT = 12


def _normalised(gram: torch.Tensor) -> np.ndarray:
    """G / mean(diag G) as numpy: the solvers' answers do not depend on the
    scale of G, their tolerances do."""
    g = gram.detach().to("cpu", torch.float64).numpy()
    g = 0.5 * (g + g.T)
    scale = float(np.mean(np.diag(g)))
    return g / scale if scale > 0 else g


def min_norm_two(g11: float, g12: float, g22: float) -> float:
    """The weight a of g1 in argmin_{a in [0, 1]} ||a g1 + (1 - a) g2||^2
    (Sener & Koltun 2018, the two-task case): (g22 - g12) / ||g1 - g2||^2
    clipped to [0, 1]; 0.5 when g1 = g2."""
    denom = g11 - 2.0 * g12 + g22
    if denom <= 0.0:
        return 0.5
    return float(min(1.0, max(0.0, (g22 - g12) / denom)))


def min_norm_simplex(gram: torch.Tensor) -> torch.Tensor:
    """(m,) float64 weights w >= 0, sum 1, minimising w^T G w."""
    m = gram.shape[0]
    if m == 1:
        return torch.ones(1, dtype=torch.float64)
    g = _normalised(gram)
    if m == 2:
        a = min_norm_two(g[0, 0], g[0, 1], g[1, 1])
        return torch.tensor([a, 1.0 - a], dtype=torch.float64)
    if m <= MAX_EXACT:
        return torch.from_numpy(_enumerate_supports(g))
    w = minimize_on_simplex(lambda x: float(x @ g @ x), lambda x: 2.0 * g @ x, m)
    return w


def _enumerate_supports(g: np.ndarray) -> np.ndarray:
    """Every support S: the minimum of w^T G w on the affine hull
    {w_S, sum w_S = 1} (KKT system [[G_S, 1], [1^T, 0]] [w; nu] = [0; 1],
    consistent because G is PSD); the best one with w_S >= 0 is the optimum
    (the optimum lies in the relative interior of some face, where it is
    that face's affine minimum). Ties keep the smallest support."""
    m = g.shape[0]
    best, best_value = None, np.inf
    tol = 1e-12 * max(1.0, float(np.max(np.abs(g))))
    for size in range(1, m + 1):
        for support in itertools.combinations(range(m), size):
            s = list(support)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = g[np.ix_(s, s)]
            kkt[:size, size] = 1.0
            kkt[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
            if np.max(np.abs(kkt @ sol - rhs)) > 1e-8:
                continue
            w_s = sol[:size]
            if np.min(w_s) < -1e-9:
                continue
            w_s = np.clip(w_s, 0.0, None)
            w_s /= w_s.sum()
            value = float(w_s @ g[np.ix_(s, s)] @ w_s)
            if value < best_value - tol:
                best_value = value
                best = np.zeros(m)
                best[s] = w_s
    if best is None:  # cannot happen for a PSD G; keep the centre rather than fail a step
        best = np.full(m, 1.0 / m)
    return best


def minimize_on_simplex(fun: Callable[[np.ndarray], float], grad: Callable[[np.ndarray], np.ndarray],
                        m: int) -> torch.Tensor:
    """argmin of a smooth convex ``fun`` over the simplex (SLSQP from the
    centre), clipped to >= 0 and renormalised; (m,) float64."""
    x0 = np.full(m, 1.0 / m)
    res = minimize(fun, x0, jac=grad, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                   constraints=({"type": "eq", "fun": lambda x: float(np.sum(x) - 1.0),
                                 "jac": lambda x: np.ones_like(x)},),
                   options={"ftol": 1e-12, "maxiter": 500})
    x = np.clip(res.x if np.all(np.isfinite(res.x)) else x0, 0.0, None)
    total = x.sum()
    x = x / total if total > 0 else x0
    return torch.from_numpy(x.astype(np.float64))
