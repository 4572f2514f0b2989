"""``mtlkit ablate`` as an experiment: plan the runs (:mod:`.plan`), render
each generated split once for all of them (:func:`prepare_data`), run them in
parallel processes (:mod:`.runner`), write the tables (:mod:`.report`)."""

from __future__ import annotations

from typing import Dict, Sequence

from .plan import EXTRA_ROWS, PAPER_ROWS, Row, Run, finalise, plan_runs, select_rows, share_data
from .report import summarise, write_outputs
from .runner import run_all

__all__ = ["EXTRA_ROWS", "PAPER_ROWS", "Row", "Run", "finalise", "plan_runs", "prepare_data",
           "run_all", "select_rows", "share_data", "summarise", "write_outputs"]


def prepare_data(runs: Sequence[Run], data_dir: str, workers: int, progress: bool = True) -> Dict[str, int]:
    """Render (or find already rendered) every split the runs' dataset plugins
    render once (:func:`share_data`), each once, into ``data_dir``, in a form
    that reads back fast; the runs' configs read from there. Returns folder
    -> sample count."""
    folders = share_data(runs, data_dir)
    counts = {}
    for folder, (plan, size) in folders.items():
        plan.write(folder, size, workers, progress)
        counts[folder] = size
    finalise(runs)
    return counts
