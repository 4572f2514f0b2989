"""The engine: training, evaluation and inference of mtlkit models.

Python API:

* :func:`train` ``(cfg, out_dir, iters=None, resume=False, ...) -> metrics``
* :func:`evaluate` ``(cfg, checkpoint, out_dir=None) -> metrics``

where metrics is task -> metric name -> value. Modules: ``runtime`` (what
trainer and evaluator share: config resolution, device, threads, batch
transfer, eval loader settings), ``trainer`` (the loop), ``state`` (its
``RunState``), ``step`` (one iteration, replaceable), ``hooks`` (logging,
evaluation, checkpoints, EMA, signals: around the loop), ``evaluator``,
``schema`` (the ``train`` / ``eval`` sections), ``data`` (sharded order),
``checkpoint``, ``checks``, ``optim`` (optimisers and the one lr schedule),
``ema``, ``logger``, ``dist``, ``precision``, ``ablation``. The extension
points are described in docs/engine.md. The CLI commands live in
:mod:`mtlkit.commands`.

The names below are imported on first use, so that importing a leaf module
(e.g. :mod:`mtlkit.engine.schema` from :mod:`mtlkit.config`) does not import
the trainer.
"""

import importlib
from typing import Any

_EXPORTS = {
    "train": "mtlkit.engine.trainer", "Trainer": "mtlkit.engine.trainer",
    "TrainingDiverged": "mtlkit.engine.trainer", "RunExists": "mtlkit.engine.trainer",
    "RunState": "mtlkit.engine.state", "TrainStep": "mtlkit.engine.step", "Losses": "mtlkit.engine.step",
    "StepOutput": "mtlkit.engine.step", "HookBase": "mtlkit.engine.hooks",
    "evaluate": "mtlkit.engine.evaluator", "evaluate_model": "mtlkit.engine.evaluator",
    "TRAIN_DEFAULTS": "mtlkit.engine.schema", "TRAIN_CHOICES": "mtlkit.engine.schema",
    "EVAL_DEFAULTS": "mtlkit.engine.schema", "EVAL_CHOICES": "mtlkit.engine.schema",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mtlkit.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
