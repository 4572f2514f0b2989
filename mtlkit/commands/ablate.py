"""``mtlkit ablate``: the paper's ablation (SSD -> flat MTL -> intensive
pooling -> ROCK fusion), trained over several seeds and reported on a test
split with the spread over seeds and paired gains. See docs/ablation.md.

    mtlkit ablate [CONFIG_DIR] --out DIR [--seeds 0 1 2] [--data-seed S]
                  [--rows ssd,flat_mtl,...] [--jobs N] [--quick] [-o KEY=VALUE ...]

Each synthetic split is rendered once into ``OUT/data/`` and read by every
run; runs are independent processes, ``--jobs`` at a time, one torch thread
each, deterministic per (row, seed, data seed). Rerunning the same command
re-uses finished runs whose resolved config is unchanged and resumes
interrupted ones; a run whose settings changed is trained again (its folder
cleared of what mtlkit wrote there; a folder holding anything else is
refused, never deleted). One ablation at a time per ``--out`` (a lock), and
``ablation.md`` / ``.json`` / ``.png`` never replace files an ablation did not write.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import List

from mtlkit.engine.ablation import EXTRA_ROWS, plan_runs, prepare_data, run_all, select_rows, write_outputs
from mtlkit.engine.ablation.report import aux_columns
from mtlkit.engine.ablation.runner import check_run_dirs
from mtlkit.errors import ConfigError, MtlkitError
from mtlkit.utils.io import check_out_dir
from mtlkit.utils.outdir import check_claim, claim
from mtlkit.utils.paths import kind_of
from mtlkit.utils.runlock import RunLock

#: what the ablation writes into ``--out`` itself (besides the run folders and ``data/``)
REPORT_OUTPUTS = ("ablation.md", "ablation.json", "ablation.png")

#: ``--quick``: a smoke-test scale (seconds per run), not a result
QUICK_OVERRIDES = ["data.train.size=48", "data.val.size=8", "data.test.size=24", "train.log_every=5"]
QUICK_ITERS = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configs", nargs="?", default="configs/synthetic",
                        help="folder holding one config per row (default: %(default)s)")
    parser.add_argument("--out", default="runs/ablation", help="output folder (default: %(default)s)")
    parser.add_argument("--rows", default=None,
                        help="comma-separated config stems (default: ssd,flat_mtl,intensive_pooling,rock; "
                             f"also: {', '.join(EXTRA_ROWS)})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="training seeds (default: 0 1 2)")
    parser.add_argument("--data-seed", type=int, default=None,
                        help="seed of the synthetic world for every split (default: the configs')")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs in parallel, one process and one torch thread each "
                             "(default: the number of usable cores)")
    parser.add_argument("--iters", type=int, default=None,
                        help="training iterations per run (default: the configs' train.iters)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: tiny splits and {QUICK_ITERS} iterations (not a result)")
    parser.add_argument("--data-dir", default=None,
                        help="where the rendered splits are kept, shareable between ablations "
                             "(default: OUT/data)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every row (repeatable)")


def _row_names(rows: "str | None") -> "List[str] | None":
    """``--rows a,b`` -> ["a", "b"]; None (not given) -> the default rows. An
    empty list (``--rows ''``, ``--rows ,``) is an error, not the default."""
    if rows is None:
        return None
    names = [name.strip() for name in rows.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"--rows {rows!r}: expected comma-separated config stems, e.g. --rows ssd,rock "
                          f"(leave --rows out for the default rows)")
    return names


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def main(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.configs):
        raise MtlkitError(f"config folder not found: {args.configs}")
    jobs = usable_cores() if args.jobs is None else args.jobs
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if args.data_seed is not None and args.data_seed < 0:
        raise ConfigError(f"--data-seed must be >= 0, got {args.data_seed}")
    if any(s < 0 for s in args.seeds) or len(set(args.seeds)) != len(args.seeds):
        raise ConfigError(f"--seeds must be distinct non-negative integers, got {args.seeds}")
    if args.iters is not None and args.iters < 1:
        raise ConfigError(f"--iters must be >= 1, got {args.iters}")
    check_out_dir(args.out)
    data_dir = args.data_dir if args.data_dir is not None else os.path.join(args.out, "data")
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ConfigError(f"--data-dir {data_dir} is an existing {kind_of(data_dir)}, expected a folder "
                          f"(the rendered splits are kept there)")
    rows = select_rows(args.configs, _row_names(args.rows))
    overrides: List[str] = (QUICK_OVERRIDES if args.quick else []) + list(args.override)
    iters = args.iters if args.iters is not None else (QUICK_ITERS if args.quick else None)
    runs = plan_runs(rows, args.seeds, args.out, overrides, args.data_seed, iters)
    if os.path.isdir(args.out):  # refused before any work, nothing written
        check_claim(args.out, REPORT_OUTPUTS, "ablate")
        check_run_dirs(runs)
    with RunLock(args.out):
        check_run_dirs(runs)  # again, now that no other ablation writes there
        claim(args.out, REPORT_OUTPUTS, "ablate")
        return _run(args, rows, runs, jobs, data_dir)


def _run(args: argparse.Namespace, rows, runs, jobs: int, data_dir: str) -> int:
    """Render the data, train the runs, write the tables (``--out`` locked and claimed)."""

    def note(message: str) -> None:
        print(f"mtlkit ablate: {message}", file=sys.stderr, flush=True)

    start = time.time()
    note(f"{len(rows)} rows x {len(args.seeds)} seeds = {len(runs)} runs, {jobs} at a time")
    prepare_data(runs, data_dir, workers=jobs, progress=not args.no_progress)
    records_by_name = run_all(runs, jobs, progress=not args.no_progress, note=note)
    records = [records_by_name[run.name] for run in runs]
    data_seeds = sorted({str(r.data_seed) for r in runs})
    info = {"title": os.path.basename(os.path.normpath(args.configs)),
            "data seed": ", ".join(data_seeds), "seeds": " ".join(str(s) for s in args.seeds),
            "iterations": ", ".join(sorted({str(r.iters) for r in runs})),
            "machine": f"{platform.machine()}, {usable_cores()} cores", "jobs": jobs,
            "wall (this invocation)": f"{time.time() - start:.0f} s"}
    if args.quick:
        info["note"] = "--quick: a smoke test, not a result"
    text = write_outputs(args.out, records, rows, info, aux_columns([r.config for r in runs]))
    print(text)
    print(f"written: {os.path.join(args.out, 'ablation.md')}, ablation.json, ablation.png")
    return 0
