"""A printable multi-task table of metric results."""

from __future__ import annotations

import math
from typing import Mapping


def _fmt(value, digits: int) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "nan"
    return f"{v:.{digits}f}"


def summary(results: Mapping[str, Mapping[str, float]], per_class: bool = False, digits: int = 4) -> str:
    """Format ``{task: {metric: value}}`` as an aligned three-column table.

    Keys holding a "/" (per-class figures such as ``AP/chair``) are shown only with
    ``per_class=True``; non-numeric values (e.g. a nested ``per_class`` dict) are
    skipped. A task with no figure shows a dash, or "(no labelled sample)" when
    its entry is empty (no sample of the split carried its label).

    Example::

        task       metric        value
        ---------  ----------  -------
        detection  AP           0.1850
                   AP50         0.3760
        depth      abs_rel      0.1420
    """
    rows = []
    for task, values in results.items():
        shown = [
            (k, v) for k, v in (values or {}).items()
            if not isinstance(v, Mapping) and (per_class or "/" not in str(k))
        ]
        if not shown:
            rows.append((str(task), "-" if values else "(no labelled sample)", ""))
        for i, (k, v) in enumerate(shown):
            rows.append((str(task) if i == 0 else "", str(k), _fmt(v, digits)))
    header = ("task", "metric", "value")
    widths = [max(len(r[c]) for r in rows + [header]) for c in range(3)]
    lines = [
        f"{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]:>{widths[2]}}",
        f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * widths[2]}",
    ]
    lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}".rstrip() for a, b, c in rows]
    return "\n".join(lines)
