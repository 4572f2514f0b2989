"""The engine: training, evaluation and inference of mtlkit models.

Python API:

* :func:`train` ``(cfg, out_dir, iters=None, resume=False, ...) -> metrics``
* :func:`evaluate` ``(cfg, checkpoint, out_dir=None) -> metrics``

where metrics is task -> metric name -> value. Modules: ``runtime`` (what
trainer and evaluator share: device, threads, batch
transfer, eval loader settings), ``trainer`` (the loop), ``state`` (its
``RunState``), ``step`` (one iteration, replaceable), ``hooks`` (logging,
evaluation, checkpoints, EMA, signals: around the loop), ``evaluator``,
``schema`` (the ``train`` / ``eval`` sections, at their old place: :mod:`mtlkit.schema`), ``data`` (sharded order),
``checkpoint``, ``checks``, ``optim`` (optimisers and the one lr schedule),
``ema``, ``logger``, ``dist``, ``precision``, ``ablation``. The extension
points are described in docs/engine.md. The CLI commands live in
:mod:`mtlkit.commands`.
"""

from mtlkit.engine.evaluator import evaluate, evaluate_model
from mtlkit.engine.hooks import HookBase
from mtlkit.engine.schema import EVAL_CHOICES, EVAL_DEFAULTS, TRAIN_CHOICES, TRAIN_DEFAULTS
from mtlkit.engine.state import RunState
from mtlkit.engine.step import Losses, StepOutput, TrainStep
from mtlkit.engine.trainer import RunExists, Trainer, TrainingDiverged, train

__all__ = ["train", "Trainer", "TrainingDiverged", "RunExists", "RunState", "TrainStep", "Losses",
           "StepOutput", "HookBase", "evaluate", "evaluate_model", "TRAIN_DEFAULTS", "TRAIN_CHOICES",
           "EVAL_DEFAULTS", "EVAL_CHOICES"]
