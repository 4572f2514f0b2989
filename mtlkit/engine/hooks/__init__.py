"""Hooks: what happens around the training loop, one small module each.

:class:`HookBase` is the interface (``before_train``, ``before_step``,
``after_step``, ``after_train``, ``state_dict`` / ``load_state_dict``). The
trainer's default hooks, in their order (:meth:`mtlkit.engine.trainer.Trainer.default_hooks`):

* :class:`StopOnSignal` — SIGINT / SIGTERM stop the run after the iteration
  in flight (a checkpoint is saved first);
* :class:`EMAUpdate` — the moving average of the weights (``train.ema``);
* :class:`WeightingCallbacks` — the loss weighting's ``on_iteration_end`` /
  ``on_epoch_end``;
* :class:`TrainLog` — ``metrics.jsonl`` training records and the progress bar;
* :class:`EvalHook` — periodic and final evaluation on the validation split;
* :class:`PeriodicCheckpoint` — ``last.pt`` every ``train.checkpoint_every``;
* :class:`TrainingCurves` — ``curves.png`` at the end.
"""

from mtlkit.engine.hooks.base import HookBase
from mtlkit.engine.hooks.checkpointing import PeriodicCheckpoint
from mtlkit.engine.hooks.ema import EMAUpdate
from mtlkit.engine.hooks.evaluation import EvalHook, eval_model, evaluate_run
from mtlkit.engine.hooks.log import TrainingCurves, TrainLog, Window
from mtlkit.engine.hooks.signals import StopOnSignal
from mtlkit.engine.hooks.weighting import WeightingCallbacks

__all__ = ["HookBase", "StopOnSignal", "EMAUpdate", "WeightingCallbacks", "TrainLog", "EvalHook",
           "PeriodicCheckpoint", "TrainingCurves", "Window", "eval_model", "evaluate_run"]
