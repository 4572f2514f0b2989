"""The training step of a gradient-level weighting (:class:`GradientStep`).

:meth:`mtlkit.engine.trainer.Trainer.default_step` chooses it when the
model's weighting is a :class:`~mtlkit.gradient_weighting.GradientWeighting`
(``model.weighting: gcs``, ``pcgrad``, ``famo``...); every other weighting
keeps the default :class:`~mtlkit.engine.step.TrainStep`. One iteration, by
the method's place (docs/weighting.md §3-§5 has the why of each line):

* ``parameters``: per micro-batch, one ``autograd.grad`` per present task on
  the parameters its loss reaches, summed over micro-batches into a (k, P)
  buffer; averaged over processes; the method combines the rows of the
  *shared* parameters (reached by two tasks or more) into one update, and each
  task-specific parameter gets ``head_weight_t * g_t``.
* ``representation``: the backbone's output R is cut from the graph
  (:class:`~mtlkit.engine.representation.RepresentationCut`); one
  ``autograd.grad`` per present task at R (through the layers above R only),
  the Gram matrix of those rows summed over processes (/ world²), the method's
  coefficients, then one backward of ``[head_loss, R]`` with ``[1, update]``:
  the trunk gets the combined gradient, the layers above R the head loss's.
* loss-level (``famo``, ``rlw``: no per-task gradient): the coefficients from
  the losses (averaged over processes), one backward of ``head_loss``.

Gradient accumulation (``train.accumulate`` = A > 1) is exact: the
parameters place sums the per-task gradients; the representation place and
FAMO first run a *planning pass* over the A micro-batches (the Gram matrices,
or only the losses, of the whole step), then put back the RNG state and the
buffers and run the A forwards again to back-propagate with the planned
coefficients (one more forward per micro-batch, plus the k backward passes
above R at the representation place).

Under DDP every forward and backward runs in ``no_sync()`` and the step does
the reductions itself (:mod:`mtlkit.engine.gradient_sync`): which tasks are
present (any process), the losses (mean), the Gram matrix (sum / world²) or
the per-task gradients (mean), the final gradients (mean), rank 0's buffers
before the forward. Every process then computes the same coefficients, so 2
processes on a global batch take the step 1 process takes on it.

Precision: the per-task gradients are those of ``L_t * s`` (``s`` the fp16
GradScaler's scale, 1 otherwise), the method gets ``grad_scale=s``. A task
whose gradient is not finite takes no part in the step (listed in the
``weighting`` record); with a GradScaler that is an overflow and the step is
skipped (the scaler lowers its scale). Without a scaler, a final gradient that
is still not finite (only possible outside the method's view: the heads at the
representation place, any gradient of a loss-level method) is never applied:
the step is skipped and recorded, and :attr:`GradientStep.MAX_SKIPS`
consecutive skips stop the run (:class:`~mtlkit.errors.TrainingDiverged`).

Logging: each step writes ``{"event": "weighting", "iter", "method", "place",
"weights", "head_weights", "info", "absent", "nonfinite", "skipped"}`` to
``metrics.jsonl`` (rank 0); the ``train`` records carry the last step's
coefficients as ``weights``. The method's state lives in the model's buffers
(in ``last.pt``), so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from mtlkit.engine import dist
from mtlkit.engine.gradient_sync import all_reduce_sum, any_process, average_gradients, broadcast_buffers
from mtlkit.engine.precision import autocast, to_memory_format
from mtlkit.engine.representation import RepresentationCut
from mtlkit.engine.runtime import move_to
from mtlkit.engine.state import RunState
from mtlkit.engine.step import Losses, StepOutput, TrainStep
from mtlkit.errors import ConfigError, TrainingDiverged
from mtlkit.gradient_weighting import (
    PARAMETERS,
    REPRESENTATION,
    GradientCombination,
    GradientWeighting,
    gram_matrix,
    write_gradients,
)


# ---------------------------------------------------------------------------
# The parameters place: which parameters each task reaches
# ---------------------------------------------------------------------------

def reached_parameters(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> List[int]:
    """Indices (into ``params``) of the parameters ``loss``'s graph reaches,
    read off the graph's structure (no backward pass), in ``params`` order."""
    index = {id(p): i for i, p in enumerate(params)}
    found, seen = set(), set()
    stack = [loss.grad_fn] if loss.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf
        if variable is not None and id(variable) in index:
            found.add(index[id(variable)])
        stack.extend(next_node for next_node, _ in node.next_functions)
    return sorted(found)


@dataclass
class Partition:
    """The trainable parameters the tasks reach, laid out as the columns of a
    (k, P) buffer: the shared ones (reached by >= 2 tasks) first, then each
    task's own.

    * ``params``: the parameters in column order, the first ``shared`` of
      them shared; ``offsets[j]`` the first column of ``params[j]``,
      ``size`` the columns, ``n_shared`` the columns of the shared ones.
    * ``reach[i]``: indices into ``params`` that task i's loss reaches;
      ``own[i]``: those only task i reaches.
    * ``complete``: every task's loss had a graph when it was built (else it
      is built again at the next step).
    """

    params: List[torch.Tensor]
    offsets: List[int]
    size: int
    shared: int
    n_shared: int
    reach: List[List[int]]
    own: List[List[int]]
    complete: bool

    @classmethod
    def of(cls, losses: Sequence[torch.Tensor], trainable: Sequence[torch.Tensor]) -> "Partition":
        reach_sets = [set(reached_parameters(loss, trainable)) for loss in losses]
        counts = [sum(j in r for r in reach_sets) for j in range(len(trainable))]
        shared = [j for j, c in enumerate(counts) if c >= 2]
        own_of = [[j for j in sorted(r) if counts[j] == 1] for r in reach_sets]
        order = shared + [j for own in own_of for j in own]
        position = {j: n for n, j in enumerate(order)}
        params = [trainable[j] for j in order]
        offsets, total = [], 0
        for p in params:
            offsets.append(total)
            total += p.numel()
        n_shared = sum(trainable[j].numel() for j in shared)
        return cls(params=params, offsets=offsets, size=total, shared=len(shared), n_shared=n_shared,
                   reach=[sorted(position[j] for j in r) for r in reach_sets],
                   own=[[position[j] for j in own] for own in own_of],
                   complete=all(loss.grad_fn is not None for loss in losses))

    def columns(self, j: int) -> slice:
        return slice(self.offsets[j], self.offsets[j] + self.params[j].numel())


# ---------------------------------------------------------------------------
# Planning passes: the same forwards twice
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def replayed(core: nn.Module, device: torch.device) -> Iterator[None]:
    """Run a planning pass, then put back the RNG states and the module's
    buffers (BatchNorm statistics), so the forwards that follow draw the same
    random numbers (dropout) and the buffers move once per step."""
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    buffers = [b.detach().clone() for b in core.buffers()]
    try:
        yield
    finally:
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)
        with torch.no_grad():
            for b, saved in zip(core.buffers(), buffers):
                b.copy_(saved)


# ---------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------

class GradientStep(TrainStep):
    """One optimiser step of a model whose ``weighting`` is a
    :class:`~mtlkit.gradient_weighting.GradientWeighting` (module docstring)."""

    #: consecutive steps skipped for a non-finite gradient (no GradScaler) that stop the run
    MAX_SKIPS = 20

    def __init__(self) -> None:
        super().__init__()
        self._partition: Optional[Partition] = None
        #: the last step's :class:`~mtlkit.gradient_weighting.GradientCombination`
        #: (coefficients, head weights, diagnostics), for hooks and tests
        self.combination: Optional[GradientCombination] = None
        self._skips = 0
        self._method = ""
        self._place: Optional[str] = None

    # -- once per run ------------------------------------------------------------------
    def setup(self, state: RunState) -> None:
        core = state.core
        weighting = getattr(core, "weighting", None)
        if not isinstance(weighting, GradientWeighting):
            raise ConfigError(f"model.weighting: the gradient step trains a model whose weighting is a "
                              f"gradient-level one (mtlkit.gradient_weighting), got "
                              f"{type(weighting).__name__}")
        tasks = list(getattr(core, "tasks", None) or {})
        if tasks != list(weighting.task_names):
            raise ConfigError(f"model.weighting: weighs tasks {list(weighting.task_names)}, the model has "
                              f"{tasks}")
        self._method, self._place = type(weighting).__name__, weighting.place
        if weighting.place == REPRESENTATION:
            backbone = getattr(core, "backbone", None)
            if not isinstance(backbone, nn.Module):
                raise ConfigError("model.weighting.place: 'representation' takes the per-task gradients at "
                                  "the output of model.backbone, and this model has no backbone module; "
                                  "use place: parameters")
            if not any(p.requires_grad for p in backbone.parameters()):
                state.note("model.weighting.place is 'representation' but the whole backbone is frozen: "
                           "the method only changes the heads' loss weights; place: parameters combines "
                           "the gradients of the trained shared layers")

    def state_dict(self) -> Dict[str, Any]:
        return {"method": self._method, "place": self._place, "skips": self._skips}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = (state.get("method"), state.get("place"))
        if saved != (self._method, self._place):
            raise ConfigError(f"the checkpoint was trained with model.weighting {saved[0]} at place "
                              f"{saved[1]}, this run uses {self._method} at {self._place}")
        self._skips = int(state["skips"])

    # -- every iteration (TrainStep.__call__: compute, agree, update) ----------------------
    def forward(self, state: RunState, batch: Dict[str, Any]) -> Losses:
        """The per-task losses of one micro-batch; ``total`` is their sum
        under the tasks' configured weights (what ``fixed`` would minimise:
        comparable across methods in the log)."""
        outputs = state.model(to_memory_format(batch["image"], state.channels_last))
        tasks = state.core.losses(outputs, batch)
        weights = state.core.weighting.task_weights
        total = sum(loss * weights[name] for name, loss in tasks.items())
        return Losses(tasks=tasks, total=total)

    def compute(self, state: RunState) -> StepOutput:
        """Gradients of one step into ``.grad`` (see the module docstring);
        returns this process's mean losses and the method's coefficients."""
        core = state.core
        weighting: GradientWeighting = core.weighting
        if state.optimizer is not None:
            state.optimizer.zero_grad(set_to_none=True)
        scale = self._loss_scale(state)
        batches = [move_to(state.stream.next(), state.device, non_blocking=True)
                   for _ in range(state.accumulate)]
        state.batch = batches[-1]
        no_sync = getattr(state.model, "no_sync", None)
        with (no_sync() if state.world_size > 1 and no_sync is not None else contextlib.nullcontext()):
            present = self._presence(state, batches)
            if weighting.place == PARAMETERS:
                result, means = self._parameters(state, batches, present, scale)
            elif weighting.place == REPRESENTATION:
                result, means = self._representation(state, batches, present, scale)
            else:
                result, means = self._loss_level(state, batches, present, scale)
        if weighting.place != PARAMETERS:  # the parameters place reduced its per-task gradients
            average_gradients(self._trainable(state))
        self.combination = result
        names = state.loss_names
        values = means.tolist()
        task_weights = weighting.task_weights
        return StepOutput(losses=dict(zip(names, values)),
                          total=sum(task_weights[n] * v for n, v in zip(names, values)),
                          weights=dict(result.weights))

    def update(self, state: RunState, output: StepOutput) -> None:
        """The optimiser step, unless the gradient is not finite (see the
        module docstring); then the step's ``weighting`` record."""
        result, optimizer, scaler = self.combination, state.optimizer, state.scaler
        if optimizer is None or result is None:
            return
        skipped: Optional[str] = None
        if scaler is not None:
            if result.skip_step:  # an overflow in a task's gradient: let the scaler see it
                self._poison(state)
            before = float(scaler.get_scale())
            super().update(state, output)
            if float(scaler.get_scale()) < before:
                skipped = f"fp16 overflow: no step, gradient scale lowered to {float(scaler.get_scale()):g}"
        elif not self._finite_gradients(state):
            self._skips += 1
            skipped = "non-finite gradient outside the method's view: no step"
            optimizer.zero_grad(set_to_none=True)
            state.note(f"iteration {state.iter + 1}: {skipped} ({self._skips} in a row)")
            if self._skips >= self.MAX_SKIPS:
                raise TrainingDiverged(
                    f"training diverged at iteration {state.iter + 1}: the gradient was not finite in "
                    f"{self._skips} consecutive steps (the losses were finite; model.weighting "
                    f"{self._method}). Lower train.optimizer.lr or add train.clip_grad_norm.")
        else:
            self._skips = 0
            super().update(state, output)
        self._log(state, result, skipped)

    # -- the three places --------------------------------------------------------------
    def _parameters(self, state: RunState, batches: Sequence[Dict[str, Any]], present: torch.Tensor,
                    scale: float) -> Tuple[GradientCombination, torch.Tensor]:
        """Per-task gradients on the parameters, summed over the micro-batches
        and averaged over processes, combined on the shared parameters."""
        weighting = state.core.weighting
        names = weighting.task_names
        factor = scale / len(batches)
        buffer: Optional[torch.Tensor] = None
        sums = torch.zeros(len(names), dtype=torch.float64)
        for m, batch in enumerate(batches):
            self._last = self._forward(state, batch, last=m == len(batches) - 1)
            losses = self._last.tasks
            if self._partition is None or not self._partition.complete:
                self._partition = Partition.of([losses[n] for n in names], self._trainable(state))
            part = self._partition
            if buffer is None:
                buffer = torch.zeros(len(names), part.size, dtype=torch.float32, device=state.device)
            todo = [i for i, name in enumerate(names)
                    if present[i] and part.reach[i] and losses[name].requires_grad]
            for i in todo:
                # the last pass frees the graph (the step keeps the losses until the update)
                grads = torch.autograd.grad(losses[names[i]] * factor, [part.params[j] for j in part.reach[i]],
                                            retain_graph=i != todo[-1], allow_unused=True)
                for j, grad in zip(part.reach[i], grads):
                    if grad is not None:
                        buffer[i, part.columns(j)] += grad.reshape(-1).float()
            sums += self._loss_vector(losses, names)
            del losses
        part = self._partition
        means = self._mean_over_processes(sums / len(batches), state.device)
        if state.world_size > 1:
            buffer = all_reduce_sum(buffer) / state.world_size
        rows = {n: buffer[i, :part.n_shared] for i, n in enumerate(names) if present[i]}
        result = weighting.combine(rows, means, present, grad_scale=scale) if rows else \
            weighting.plan(gram=torch.zeros(len(names), len(names), dtype=torch.float64), losses=means,
                           present=present, grad_scale=scale)
        if result.active and not result.skip_step:
            if part.shared:
                write_gradients(result.update, part.params[:part.shared])
            for i, name in enumerate(names):
                weight = result.head_weights.get(name)
                if not weight:
                    continue
                for j in part.own[i]:
                    write_gradients(buffer[i, part.columns(j)] * weight, [part.params[j]])
        return result, means

    def _representation(self, state: RunState, batches: Sequence[Dict[str, Any]], present: torch.Tensor,
                        scale: float) -> Tuple[GradientCombination, torch.Tensor]:
        """Per-task gradients at the backbone's output, the reduced Gram
        matrix, one backward of the trunk per micro-batch."""
        core, weighting = state.core, state.core.weighting
        names = weighting.task_names
        k, n_batches = len(names), len(batches)
        factor = scale / n_batches
        result: Optional[GradientCombination] = None
        if n_batches > 1:  # planning pass: the Gram matrix and the losses of the whole step
            gram = torch.zeros(k, k, dtype=torch.float64)
            sums = torch.zeros(k, dtype=torch.float64)
            with replayed(core, state.device):
                for batch in batches:
                    losses, rows, _ = self._rows(state, batch, present, factor, last=False)
                    gram += self._gram(rows, names)
                    sums += self._loss_vector(losses, names)
                    del losses, rows
            result = self._plan(state, gram, sums / n_batches, present, scale)
        sums = torch.zeros(k, dtype=torch.float64)
        for m, batch in enumerate(batches):
            needed = present if result is None else torch.tensor([c != 0.0 for c in result.coefficients.tolist()])
            losses, rows, cut = self._rows(state, batch, needed, factor, last=m == n_batches - 1)
            sums += self._loss_vector(losses, names)
            if result is None:
                result = self._plan(state, self._gram(rows, names), sums.clone(), present, scale)
            if result.active and not result.skip_step:
                # one backward: the heads' loss above R, the combined update below it
                pairs = [(weighting.head_loss(losses, result) * factor, None)]
                pairs += list(zip(cut.attached, cut.split(result.apply(rows))))
                pairs = [(t, g) for t, g in pairs if t.requires_grad]
                if pairs:
                    torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
            del losses, rows, cut
        return result, self._mean_over_processes(sums / n_batches, state.device)

    def _loss_level(self, state: RunState, batches: Sequence[Dict[str, Any]], present: torch.Tensor,
                    scale: float) -> Tuple[GradientCombination, torch.Tensor]:
        """FAMO, RLW: coefficients from the losses (or from nothing), one
        backward of the weighted loss per micro-batch."""
        core, weighting = state.core, state.core.weighting
        names = weighting.task_names
        n_batches = len(batches)
        result: Optional[GradientCombination] = None
        if not weighting.needs_losses:
            result = weighting.plan(present=present, grad_scale=scale)
        elif n_batches > 1:  # planning pass: the losses of the whole step
            sums = torch.zeros(len(names), dtype=torch.float64)
            with replayed(core, state.device), torch.no_grad():
                for batch in batches:
                    sums += self._loss_vector(self._forward(state, batch, last=False).tasks, names)
            result = weighting.plan(losses=self._mean_over_processes(sums / n_batches, state.device),
                                    present=present, grad_scale=scale)
        sums = torch.zeros(len(names), dtype=torch.float64)
        for m, batch in enumerate(batches):
            self._last = self._forward(state, batch, last=m == n_batches - 1)
            losses = self._last.tasks
            local = self._loss_vector(losses, names)
            sums += local
            if result is None:
                result = weighting.plan(losses=self._mean_over_processes(local, state.device),
                                        present=present, grad_scale=scale)
            if result.active and not result.skip_step:
                head = weighting.head_loss(losses, result) * (scale / n_batches)
                if head.requires_grad:
                    head.backward()
            del losses
        return result, self._mean_over_processes(sums / n_batches, state.device)

    # -- pieces -------------------------------------------------------------------------
    def _forward(self, state: RunState, batch: Dict[str, Any], last: bool) -> Losses:
        """:meth:`forward` under autocast; before the step's last forward,
        rank 0's buffers on every process (DDP's ``broadcast_buffers``)."""
        if last and state.world_size > 1 and getattr(state.model, "broadcast_buffers", False):
            broadcast_buffers(state.core)
        with autocast(state.device, state.amp_dtype):
            return self.forward(state, batch)

    def _rows(self, state: RunState, batch: Dict[str, Any], needed: torch.Tensor, factor: float,
              last: bool) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor], RepresentationCut]:
        """One forward with the graph cut at the backbone's output, and the
        (d,) gradient at R of ``factor * L_t`` for every task ``needed``."""
        names = state.core.weighting.task_names
        with RepresentationCut(state.core.backbone) as cut:
            self._last = self._forward(state, batch, last)
        losses = self._last.tasks
        rows = {n: cut.gradient(losses[n] * factor) for i, n in enumerate(names) if needed[i]}
        return losses, rows, cut

    @staticmethod
    def _gram(rows: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
        """The (k, k) float64 CPU Gram matrix of ``rows`` (zeros for missing tasks)."""
        gram = torch.zeros(len(names), len(names), dtype=torch.float64)
        given = [i for i, n in enumerate(names) if n in rows]
        if given:
            idx = torch.tensor(given)
            gram[idx.unsqueeze(1), idx.unsqueeze(0)] = gram_matrix([rows[names[i]] for i in given]).cpu()
        return gram

    def _plan(self, state: RunState, gram: torch.Tensor, loss_means: torch.Tensor, present: torch.Tensor,
              scale: float) -> GradientCombination:
        """The method's coefficients from this process's Gram matrix and mean
        losses, after one reduction: Gram sum / world², losses mean."""
        world, k = state.world_size, gram.shape[0]
        if world > 1:
            vec = torch.cat([gram.reshape(-1), loss_means]).to(state.device)
            vec = all_reduce_sum(vec).cpu()
            gram = vec[:k * k].view(k, k) / world ** 2
            loss_means = vec[k * k:] / world
        return state.core.weighting.plan(gram=gram, losses=loss_means, present=present, grad_scale=scale)

    @staticmethod
    def _mean_over_processes(values: torch.Tensor, device: torch.device) -> torch.Tensor:
        """(k,) float64 CPU: the mean of ``values`` over processes."""
        world = dist.world_size()
        if world == 1:
            return values
        return all_reduce_sum(values.to(device)).cpu() / world

    @staticmethod
    def _loss_vector(losses: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
        """(k,) float64 CPU: the losses' values (the host sync of the step)."""
        return torch.stack([losses[n].detach().float() for n in names]).cpu().double()

    @staticmethod
    def _presence(state: RunState, batches: Sequence[Dict[str, Any]]) -> torch.Tensor:
        """(k,) bool: which tasks have a labelled sample in the step's batches,
        on any process (``task.sample_mask``; a task without one counts as present)."""
        tasks = state.core.tasks
        names = state.core.weighting.task_names
        local = torch.zeros(len(names), dtype=torch.bool)
        for batch in batches:
            size = int(batch["image"].shape[0])
            for i, name in enumerate(names):
                mask = getattr(tasks[name], "sample_mask", None)
                local[i] |= bool(mask(batch, size).any()) if callable(mask) else True
        return any_process(local, state.device)

    @staticmethod
    def _loss_scale(state: RunState) -> float:
        """s: the GradScaler's scale (1 without one), read through
        ``scaler.scale`` (which is also what makes the scaler ready to unscale)."""
        if state.scaler is None:
            return 1.0
        return float(state.scaler.scale(torch.ones((), dtype=torch.float32, device=state.device)))

    @staticmethod
    def _trainable(state: RunState) -> List[torch.Tensor]:
        return [p for p in state.core.parameters() if p.requires_grad]

    @staticmethod
    def _finite_gradients(state: RunState) -> bool:
        grads = [p.grad for p in state.core.parameters() if p.grad is not None]
        if not grads:
            return True
        return bool(torch.isfinite(torch.stack([g.detach().abs().amax().float() for g in grads])).all())

    def _poison(self, state: RunState) -> None:
        """Put an inf into one gradient, so the GradScaler skips the step and
        lowers its scale (the method found a task's gradient overflowed)."""
        params = self._trainable(state)
        if params:
            p = params[0]
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.view(-1)[0] = math.inf

    def _log(self, state: RunState, result: GradientCombination, skipped: Optional[str]) -> None:
        if state.logger is None:
            return
        record: Dict[str, Any] = {
            "event": "weighting", "iter": state.iter + 1, "method": self._method, "place": self._place,
            "weights": dict(result.weights), "head_weights": dict(result.head_weights),
            "info": dict(result.info), "absent": list(result.absent), "nonfinite": list(result.nonfinite),
            "skipped": skipped}
        if state.scaler is not None:
            record["grad_scale"] = float(state.scaler.get_scale())
        state.logger.log(record)
