"""How the research scripts write a cell of their tables: metrics in [0, 1]
shown in points (x 100), over seeds."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> str:
    """``"mean ± std"`` of ``values`` x 100 (sample std; 0.0 for one value)."""
    a = 100 * np.asarray(values, float)
    return f"{a.mean():.1f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.1f}"


def paired(a: Sequence[float], b: Sequence[float]) -> str:
    """``"+mean ± std (k/n)"`` of the per-seed differences ``a - b`` x 100;
    k: how many are positive."""
    d = 100 * (np.asarray(a, float) - np.asarray(b, float))
    return f"{d.mean():+.1f} ± {d.std(ddof=1) if len(d) > 1 else 0.0:.1f} ({int((d > 0).sum())}/{len(d)})"
