"""``mtlkit ablate`` as an experiment: plan the runs (:mod:`.plan`), render
each synthetic split once for all of them (:func:`prepare_data`), run them in
parallel processes (:mod:`.runner`), write the tables (:mod:`.report`)."""

from __future__ import annotations

import os
from typing import Any, Dict, Sequence

from .plan import EXTRA_ROWS, PAPER_ROWS, Row, Run, finalise, plan_runs, select_rows, shared_data
from .report import summarise, write_outputs
from .runner import run_all

__all__ = ["EXTRA_ROWS", "PAPER_ROWS", "Row", "Run", "finalise", "plan_runs", "prepare_data",
           "run_all", "select_rows", "shared_data", "summarise", "write_outputs"]


def prepare_data(runs: Sequence[Run], data_dir: str, workers: int, progress: bool = True) -> Dict[str, Any]:
    """Render (or find already rendered) every synthetic split the runs read,
    once, into ``data_dir``, packed for fast reading; rewrites the runs'
    configs to read from there. Returns folder -> sample count."""
    from mtlkit.data.synthetic.cli import write_set

    folders = shared_data(runs, data_dir)
    counts = {}
    for folder, entry in folders.items():
        dataset = entry["dataset"]
        write_set(folder, len(dataset), dataset.seed, dataset.split, dataset.options, workers=workers,
                  progress=progress, preview=True, pack=True)
        counts[folder] = len(dataset)
    finalise(runs)
    return counts
