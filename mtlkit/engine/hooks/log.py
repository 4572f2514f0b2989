"""Training records, the progress bar and the training curves
(:class:`TrainLog`, :class:`TrainingCurves`)."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Mapping, Optional

from mtlkit import viz
from mtlkit.engine import dist
from mtlkit.engine.hooks.base import HookBase
from mtlkit.engine.logger import fmt, progress_bar
from mtlkit.engine.state import FINISHED


class Window:
    """Running means over a logging window."""

    def __init__(self) -> None:
        self.reset()
        self._rate = 0.0

    def reset(self) -> None:
        self.n, self.images, self.seconds = 0, 0, 0.0
        self.losses: Dict[str, float] = {}
        self.scalars: Dict[str, float] = {}
        self.total = 0.0
        self.weights: Dict[str, float] = {}

    def add(self, losses: Mapping[str, float], total: float, images: int, seconds: float,
            weights: Mapping[str, Any], scalars: Optional[Mapping[str, float]] = None) -> None:
        self.n += 1
        self.images += images
        self.seconds += seconds
        self.total += total
        for k, v in losses.items():
            self.losses[k] = self.losses.get(k, 0.0) + v
        for k, v in (scalars or {}).items():
            self.scalars[k] = self.scalars.get(k, 0.0) + v
        self.weights = {k: float(v) for k, v in (weights or {}).items()}
        self._rate = images / seconds if seconds > 0 else 0.0

    def rate(self) -> float:
        return self._rate

    def record(self, iteration: int, lr: Optional[float], data_state: Mapping[str, int]) -> Dict[str, Any]:
        """The ``train`` record of ``metrics.jsonl`` (docs/engine.md); ``scalars``
        only when the step reports some."""
        n = max(1, self.n)
        record = {"event": "train", "iter": iteration, "loss": self.total / n,
                  "losses": {k: v / n for k, v in self.losses.items()}, "weights": self.weights,
                  "lr": lr, "images_per_s": self.images / self.seconds if self.seconds > 0 else None,
                  "images": self.images, "seconds": self.seconds,
                  "epoch": data_state["epoch"], "time": time.time()}
        if self.scalars:
            record["scalars"] = {k: v / n for k, v in self.scalars.items()}
        return record


class TrainLog(HookBase):
    """A ``train`` record (means over the window) every ``every`` iterations
    (``train.log_every``) and at the last one; the progress bar (``progress``:
    losses, lr, images/s, ETA) on rank 0. The time of an iteration counts from
    this hook's ``before_step`` to its ``after_step``."""

    def __init__(self, every: int, progress: bool) -> None:
        self.every, self.progress = max(1, int(every)), bool(progress)
        self.window = Window()
        self._t0 = 0.0

    def before_train(self) -> None:
        state = self.state
        self.window = Window()
        state.bar = progress_bar(state.iters, state.start_iter, self.progress and dist.is_main())

    def before_step(self) -> None:
        self._t0 = time.perf_counter()

    def after_step(self) -> None:
        state, result = self.state, self.state.result
        self.window.add(result.losses, result.total, state.images_per_step, time.perf_counter() - self._t0,
                        result.weights, result.scalars)
        if state.bar is not None:
            state.bar.update(1)
            state.bar.set_postfix_str(" ".join(
                [f"{n}={fmt(v)}" for n, v in result.losses.items()]
                + [f"lr={fmt(state.lr)}", f"img/s={self.window.rate():.1f}"]), refresh=False)
        if state.iter % self.every == 0 or state.iter == state.iters:
            state.logger.log(self.window.record(state.iter, state.lr, state.stream.state()))
            self.window.reset()

    def after_train(self) -> None:
        if self.state.bar is not None:
            self.state.bar.close()
        self.state.bar = None


class TrainingCurves(HookBase):
    """``curves.png`` (losses, lr, validation metrics against the iteration)
    from ``metrics.jsonl`` when the run finishes (``train.plots``; rank 0)."""

    def after_train(self) -> None:
        state = self.state
        if state.outcome != FINISHED or not dist.is_main():
            return
        path = os.path.join(state.out_dir, "metrics.jsonl")
        if os.path.isfile(path):
            state.logger.close()
            viz.plot_training_curves(path, os.path.join(state.out_dir, "curves.png"))
