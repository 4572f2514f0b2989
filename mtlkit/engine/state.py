"""What a training run holds while it runs: :class:`RunState`.

The :class:`~mtlkit.engine.trainer.Trainer` builds it (model, optimiser,
schedule, data stream, logger, ...), restores it from a checkpoint, then
hands it to the step (:class:`~mtlkit.engine.step.TrainStep`) and the hooks
(:class:`~mtlkit.engine.hooks.HookBase`), which read and update it. Every
field has one meaning, written here; nothing else carries run state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional

import torch
from torch import nn

from mtlkit.engine.logger import note

if TYPE_CHECKING:  # annotations only: these modules import nothing from here
    from mtlkit.engine.data import ShardedBatches, TrainStream
    from mtlkit.engine.ema import ModelEMA
    from mtlkit.engine.logger import RunLogger
    from mtlkit.engine.optim import LRSchedule

#: how the loop ended, in :attr:`RunState.outcome`
RUNNING, FINISHED, STOPPED, FAILED = "running", "finished", "stopped", "failed"


@dataclass(eq=False)
class RunState:
    """The state of one training run (one process of it under DDP)."""

    # -- the run ------------------------------------------------------------------
    #: the resolved config (``train`` / ``eval`` complete: :func:`mtlkit.engine.runtime.run_config`)
    cfg: Mapping[str, Any]
    #: the run directory, and its checkpoint ``OUT/last.pt``
    out_dir: str
    checkpoint_path: str
    device: torch.device
    # -- the model ------------------------------------------------------------------
    #: what the step calls: :attr:`core`, wrapped in ``DistributedDataParallel`` under DDP
    model: nn.Module
    #: the model itself (its state dict is the checkpoint's; ``tasks``, ``losses``,
    #: ``weighting``, ``postprocess`` for a ``MultiTaskModel``)
    core: nn.Module
    # -- the data -------------------------------------------------------------------
    train_dataset: Any
    val_dataset: Any
    collate_fn: Callable
    #: images per process and micro-batch (``data.batch_size``)
    batch_size: int
    #: micro-batches per optimiser step (``train.accumulate``)
    accumulate: int
    #: processes (1 without DDP)
    world_size: int
    #: the run ends when :attr:`iter` reaches it (``train.iters``)
    iters: int
    #: the per-rank order of the training samples (a pure function of seed and epoch)
    sampler: Optional["ShardedBatches"] = None
    #: the training batches from the restored position; :meth:`TrainStream.next` gives one
    stream: Optional["TrainStream"] = None
    # -- optimisation -----------------------------------------------------------------
    #: None when the step updates no parameter (:attr:`TrainStep.uses_optimizer`)
    optimizer: Optional[torch.optim.Optimizer] = None
    schedule: Optional["LRSchedule"] = None
    #: float16 autocast on CUDA only
    scaler: Optional[torch.amp.GradScaler] = None
    #: the moving average of the weights (``train.ema``), updated by the EMA hook
    ema: Optional["ModelEMA"] = None
    #: the autocast dtype of the step (None: no autocast)
    amp_dtype: Optional[torch.dtype] = None
    #: inputs in NHWC storage (the model was converted when the run was built)
    channels_last: bool = False
    #: the names of the losses the step reports, in the order of the log and the reduction
    loss_names: List[str] = field(default_factory=list)
    # -- progress ---------------------------------------------------------------------
    #: where this invocation started (the checkpoint's iteration, 0 for a new run)
    start_iter: int = 0
    #: optimiser steps done. In ``before_step`` and during the step it is also the
    #: 0-based index of the step running; in ``after_step`` it counts that step.
    iter: int = 0
    #: the learning rate of the current step (the first param group's; None without optimiser)
    lr: Optional[float] = None
    #: what the last step reported, averaged over processes (:class:`~mtlkit.engine.step.StepOutput`)
    result: Optional[Any] = None
    #: the last micro-batch the step trained on, on the device (for hooks that look at it)
    batch: Any = None
    # -- records ------------------------------------------------------------------------
    #: the last evaluation: task -> metric -> value, and its iteration (-1: none yet)
    last_eval: Dict[str, Dict[str, float]] = field(default_factory=dict)
    last_eval_iter: int = -1
    #: the iteration of the checkpoint on disk (-1: none written)
    last_saved_iter: int = -1
    # -- stopping -------------------------------------------------------------------------
    #: set on this process by the signal hook: the signal's name
    stop_requested: Optional[str] = None
    #: some process asked to stop: every process stops after this iteration
    #: (agreed in the step's one reduction, :func:`mtlkit.engine.step.agree`)
    stop: bool = False
    #: how the loop ended: RUNNING until then, FINISHED, STOPPED or FAILED (an exception)
    outcome: str = RUNNING
    # -- reporting --------------------------------------------------------------------------
    #: ``metrics.jsonl`` (+ TensorBoard) writer; only rank 0 writes
    logger: Optional["RunLogger"] = None
    #: the progress bar while it is shown (notes are written through it)
    bar: Any = None

    @property
    def train_cfg(self) -> Mapping[str, Any]:
        """The resolved ``train`` section."""
        return self.cfg["train"]

    @property
    def epoch(self) -> int:
        """The epoch of the next training batch."""
        return int(self.stream.state()["epoch"]) if self.stream is not None else 0

    @property
    def images_per_step(self) -> int:
        """Images of one optimiser step over every process."""
        return self.batch_size * self.accumulate * self.world_size

    def note(self, message: str) -> None:
        """One line on stderr (rank 0), written through the progress bar when shown."""
        note(message, self.bar)
