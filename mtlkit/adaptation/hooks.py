"""The adaptation's hooks on the training loop: the target test scores
``before`` and ``after``, online prediction, ``adapt.json``; and the in-order
stream of online adaptation (:class:`StreamOnce`)."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np
import torch

from mtlkit.engine.checkpoint import preserved_rng
from mtlkit.engine.data import ShardedBatches
from mtlkit.engine.evaluator import evaluate_model
from mtlkit.engine.hooks import HookBase
from mtlkit.engine.runtime import eval_loader_settings
from mtlkit.engine.state import FINISHED
from mtlkit.utils.io import atomic_write

#: the primary task's figures copied to the top level of a score
HEADLINE = ("AP", "AP50", "AP75")


def flat_scores(values: Mapping[str, Mapping[str, float]], primary: str) -> Dict[str, float]:
    """task -> metric -> value (an evaluation) -> ``{AP, AP50, AP75,
    <task>/<metric>...}`` (the primary task's headline figures, then every
    other task's)."""
    out = {k: float(v) for k, v in values.get(primary, {}).items() if k in HEADLINE}
    for task, metrics in values.items():
        if task != primary:
            out.update({f"{task}/{k}": float(v) for k, v in metrics.items()})
    return out


class StreamOnce(ShardedBatches):
    """Every sample once, in order, in batches of ``batch_size`` (the last one
    may be smaller): the test stream of online adaptation. One process."""

    def __init__(self, n: int, batch_size: int) -> None:
        super().__init__(n, batch_size, 1, 0, 0, shuffle=False)
        self.batches_per_epoch = math.ceil(self.n / self.batch_size)

    def epoch_batches(self, epoch: int, start: int = 0) -> List[List[int]]:
        return [list(range(b * self.batch_size, min(self.n, (b + 1) * self.batch_size)))
                for b in range(int(start), self.batches_per_epoch)]


def _to_saved(value: Any) -> Any:
    """A metric's state as a checkpoint holds it (``weights_only``): numpy arrays as tensors."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, (list, tuple)):
        return [_to_saved(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_saved(v) for k, v in value.items()}
    return value


def _from_saved(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            return value["__ndarray__"].numpy()
        return {k: _from_saved(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_saved(v) for v in value]
    return value


def metric_state(metric: Any) -> Dict[str, Any]:
    """What a metric accumulator has gathered (its attributes but caches)."""
    return {k: _to_saved(v) for k, v in vars(metric).items() if not k.startswith("_")}


def load_metric_state(metric: Any, state: Mapping[str, Any]) -> None:
    for key, value in state.items():
        setattr(metric, key, _from_saved(value))
    if hasattr(metric, "_cache"):
        metric._cache = None


class TargetScores(HookBase):
    """Scores on the target test set and ``OUT/adapt.json``.

    ``before_train``: the model as loaded is scored on ``test_set`` (once: a
    resumed run keeps the first figures). Offline, ``after_train`` scores the
    adapted model there; online (``online=True``, the training data *is* the
    test stream), ``after_step`` predicts the batch just adapted on, with the
    weights after that step, and the ``after`` figures are those predictions'.
    ``info`` (the options) goes into ``adapt.json`` as it is."""

    name = "TargetScores"

    def __init__(self, test_set: Any, online: bool, info: Mapping[str, Any],
                 log: Callable[[str], None] = print) -> None:
        self.test_set, self.online, self.info, self.log = test_set, bool(online), dict(info), log
        self.before: Optional[Dict[str, float]] = None
        self.metrics: Dict[str, Any] = {}
        self.objective: Dict[str, Dict[str, float]] = {}
        self.adapt_seconds = 0.0
        self._t0 = 0.0

    # -- scoring ------------------------------------------------------------------
    def _evaluate(self) -> Dict[str, float]:
        state = self.state
        batch_size, workers = eval_loader_settings(state.cfg)
        with preserved_rng():
            values, _, _ = evaluate_model(state.core, self.test_set, batch_size, state.collate_fn,
                                          state.device, workers, amp_dtype=state.amp_dtype)
        return flat_scores(values, state.core.primary)

    def _new_metrics(self) -> Dict[str, Any]:
        return {name: m for name, task in self.state.core.tasks.items() if (m := task.new_metric()) is not None}

    def before_train(self) -> None:
        if not self.metrics:
            self.metrics = self._new_metrics()
        if self.before is None:
            self.before = self._evaluate()
            self.log("before: " + _headline(self.before))

    def before_step(self) -> None:
        self._t0 = time.perf_counter()

    def after_step(self) -> None:
        state = self.state
        self.adapt_seconds += time.perf_counter() - self._t0
        losses = dict(state.result.losses)
        if "first" not in self.objective:
            self.objective["first"] = losses
        self.objective["last"] = losses
        if self.online:
            self._predict(state.batch)

    @torch.no_grad()
    def _predict(self, batch: Dict[str, Any]) -> None:
        core = self.state.core
        was_training = core.training
        core.eval()
        try:
            images = batch["image"]
            size = (int(images.shape[-2]), int(images.shape[-1]))
            preds = core.postprocess(core(images), size)
            for name, metric in self.metrics.items():
                if name in preds:
                    metric.update(preds[name], batch)
        finally:
            core.train(was_training)

    def after_train(self) -> None:
        state = self.state
        if state.outcome != FINISHED:
            return
        if self.online:
            values = {name: {k: float(v) for k, v in m.compute().items() if isinstance(v, (int, float))}
                      for name, m in self.metrics.items()}
            values = {k: v for k, v in values.items() if v and not all(math.isnan(x) for x in v.values())}
            after = flat_scores(values, state.core.primary)
        elif state.iter == 0:
            after = dict(self.before)  # nothing moved (tests/test_adapt.py: bit for bit)
        else:
            after = self._evaluate()
        self.log("after:  " + _headline(after))
        # images adapted on: offline every batch is full; online the stream is the test set, once
        images = len(self.test_set) if self.online else int(state.images_per_step) * state.iter
        record = {**self.info, "iterations": state.iter, "images": images,
                  "adapt_seconds": round(self.adapt_seconds, 2),
                  "before": self.before, "after": after,
                  "gain": {k: after[k] - self.before[k] for k in after if k in (self.before or {})},
                  "objective": self.objective, "checkpoint_out": state.checkpoint_path}
        with atomic_write(os.path.join(state.out_dir, "adapt.json")) as handle:
            json.dump(record, handle, indent=1)

    # -- resume -------------------------------------------------------------------
    def state_dict(self) -> Optional[Dict[str, Any]]:
        return {"before": self.before, "objective": self.objective, "adapt_seconds": self.adapt_seconds,
                "metrics": {k: metric_state(m) for k, m in self.metrics.items()} if self.online else {}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.before = dict(state["before"]) if state.get("before") is not None else None
        self.objective = dict(state.get("objective") or {})
        self.adapt_seconds = float(state.get("adapt_seconds") or 0.0)
        saved = state.get("metrics") or {}
        if saved:
            self.metrics = self._new_metrics()
            for name, metric in self.metrics.items():
                if name in saved:
                    load_metric_state(metric, saved[name])


def _headline(scores: Mapping[str, float]) -> str:
    return " ".join(f"{k} {100 * scores[k]:.1f}" for k in HEADLINE if k in scores)
