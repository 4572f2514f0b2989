"""One ablation run, in its own process: ``python -m mtlkit.engine.ablation.worker RUN_DIR``.

Reads ``RUN_DIR/ablate_run.json`` (written by :mod:`.runner`), trains or
resumes the run, which ends with the trainer's evaluation on the test split,
and writes ``RUN_DIR/result.json``: the fingerprint and the run's record.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, Optional

from mtlkit.engine.evaluator import evaluate
from mtlkit.engine.trainer import CHECKPOINT_NAME, train
from mtlkit.errors import MtlkitError, run_guarded
from mtlkit.models.measured import measured_tasks
from mtlkit.resolved import resolve_config
from mtlkit.task import PRIMARY
from mtlkit.utils.io import atomic_write

from .plan import task_classes
from .runner import RESULT_FILE, RUN_FILE, read_json


def _scalars(figures: Dict[str, Any]) -> Dict[str, float]:
    return {k: float(v) for k, v in figures.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "/" not in k}


def _primary_task(config: Dict[str, Any]) -> str:
    for name, cls in task_classes(config):
        if getattr(cls, "role", None) == PRIMARY:
            return name
    raise MtlkitError("the config has no primary task")


def record_of(run_info: Dict[str, Any], metrics: Dict[str, Dict[str, Any]], seconds: float,
              images_per_s: Optional[float],
              without_sensor: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """The run's row of ``ablation.json``: model, seed, data_seed, AP, AP50,
    AP75 (fractions), the auxiliary metrics as ``task/metric``, iters,
    train_seconds; for a run trained with measured inputs also
    ``without_sensor: {AP, AP50, AP75}`` (its metrics with no sensor,
    ``without_sensor``)."""
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
    if without_sensor is not None:
        bare = without_sensor.get(primary, {})
        record["without_sensor"] = {k: float(bare[k]) if k in bare else float("nan")
                                    for k in ("AP", "AP50", "AP75")}
    record.update(iters=int(config["train"]["iters"]), train_seconds=round(seconds, 2),
                  images_per_s=images_per_s)
    return record


def reads_measurements(config: Dict[str, Any]) -> bool:
    """Whether a run's config's model reads measured inputs (``model.measured``)."""
    return bool(measured_tasks(resolve_config(config).model_spec.measured))


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
    info = read_json(os.path.join(run_dir, RUN_FILE))
    if info is None:
        raise MtlkitError(f"{run_dir}: no readable {RUN_FILE}")
    start = time.time()
    # resume=True: continue from last.pt, or start over when the run was
    # stopped before its first checkpoint
    metrics = train(info["config"], run_dir, resume=True)
    wall = time.time() - start
    without_sensor = None
    if reads_measurements(info["config"]):
        # the same checkpoint on the same test split, the sensor off (a dead sensor)
        without_sensor = evaluate(info["config"], os.path.join(run_dir, CHECKPOINT_NAME), measured=())
    seconds, rate = _train_time(run_dir)
    record = record_of(info, metrics, seconds or wall, rate, without_sensor)
    with atomic_write(os.path.join(run_dir, RESULT_FILE), "w", encoding="utf-8") as handle:
        json.dump({"fingerprint": info["fingerprint"], "record": record}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_guarded(lambda: work(sys.argv[1])))
