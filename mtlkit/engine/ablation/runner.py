"""Running an ablation's runs: each in its own process, ``jobs`` at a time.

A run directory holds ``ablate_run.json`` (the run's resolved config and
fingerprint, written before it starts), what the trainer writes (config.yaml,
metrics.jsonl, last.pt, metrics.json, detections.json: evaluated on the test
split) and, once finished, ``result.json`` (the run's record for the table).
``log.txt`` collects the process's output. The folder's record
(:mod:`mtlkit.utils.outdir`) says which of these mtlkit wrote: a run whose
settings changed is cleared of those files only, and a folder holding any
other file is refused, never deleted (:func:`clear_run_dir`).

Every run is deterministic in its config (one torch thread, no data workers,
seeded), so the numbers do not depend on how many run side by side. Ctrl-C
(SIGINT to the process group) makes each running trainer save a checkpoint
and stop; the next invocation resumes them.

Each run is ``python -m mtlkit.engine.ablation.worker RUN_DIR``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from tqdm import tqdm

from mtlkit.engine.trainer import RUN_OUTPUTS
from mtlkit.errors import MtlkitError
from mtlkit.utils.io import atomic_write, is_temp_of
from mtlkit.utils.outdir import RECORD_NAME, adopt, claim, written
from mtlkit.utils.runlock import LOCK_NAME

from .plan import Run

RUN_FILE = "ablate_run.json"
RESULT_FILE = "result.json"
LOG_FILE = "log.txt"
#: what the ablation itself writes into a run folder (the trainer records its own files)
RUNNER_OUTPUTS = (RUN_FILE, LOG_FILE, RESULT_FILE)


class RunFailed(MtlkitError):
    """One or more runs exited with an error (their logs are named)."""


# ----------------------------------------------------------------------------
# the parent side
# ----------------------------------------------------------------------------
def read_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def finished_result(run: Run) -> Optional[Dict[str, Any]]:
    """The run's record when it finished with the same fingerprint."""
    result = read_json(os.path.join(run.run_dir, RESULT_FILE))
    if result is not None and result.get("fingerprint") == run.fingerprint:
        return result["record"]
    return None


def mtlkit_files(run_dir: str) -> List[str]:
    """The names in ``run_dir`` that mtlkit wrote: those its record lists
    (the runner's and the trainer's), the record and lock files, and the
    temporary files of their atomic writes. A run folder from before the
    record (``ablate_run.json`` readable, no record) owns the names the runner
    and the trainer write."""
    record = written(run_dir)
    ours = set(record)
    if not record and read_json(os.path.join(run_dir, RUN_FILE)) is not None:
        ours |= set(RUNNER_OUTPUTS) | set(RUN_OUTPUTS)
    ours |= {RECORD_NAME, LOCK_NAME}
    try:
        present = os.listdir(run_dir)
    except OSError:
        return []
    return [name for name in present if name in ours or any(is_temp_of(name, t) for t in ours)]


def foreign_files(run_dir: str) -> List[str]:
    """The names in ``run_dir`` mtlkit did not write (sorted)."""
    try:
        present = os.listdir(run_dir)
    except OSError:
        return []
    ours = set(mtlkit_files(run_dir))
    return sorted(name for name in present if name not in ours)


def _refuse_foreign(run: Run, foreign: Sequence[str], why: str) -> MtlkitError:
    more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
    return MtlkitError(f"{run.run_dir}: {why}, but the folder holds {foreign[0]}{more}, which mtlkit did not "
                       f"write; nothing was deleted: move it away, or choose another --out")


def check_run_dirs(runs: Sequence[Run]) -> None:
    """Before any work: refuse a run folder that is not an ablation run's
    (no ``ablate_run.json``) yet holds files: they would be mixed with, or
    cleared for, the run's."""
    for run in runs:
        if not os.path.isdir(run.run_dir) or read_json(os.path.join(run.run_dir, RUN_FILE)) is not None:
            continue
        foreign = foreign_files(run.run_dir)
        if foreign:
            raise _refuse_foreign(run, foreign, f"run {run.name} would be trained here")


def clear_run_dir(run: Run) -> None:
    """Remove what mtlkit wrote into ``run.run_dir`` (a run of other settings,
    whose checkpoint cannot continue this one); refuse, deleting nothing,
    when the folder holds anything else."""
    foreign = foreign_files(run.run_dir)
    if foreign:
        raise _refuse_foreign(run, foreign, f"the settings of run {run.name} changed since it ran")
    for name in mtlkit_files(run.run_dir):
        path = os.path.join(run.run_dir, name)
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)  # the trainer's tb/ folder
        else:
            os.remove(path)


def prepare_run_dir(run: Run, note) -> None:
    """Write ``ablate_run.json``; a directory left by other settings is cleared
    of mtlkit's files first (:func:`clear_run_dir`)."""
    path = os.path.join(run.run_dir, RUN_FILE)
    previous = read_json(path)
    if os.path.isdir(run.run_dir) and (previous is None or previous.get("fingerprint") != run.fingerprint):
        if os.listdir(run.run_dir):
            clear_run_dir(run)
            note(f"{run.name}: the settings changed since it ran; training it again")
        previous = None
    os.makedirs(run.run_dir, exist_ok=True)
    if previous is not None and not written(run.run_dir):
        adopt(run.run_dir, RUNNER_OUTPUTS, "ablate")  # a run folder from before the record
    claim(run.run_dir, RUNNER_OUTPUTS, "ablate", what="the run folder")
    if previous is None or previous.get("fingerprint") != run.fingerprint:
        payload = {"fingerprint": run.fingerprint, "model": run.row.stem, "seed": run.seed,
                   "data_seed": run.data_seed, "config": run.config}
        with atomic_write(path, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1, default=str)


def _progress_of(run: Run) -> Dict[str, Any]:
    """The last training record of a running run (iteration, loss)."""
    path = os.path.join(run.run_dir, "metrics.jsonl")
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4096))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return {"iter": 0}
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "train":
            return {"iter": int(record["iter"]), "loss": float(record["loss"])}
    return {"iter": 0}


def run_all(runs: Sequence[Run], jobs: int, progress: bool = True, note=print) -> Dict[str, Dict[str, Any]]:
    """Run every unfinished run, ``jobs`` processes at a time; returns
    run name -> record for all runs.

    :raises RunFailed: when a run's process fails (the others still finish).
    :raises KeyboardInterrupt: on Ctrl-C, after the running ones saved a checkpoint.
    """
    records: Dict[str, Dict[str, Any]] = {}
    todo: List[Run] = []
    for run in runs:
        record = finished_result(run)
        if record is not None:
            records[run.name] = record
        else:
            todo.append(run)
    if len(records):
        note(f"re-using {len(records)} finished run(s) with identical settings")
    if not todo:
        return records
    for run in todo:
        prepare_run_dir(run, note)
    total = sum(r.iters for r in todo)
    bar = tqdm(total=total, unit="it", desc=f"runs 0/{len(todo)}", disable=not progress,
               dynamic_ncols=True, smoothing=0.05)
    finished = {"iters": 0}  # iterations of the runs finished in this invocation
    waiting = list(todo)
    running: Dict[str, Any] = {}
    failures: List[str] = []
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    interrupted = False
    try:
        with _terminate_as_interrupt():
            while waiting or running:
                interrupted = _step(waiting, running, jobs, env, records, failures, bar, todo,
                                    finished, interrupted)
                if interrupted and not running:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        # A Ctrl-C in a terminal reaches the children too (same process group);
        # a signal to this process alone is passed on. SIGTERM, not a second
        # SIGINT: the trainer saves on the first of either, a second SIGINT
        # would stop it at once.
        deadline = time.time() + 120
        for run, proc, log in running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for run, proc, log in running.values():
            try:
                proc.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        bar.close()
        raise
    bar.close()
    if failures:
        raise RunFailed(f"{len(failures)} run(s) failed: " + "; ".join(failures)
                        + " (rerun the same command to retry them; finished runs are kept)")
    return records


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM to the parent stops the ablation like Ctrl-C (runs save, then stop)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ANN001
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _step(waiting: List[Run], running: Dict[str, Any], jobs: int, env: Dict[str, str],
          records: Dict[str, Dict[str, Any]], failures: List[str], bar, todo: Sequence[Run],
          finished: Dict[str, int], interrupted: bool) -> bool:
    """Start runs while slots are free (unless interrupted), collect the
    finished ones, refresh the progress bar. Returns whether a run was
    interrupted (exit 130: a signal reached it but not this process)."""
    while waiting and len(running) < jobs and not interrupted:
        run = waiting.pop(0)
        log = open(os.path.join(run.run_dir, LOG_FILE), "ab")
        proc = subprocess.Popen([sys.executable, "-m", "mtlkit.engine.ablation.worker", run.run_dir],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        running[run.name] = (run, proc, log)
    time.sleep(0.5)
    status = []
    for name, (run, proc, log) in list(running.items()):
        if proc.poll() is None:
            status.append((run, _progress_of(run)))
            continue
        log.close()
        del running[name]
        record = finished_result(run)
        if proc.returncode == 130:
            interrupted = True
        elif proc.returncode != 0 or record is None:
            failures.append(f"{run.name} (exit {proc.returncode}; see {os.path.join(run.run_dir, LOG_FILE)})")
            bar.write(f"mtlkit ablate: run {failures[-1]} failed", file=sys.stderr)
        else:
            records[run.name] = record
            finished["iters"] += run.iters
    done = len(todo) - len(waiting) - len(running)
    bar.n = finished["iters"] + sum(p["iter"] for _, p in status)
    bar.set_description(f"runs {done}/{len(todo)}", refresh=False)
    bar.set_postfix_str("  ".join(
        f"{run.name} {p['iter']}/{run.iters}" + (f" loss {p['loss']:.2f}" if "loss" in p else "")
        for run, p in status), refresh=False)
    bar.refresh()
    return interrupted
