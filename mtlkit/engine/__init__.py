"""The engine: training, evaluation and inference of mtlkit models.

Python API:

* :func:`train` ``(cfg, out_dir, iters=None, resume=False, ...) -> metrics``
* :func:`evaluate` ``(cfg, checkpoint, out_dir=None) -> metrics``

where metrics is task -> metric name -> value. The CLI commands (``mtlkit
train | eval | detect``) live in :mod:`mtlkit.engine.commands`.
"""

from mtlkit.engine.evaluator import evaluate, evaluate_model
from mtlkit.engine.schema import EVAL_CHOICES, EVAL_DEFAULTS, TRAIN_CHOICES, TRAIN_DEFAULTS
from mtlkit.engine.trainer import RunExists, Trainer, TrainingDiverged, train

__all__ = ["train", "evaluate", "evaluate_model", "Trainer", "TrainingDiverged", "RunExists",
           "TRAIN_DEFAULTS", "TRAIN_CHOICES", "EVAL_DEFAULTS", "EVAL_CHOICES"]
