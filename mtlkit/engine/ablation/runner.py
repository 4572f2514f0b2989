"""Running an ablation's runs: each in its own process, ``jobs`` at a time.

A run directory holds ``ablate_run.json`` (the run's resolved config and
fingerprint, written before it starts), what the trainer writes (config.yaml,
metrics.jsonl, last.pt, metrics.json, detections.json: evaluated on the test
split) and, once finished, ``result.json`` (the run's record for the table).
``log.txt`` collects the process's output.

Every run is deterministic in its config (one torch thread, no data workers,
seeded), so the numbers do not depend on how many run side by side. Ctrl-C
(SIGINT to the process group) makes each running trainer save a checkpoint
and stop; the next invocation resumes them.

The worker entry point is ``python -m mtlkit.engine.ablation.runner RUN_DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from mtlkit.errors import MtlkitError
from mtlkit.utils.io import atomic_write

from .plan import Run

RUN_FILE = "ablate_run.json"
RESULT_FILE = "result.json"
LOG_FILE = "log.txt"


class RunFailed(MtlkitError):
    """One or more runs exited with an error (their logs are named)."""


# ----------------------------------------------------------------------------
# the parent side
# ----------------------------------------------------------------------------
def _read_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def finished_result(run: Run) -> Optional[Dict[str, Any]]:
    """The run's record when it finished with the same fingerprint."""
    result = _read_json(os.path.join(run.run_dir, RESULT_FILE))
    if result is not None and result.get("fingerprint") == run.fingerprint:
        return result["record"]
    return None


def prepare_run_dir(run: Run, note) -> None:
    """Write ``ablate_run.json``; a directory left by other settings is cleared
    first (its checkpoint cannot continue this run)."""
    path = os.path.join(run.run_dir, RUN_FILE)
    previous = _read_json(path)
    if os.path.isdir(run.run_dir) and (previous is None or previous.get("fingerprint") != run.fingerprint):
        if os.listdir(run.run_dir):
            note(f"{run.name}: the settings changed since it ran; training it again")
        shutil.rmtree(run.run_dir)
    os.makedirs(run.run_dir, exist_ok=True)
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
    from tqdm import tqdm

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
    waiting = list(todo)
    running: Dict[str, Any] = {}
    finished_iters, failures = 0, []
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                run = waiting.pop(0)
                log = open(os.path.join(run.run_dir, LOG_FILE), "ab")
                proc = subprocess.Popen([sys.executable, "-m", "mtlkit.engine.ablation.runner", run.run_dir],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env)
                running[run.name] = (run, proc, log)
            time.sleep(0.5)
            status = []
            for name, (run, proc, log) in list(running.items()):
                if proc.poll() is None:
                    p = _progress_of(run)
                    status.append((run, p))
                    continue
                log.close()
                del running[name]
                finished_iters += run.iters
                record = finished_result(run)
                if proc.returncode != 0 or record is None:
                    failures.append(f"{run.name} (exit {proc.returncode}; see "
                                    f"{os.path.join(run.run_dir, LOG_FILE)})")
                    if bar is not None:
                        bar.write(f"mtlkit ablate: run {failures[-1]} failed", file=sys.stderr)
                else:
                    records[run.name] = record
            done = len(todo) - len(waiting) - len(running)
            bar.n = finished_iters + sum(p["iter"] for _, p in status)
            bar.set_description(f"runs {done}/{len(todo)}", refresh=False)
            bar.set_postfix_str("  ".join(
                f"{run.name} {p['iter']}/{run.iters}" + (f" loss {p['loss']:.2f}" if "loss" in p else "")
                for run, p in status), refresh=False)
            bar.refresh()
    except KeyboardInterrupt:
        # The children got the SIGINT too (same process group): let them save.
        deadline = time.time() + 120
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


# ----------------------------------------------------------------------------
# the worker side
# ----------------------------------------------------------------------------
def _scalars(figures: Dict[str, Any]) -> Dict[str, float]:
    return {k: float(v) for k, v in figures.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "/" not in k}


def _primary_task(config: Dict[str, Any]) -> str:
    from mtlkit.registry import get_registry
    from mtlkit.task import PRIMARY

    registry = get_registry()
    for name, options in (config["model"].get("tasks") or {}).items():
        if options is None:
            continue
        kind = options.get("name", name) if isinstance(options, dict) else name
        if getattr(registry.get("task", kind), "role", None) == PRIMARY:
            return name
    raise MtlkitError("the config has no primary task")


def record_of(run_info: Dict[str, Any], metrics: Dict[str, Dict[str, Any]], seconds: float,
              images_per_s: Optional[float]) -> Dict[str, Any]:
    """The run's row of ``ablation.json``: model, seed, data_seed, AP, AP50,
    AP75 (fractions), the auxiliary metrics as ``task/metric``, iters,
    train_seconds."""
    config = run_info["config"]
    primary = _primary_task(config)
    main = metrics.get(primary, {})
    record: Dict[str, Any] = {"model": run_info["model"], "seed": run_info["seed"],
                              "data_seed": run_info["data_seed"]}
    for key in ("AP", "AP50", "AP75"):
        record[key] = float(main[key]) if key in main else float("nan")
    for task, figures in metrics.items():
        if task != primary and isinstance(figures, dict):
            record.update({f"{task}/{k}": v for k, v in _scalars(figures).items()})
    record.update(iters=int(config["train"]["iters"]), train_seconds=round(seconds, 2),
                  images_per_s=images_per_s)
    return record


def _train_time(run_dir: str) -> tuple:
    """(seconds spent in training steps, images per second), summed over the
    logged windows of metrics.jsonl (so a resumed run counts every part once)."""
    seconds, images = 0.0, 0
    try:
        with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return 0.0, None
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "train" and rec.get("seconds"):
            seconds += float(rec["seconds"])
            images += int(rec.get("images") or 0)
    return seconds, (images / seconds if seconds > 0 else None)


def work(run_dir: str) -> int:
    """Train (or resume) the run of ``run_dir``, evaluate it on the test split,
    write ``result.json``."""
    from mtlkit.engine.trainer import CHECKPOINT_NAME, train

    info = _read_json(os.path.join(run_dir, RUN_FILE))
    if info is None:
        raise MtlkitError(f"{run_dir}: no readable {RUN_FILE}")
    resume = os.path.isfile(os.path.join(run_dir, CHECKPOINT_NAME))
    start = time.time()
    metrics = train(info["config"], run_dir, resume=resume)
    wall = time.time() - start
    seconds, rate = _train_time(run_dir)
    record = record_of(info, metrics, seconds or wall, rate)
    with atomic_write(os.path.join(run_dir, RESULT_FILE), "w", encoding="utf-8") as handle:
        json.dump({"fingerprint": info["fingerprint"], "record": record}, handle, indent=2)
    return 0


if __name__ == "__main__":
    from mtlkit.cli import run_guarded

    raise SystemExit(run_guarded(lambda: work(sys.argv[1])))
