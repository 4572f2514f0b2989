"""Evaluation on the validation split during and at the end of training
(:class:`EvalHook`, :func:`evaluate_run`)."""

from __future__ import annotations

import copy

from torch import nn

from mtlkit.engine import dist
from mtlkit.engine.checkpoint import preserved_rng
from mtlkit.engine.evaluator import evaluate_model, write_eval_outputs
from mtlkit.engine.hooks.base import HookBase
from mtlkit.engine.logger import fmt
from mtlkit.engine.runtime import dataset_attr, eval_loader_settings
from mtlkit.engine.state import FINISHED, RunState


def eval_model(state: RunState) -> nn.Module:
    """The weights evaluated: the EMA's (in a copy of the model) when
    ``train.ema.evaluate``, else the model itself."""
    if state.ema is None or not state.train_cfg["ema"]["evaluate"]:
        return state.core
    model = copy.deepcopy(state.core)
    model.load_state_dict(state.ema.state)
    return model


def evaluate_run(state: RunState, final: bool) -> None:
    """Evaluate on ``state.val_dataset`` at ``state.iter`` with the RNG states
    saved and restored (evaluating does not change what training does); sets
    ``state.last_eval`` / ``last_eval_iter``, logs an ``eval`` record and a
    note. ``final`` also writes ``metrics.json``, ``detections.json`` and
    ``per_class_ap.png`` to the run directory."""
    cfg, iteration = state.cfg, state.iter
    batch_size, workers = eval_loader_settings(cfg)
    with preserved_rng():
        values, metrics, detections = evaluate_model(
            eval_model(state), state.val_dataset, batch_size, state.collate_fn, state.device, workers,
            export_detections=final and bool(cfg["eval"]["export_detections"]), amp_dtype=state.amp_dtype)
    state.last_eval, state.last_eval_iter = values, iteration
    state.logger.log({"event": "eval", "iter": iteration, "metrics": values})
    if final and dist.is_main():
        tasks = getattr(state.core, "tasks", None) or {}
        write_eval_outputs(state.out_dir, values, metrics, detections,
                           dataset_attr(state.val_dataset, "classes"), iteration=iteration,
                           plots=bool(state.train_cfg["plots"]),
                           primary=tasks.get(getattr(state.core, "primary", None)))
    summary = "  ".join(f"{t}: " + (", ".join(f"{k}={fmt(v)}" for k, v in list(m.items())[:3])
                                     or "no labelled sample")
                        for t, m in values.items())
    state.note(f"eval @ {iteration}: {summary}")


class EvalHook(HookBase):
    """Evaluates every ``every`` iterations (``train.eval_every``; 0: never
    during training; not at the last iteration, which the final evaluation
    covers) and, with ``at_end`` (``train.eval_at_end``), once when the run
    finishes, unless that iteration was just evaluated. Nothing without a
    validation split."""

    def __init__(self, every: int, at_end: bool) -> None:
        self.every, self.at_end = int(every), bool(at_end)

    def after_step(self) -> None:
        state = self.state
        if (self.every and state.val_dataset is not None and state.iter % self.every == 0
                and state.iter < state.iters):
            evaluate_run(state, final=False)

    def after_train(self) -> None:
        state = self.state
        if (state.outcome != FINISHED or not self.at_end or state.val_dataset is None
                or state.last_eval_iter == state.iter):
            return
        evaluate_run(state, final=True)
        if state.last_saved_iter == state.iter:
            self.trainer.save_checkpoint()  # record that the final evaluation is done
