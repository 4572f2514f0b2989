"""One training iteration: :class:`TrainStep`, the piece to replace when a run
minimises another loss, computes its gradients another way or updates other
parameters.

The trainer calls ``step(state)`` once per iteration (``state`` is the
:class:`~mtlkit.engine.state.RunState`); the default step is the supervised
multi-task step::

    step(state)                          -> StepOutput (averaged over processes)
      compute(state)                     forward + backward of train.accumulate micro-batches
        forward(state, batch)   -> Losses    what is minimised (under autocast)
        backward(state, losses)              how its gradients are made
      agree(state, output)               the one reduction: mean over processes, stop flag, NaN guard
      update(state, output)              unscale, weighting.after_backward, clipping, optimiser step

Override one method of a subclass (``forward`` for another loss, ``backward``
or ``compute`` for other gradients, ``update`` for another update, ``setup``
to choose the parameters, ``__call__`` for all of it) and pass an instance as
``Trainer(..., step=...)``; docs/engine.md has examples. Whatever it
overrides, a step calls :func:`agree` exactly once per iteration: it is the
collective every process must reach, and it stops the run on a NaN before
the update.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import nn

from mtlkit.engine import dist
from mtlkit.engine.precision import autocast, to_memory_format
from mtlkit.engine.runtime import move_to
from mtlkit.engine.state import RunState
from mtlkit.errors import TrainingDiverged
from mtlkit.models.measured import measured_inputs


@dataclass
class Losses:
    """The losses of one micro-batch, as :meth:`TrainStep.forward` returns them."""

    #: name -> scalar loss tensor (logged per name and checked for NaN; the
    #: names are :attr:`RunState.loss_names`)
    tasks: Dict[str, torch.Tensor]
    #: the scalar that is back-propagated
    total: torch.Tensor
    #: the weighting's multiplier per loss (logged as they are; not averaged)
    weights: Mapping[str, Any] = field(default_factory=dict)
    #: other figures to average over micro-batches and processes and log
    #: (floats or scalar tensors; e.g. a training accuracy)
    scalars: Dict[str, Any] = field(default_factory=dict)


@dataclass
class StepOutput:
    """What a step reports: means over its micro-batches, and after
    :func:`agree` over the processes too (then in :attr:`RunState.result`)."""

    losses: Dict[str, float]
    total: float
    weights: Dict[str, Any] = field(default_factory=dict)
    scalars: Dict[str, float] = field(default_factory=dict)


def weighting_hook(core: nn.Module, hook: str, *args: Any) -> None:
    """Call an optional hook of the model's loss weighting
    (:class:`mtlkit.weighting.LossWeighting`); models whose weighting is a
    plain callable, or that have none, have no hook."""
    method = getattr(getattr(core, "weighting", None), hook, None)
    if callable(method):
        method(*args)


class TrainStep:
    """The supervised multi-task step (see the module docstring for its pieces)."""

    #: whether the trainer builds an optimiser (and its lr schedule) over the
    #: parameters that require a gradient after :meth:`setup`; a step that only
    #: refreshes statistics (BatchNorm) sets it False
    uses_optimizer: bool = True

    def __init__(self) -> None:
        self._last: Optional[Losses] = None  # the last micro-batch's losses, for update()

    # -- once per run ----------------------------------------------------------------
    def setup(self, state: RunState) -> None:
        """Called once the model is built, on its device, before the optimiser
        is built and before ``--out`` is written: choose what trains here
        (``requires_grad_(False)`` on what must not move; the optimiser takes
        the parameters that still require a gradient). ``state.optimizer``,
        ``state.stream`` and ``state.logger`` are not there yet."""

    def loss_names(self, state: RunState) -> List[str]:
        """The names of the losses :meth:`forward` returns, in the order of the
        log: the model's tasks."""
        return list(getattr(state.core, "tasks", None) or {})

    def state_dict(self) -> Optional[Dict[str, Any]]:
        """What the step must find again on resume (stored in the checkpoint
        under ``"step"``); None: nothing."""
        return None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s value (refuse one that does not fit)."""

    # -- every iteration ---------------------------------------------------------------
    def __call__(self, state: RunState) -> StepOutput:
        """One iteration: gradients, the reduction, the update."""
        output = agree(state, self.compute(state))
        self.update(state, output)
        return output

    def compute(self, state: RunState) -> StepOutput:
        """Zero the gradients, then forward and backward ``state.accumulate``
        micro-batches (DDP synchronises the gradients on the last one only).
        Returns this process's means over its micro-batches."""
        if state.optimizer is not None:
            state.optimizer.zero_grad(set_to_none=True)
        names = state.loss_names
        sums = torch.zeros(len(names) + 1, dtype=torch.float64)
        scalar_sums: Dict[str, float] = {}
        losses: Optional[Losses] = None
        for micro in range(state.accumulate):
            batch = move_to(state.stream.next(), state.device, non_blocking=True)
            state.batch = batch
            sync = (contextlib.nullcontext() if micro == state.accumulate - 1 or state.world_size == 1
                    else state.model.no_sync())
            with sync:
                with autocast(state.device, state.amp_dtype):
                    losses = self.forward(state, batch)
                self.backward(state, losses)
            sums += torch.stack([losses.tasks[n].detach().float() for n in names]
                                + [losses.total.detach().float()]).cpu().double()
            for key, value in losses.scalars.items():
                scalar_sums[key] = scalar_sums.get(key, 0.0) + float(value)
        self._last = losses
        means = (sums / state.accumulate).tolist()
        return StepOutput(losses=dict(zip(names, means[:-1])), total=means[-1],
                          weights=dict(losses.weights) if losses is not None else {},
                          scalars={k: v / state.accumulate for k, v in scalar_sums.items()})

    def forward(self, state: RunState, batch: Dict[str, Any]) -> Losses:
        """The losses of one micro-batch (called under autocast): the model's
        per-task losses and its weighting's total. A model with measured
        inputs (``model.measured``) also reads the batch's sensor maps
        (:func:`mtlkit.models.measured.measured_inputs`; none: the plain call)."""
        outputs = state.model(to_memory_format(batch["image"], state.channels_last),
                              **measured_inputs(state.core, batch))
        tasks = state.core.losses(outputs, batch)
        total, weights = state.core.weighting(tasks)
        return Losses(tasks=tasks, total=total, weights=weights)

    def backward(self, state: RunState, losses: Losses) -> None:
        """Accumulate the gradients of one micro-batch: ``total / accumulate``,
        through the GradScaler when there is one."""
        loss = losses.total / state.accumulate
        (state.scaler.scale(loss) if state.scaler is not None else loss).backward()

    def update(self, state: RunState, output: StepOutput) -> None:
        """Unscale, let a gradient-based weighting act on the unscaled gradients
        of the last micro-batch's losses, clip (``train.clip_grad_norm``), step."""
        optimizer, scaler, core = state.optimizer, state.scaler, state.core
        if optimizer is None:
            return
        if scaler is not None:
            scaler.unscale_(optimizer)
        weighting_hook(core, "after_backward", core, self._last.tasks if self._last is not None else {})
        self._last = None
        clip = float(state.train_cfg["clip_grad_norm"])
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(core.parameters(), clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()


def agree(state: RunState, output: StepOutput) -> StepOutput:
    """The iteration's one collective: average the losses and scalars over the
    processes together with the stop flag (a signal on any process stops every
    process after this iteration: ``state.stop``), then refuse a non-finite
    loss before anything is updated (:class:`~mtlkit.errors.TrainingDiverged`,
    naming the task). Returns the averaged output."""
    values = list(output.losses.values()) + [output.total] + list(output.scalars.values())
    vec = torch.tensor(values + [1.0 if state.stop_requested else 0.0], dtype=torch.float64)
    if state.world_size > 1:
        vec = dist.all_reduce_mean(vec.to(state.device)).cpu()
    agreed = vec.tolist()
    n = len(output.losses)
    result = StepOutput(losses=dict(zip(output.losses, agreed[:n])), total=agreed[n],
                        weights=output.weights,
                        scalars=dict(zip(output.scalars, agreed[n + 1:-1])))
    state.stop = state.stop or agreed[-1] > 0
    check_finite(state, result)
    return result


def check_finite(state: RunState, result: StepOutput) -> None:
    """Stop the run on a NaN / inf loss, naming the task and the last good checkpoint."""
    losses, total, iteration = result.losses, result.total, state.iter + 1
    bad = [n for n, v in losses.items() if not math.isfinite(v)]
    if not bad and math.isfinite(total):
        return
    desc = ", ".join(f"{n}={v:.4g}" for n, v in losses.items())
    what = (f"the loss of task '{bad[0]}' is {losses[bad[0]]}" if bad
            else f"the total loss is {total} (task losses are finite: check the weighting)")
    kept = (f"the last good checkpoint is {state.checkpoint_path} (iteration {state.last_saved_iter})"
            if state.last_saved_iter >= 0 else "no checkpoint was written")
    if state.logger is not None:
        state.logger.log({"event": "diverged", "iter": iteration, "task": bad[0] if bad else None,
                          "losses": dict(losses)})
    raise TrainingDiverged(f"training diverged at iteration {iteration}: {what} "
                           f"(losses: {desc}); stopped without saving, {kept}. Lower "
                           "train.optimizer.lr, add warm-up or train.clip_grad_norm.")
