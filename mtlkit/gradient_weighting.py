"""The gradient-level weighting interface: per-task gradients in, one update out.

Beside :class:`mtlkit.weighting.LossWeighting` (losses in, one loss out), a
:class:`GradientWeighting` looks at each task's gradient and returns the
combined update. It is the same registry kind (``weighting``: one config key
``model.weighting``, one namespace of names) and a subclass of
``LossWeighting``, so it is held as ``model.weighting`` and its state is
checkpointed with the model. The trainer tells the two apart with
``isinstance(model.weighting, GradientWeighting)``.

Every method here is written on the **Gram matrix** of the per-task gradients,
G[s, t] = <g_s, g_t> (k x k, float64), plus the task losses and its own state:
it returns a (k, k) matrix ``directions`` whose row t is task t's gradient
*after* the method (projected, gated, re-weighted...) written as a combination
of the original gradients, and the update is the sum of the rows,

    update = sum_t directions[t] @ g = sum_s coefficients[s] g_s.

Why the Gram matrix: it is all a method needs (projections, cosines, norms,
min-norm points are functions of inner products), it is tiny, and it makes
distributed training exact for every method in both gradient places (see
``docs/weighting.md``): the trainer reduces G (or the gradients) across
processes, every process computes the same coefficients from the same G, and
applies them to its own gradients.

Where gradients are taken (the method's ``place``, an option):

* ``"parameters"``: g_t = dL_t / d(shared parameters), flattened: exact, k
  backward passes through the network.
* ``"representation"``: g_t = dL_t / dX, X the shared representation (the
  backbone's last map: every task's loss passes through it), flattened over
  the batch: LibMTL's ``rep_grad``; k backward passes through the layers
  above X only, then one backward of the trunk with ``X.backward(update)``.
* ``None``: methods that weigh losses only (``needs_gradients = False``:
  FAMO, RLW): their update is the gradient of ``sum_t c_t L_t``, one backward.

Call protocol (per optimiser step; ``docs/weighting.md`` has the trainer's
side in full):

* ``result = weighting.combine(grads, losses, present, grad_scale=s)`` with
  ``grads`` the per-task flattened gradients, or, when the Gram matrix is
  reduced across processes first, ``result = weighting.plan(gram=G, ...)``
  then ``update = result.apply(local_grads)``; loss-level methods:
  ``weighting.plan(losses=..., present=...)``.
* ``weighting.head_loss(losses, result)``: the scalar whose backward gives the
  parameters outside the gradient place (task-specific heads) their gradient.
* ``forward(losses)`` (the loss-level call) only outside training: the sum of
  the losses under the tasks' configured weights, for reporting. In training
  mode it raises :class:`GradientWeightingError`: silently falling back to a
  loss weighting would train something else than the method named.

Conventions every method keeps:

* a task absent from the batch (``present[t]`` false), with a configured
  ``weight`` of 0, or whose gradient (or, for methods that read losses, loss)
  is not finite takes no part: its row and coefficient are 0 and the method
  runs on the others; non-finite tasks are listed in ``result.nonfinite``. With
  ``grad_scale != 1`` (fp16 with a gradient scaler) a non-finite gradient is an
  overflow: ``result.skip_step`` is true, the update is 0 and no state moves.
* primary-aware methods never change the primary gradient: the primary's row
  is its own (configured-weight) gradient, checked on every call.
* state (buffers, saved with the model) moves only in training mode and only
  when ``update_state`` is true; random methods draw from a generator whose
  state is a buffer (``rng_state``), so a resumed run draws what the
  uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from mtlkit.errors import ConfigError, MtlkitError
from mtlkit.task import PRIMARY
from mtlkit.weighting import LossWeighting

PARAMETERS = "parameters"
REPRESENTATION = "representation"
PLACES = (PARAMETERS, REPRESENTATION)

#: gradients, one flattened (d,) tensor per task: a (k, d) matrix in the
#: weighting's task order, a sequence of k tensors, or a dict name -> tensor
#: (a missing name is an absent task)
Gradients = Union[torch.Tensor, Sequence[torch.Tensor], Mapping[str, torch.Tensor]]
Losses = Union[torch.Tensor, Mapping[str, Any]]
Present = Union[torch.Tensor, Mapping[str, Any], Sequence[str]]

#: columns per chunk when the Gram matrix is accumulated in float64
GRAM_CHUNK = 1 << 22


class GradientWeightingError(MtlkitError):
    """A gradient-level weighting used where it cannot work (e.g. a trainer
    step that only calls ``forward(losses)``)."""


# ---------------------------------------------------------------------------
# Gradients as flat vectors, the Gram matrix, applying coefficients
# ---------------------------------------------------------------------------

def flatten_gradients(grads: Sequence[Optional[torch.Tensor]],
                      params: Sequence[torch.Tensor]) -> torch.Tensor:
    """One (d,) vector of the gradients of ``params`` (``None`` -> zeros, e.g.
    ``torch.autograd.grad(..., allow_unused=True)`` for a parameter a task
    does not reach), d = total number of elements, in ``params`` order."""
    if len(grads) != len(params):
        raise ValueError(f"{len(grads)} gradients for {len(params)} parameters")
    parts = [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
    return torch.cat(parts) if parts else torch.zeros(0)


def write_gradients(update: torch.Tensor, params: Sequence[torch.Tensor], accumulate: bool = False) -> None:
    """Write the (d,) vector ``update`` into the ``.grad`` of ``params`` (the
    inverse of :func:`flatten_gradients`: elements in each parameter's logical
    order); ``accumulate`` adds to existing gradients instead of replacing
    them. A new gradient has its parameter's memory layout (a channels_last
    weight gets a channels_last gradient, as autograd would give it)."""
    total = sum(p.numel() for p in params)
    if total != update.numel():
        raise ValueError(f"update has {update.numel()} elements, the parameters {total}")
    offset = 0
    for p in params:
        n = p.numel()
        piece = update[offset:offset + n].view(p.shape)
        offset += n
        if accumulate and p.grad is not None:
            p.grad.add_(piece.to(p.grad.dtype))
        else:
            p.grad = torch.empty_like(p).copy_(piece)


def gram_matrix(grads: Sequence[torch.Tensor], chunk: int = GRAM_CHUNK) -> torch.Tensor:
    """G[s, t] = <g_s, g_t>, (k, k) float64 on the gradients' device.

    Accumulated in float64 by chunks of ``chunk`` columns, so float32 / bf16 /
    fp16 gradients neither overflow nor lose the small inner products; a
    non-finite entry in g_t makes G[t, t] non-finite (which is how
    non-finite gradients are detected, also after an all-reduce of G)."""
    rows = [g.reshape(-1) for g in grads]
    k = len(rows)
    if k == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    d = rows[0].numel()
    if any(r.numel() != d for r in rows):
        raise ValueError(f"per-task gradients differ in size: {[r.numel() for r in rows]}")
    device = rows[0].device
    gram = torch.zeros(k, k, dtype=torch.float64, device=device)
    for start in range(0, max(d, 1), chunk):
        block = torch.stack([r[start:start + chunk] for r in rows]).to(torch.float64)
        gram += block @ block.T
    return gram


def apply_coefficients(coefficients: torch.Tensor, grads: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
    """sum_t coefficients[t] g_t over the tasks whose coefficient is non-zero
    (a zero-coefficient row is skipped, never multiplied: 0 * NaN is NaN).
    Accumulated in float32 (float64 for float64 gradients), returned in the
    gradients' dtype."""
    coefficients = coefficients.detach().to("cpu", torch.float64)
    ref = next((g for g in grads if g is not None), None)
    if ref is None:
        raise ValueError("no gradient to combine")
    acc_dtype = torch.float64 if ref.dtype == torch.float64 else torch.float32
    update = torch.zeros(ref.numel(), dtype=acc_dtype, device=ref.device)
    for c, g in zip(coefficients.tolist(), grads):
        if c != 0.0:
            if g is None:
                raise ValueError("a task with a non-zero coefficient has no gradient")
            update.add_(g.reshape(-1).to(acc_dtype), alpha=c)
    return update.to(ref.dtype)


# ---------------------------------------------------------------------------
# What a method sees and what it returns
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class StepInputs:
    """What a method's :meth:`GradientWeighting.directions` receives: the
    *active* tasks only (present, finite, weight != 0), m of them.

    * ``names``: their names, in the weighting's task order; ``index`` (m,)
      int64 their positions in ``weighting.task_names`` (for per-task state).
    * ``gram``: (m, m) float64 CPU Gram matrix of their gradients, unscaled
      (``grad_scale`` removed) and, for methods with ``uses_task_weights``,
      of the weighted gradients w_t g_t; None for loss-level methods.
    * ``losses``: (m,) float64 CPU (None when not given).
    * ``task_weights``: (m,) float64, the tasks' configured ``weight``.
    * ``primary``: position of the primary task among the m, None when it is
      not active (or the model has none).
    * ``update_state``: whether the method may move its state this call.
    """

    names: Tuple[str, ...]
    index: torch.Tensor
    gram: Optional[torch.Tensor]
    losses: Optional[torch.Tensor]
    task_weights: torch.Tensor
    primary: Optional[int]
    update_state: bool

    @property
    def m(self) -> int:
        return len(self.names)


@dataclass
class GradientCombination:
    """The result of one call (see the module docstring).

    * ``coefficients``: (k,) float64 CPU, update = sum_s coefficients[s] g_s
      with g_s the gradients as given (scaled by ``grad_scale`` if they were).
    * ``directions``: (k, k) float64 CPU, row t = task t's gradient after the
      method as a combination of the given gradients (0 for inactive tasks).
    * ``weights``: name -> coefficient (what the trainer logs).
    * ``head_weights``: name -> multiplier of L_t for the parameters outside
      the gradient place (:meth:`GradientWeighting.head_loss`); inactive
      tasks are missing.
    * ``active`` / ``absent`` / ``nonfinite``: task names.
    * ``skip_step``: an fp16 overflow: do not step, let the scaler back off.
    * ``info``: diagnostics (cosines, conflicts...), name -> float.
    * ``update``: the (d,) combined gradient when :meth:`combine` had them.
    """

    task_names: Tuple[str, ...]
    coefficients: torch.Tensor
    directions: torch.Tensor
    weights: Dict[str, float]
    head_weights: Dict[str, float]
    active: Tuple[str, ...]
    absent: Tuple[str, ...]
    nonfinite: Tuple[str, ...]
    skip_step: bool = False
    info: Dict[str, float] = field(default_factory=dict)
    update: Optional[torch.Tensor] = None

    def apply(self, grads: Gradients) -> torch.Tensor:
        """The (d,) update from ``grads`` (any form :data:`Gradients` allows,
        e.g. this process's representation gradients)."""
        return apply_coefficients(self.coefficients, _rows(grads, self.task_names))


def _rows(grads: Gradients, names: Sequence[str]) -> List[Optional[torch.Tensor]]:
    """The k per-task gradients (None for a name missing from a dict)."""
    if isinstance(grads, Mapping):
        unknown = [n for n in grads if n not in names]
        if unknown:
            raise ValueError(f"gradients for unknown tasks {unknown}; tasks: {list(names)}")
        return [grads.get(n) for n in names]
    rows = list(grads.unbind(0)) if isinstance(grads, torch.Tensor) else list(grads)
    if len(rows) != len(names):
        raise ValueError(f"{len(rows)} gradient rows for {len(names)} tasks {list(names)}")
    return rows


# ---------------------------------------------------------------------------
# The base class
# ---------------------------------------------------------------------------

class GradientWeighting(LossWeighting):
    """Base class of gradient-level weightings; see the module docstring.

    Class attributes a method sets (read by the trainer and the docs):

    * ``needs_gradients``: per-task gradients needed (False: FAMO, RLW, whose
      update is the gradient of a weighted loss; the trainer does one backward).
    * ``needs_losses``: the method reads the task losses (pass them).
    * ``primary_aware``: the method knows the primary task and never changes
      its gradient (needs exactly one primary task).
    * ``stateful``: the method keeps state across steps (in buffers).
    * ``uses_task_weights``: the method works on w_t g_t, the gradients of the
      losses under the tasks' configured ``weight`` (else on g_t; a weight of
      0 switches a task off for every method).
    * ``weights_losses``: the coefficients also weigh the task-specific
      parameters (a loss weighting in disguise: GradNorm, FAMO, RLW, OL-AUX);
      otherwise those get w_t dL_t (the configured weights, as with ``fixed``).

    Subclasses implement :meth:`directions` (or, for a diagonal one,
    :meth:`coefficients`) on the active tasks' :class:`StepInputs`.
    """

    defaults: ClassVar[Dict[str, Any]] = {"place": REPRESENTATION}
    choices: ClassVar[Dict[str, Sequence[Any]]] = {"place": PLACES}
    ranges: ClassVar[Dict[str, str]] = {}

    needs_gradients: ClassVar[bool] = True
    needs_losses: ClassVar[bool] = False
    primary_aware: ClassVar[bool] = False
    stateful: ClassVar[bool] = False
    uses_task_weights: ClassVar[bool] = False
    weights_losses: ClassVar[bool] = False
    #: whether the method draws random numbers (then ``seed`` is an option and
    #: ``rng_state`` a buffer)
    randomised: ClassVar[bool] = False

    @classmethod
    def check_options(cls, options: Mapping[str, Any], where: str) -> None:
        """A randomised method's ``seed``: an integer or null."""
        seed = options.get("seed") if cls.randomised else None
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"{where}.seed: expected an integer or null, got {seed!r}")

    def __init__(self, tasks: Mapping[str, Any], **options: Any):
        where = "model.weighting"
        super().__init__(tasks, **options)  # checks the options (mtlkit.options)
        if not self.task_names:
            raise ConfigError(f"{where}: {type(self).__name__} needs at least one task")
        primaries = [n for n, t in tasks.items() if getattr(t, "role", None) == PRIMARY]
        if self.primary_aware and len(primaries) != 1:
            raise ConfigError(f"{where}: {type(self).__name__} weighs auxiliary tasks against the "
                              f"primary one and needs exactly one task with role 'primary', "
                              f"got {primaries or 'none'}")
        self.primary: Optional[str] = primaries[0] if len(primaries) == 1 else None
        if self.randomised:
            seed = self.options.get("seed")
            generator = torch.Generator()
            generator.manual_seed(int(seed) if seed is not None else torch.initial_seed())
            self.register_buffer("rng_state", generator.get_state())

    # -- what the trainer reads --------------------------------------------------
    @property
    def place(self) -> Optional[str]:
        """Where the trainer takes the per-task gradients: ``"parameters"``,
        ``"representation"``, or None (loss-level: no per-task gradient)."""
        return self.options.get("place") if self.needs_gradients else None

    # -- the method ----------------------------------------------------------------
    def directions(self, inputs: StepInputs) -> torch.Tensor:
        """(m, m) float64: row t = active task t's gradient after the method,
        as a combination of the (weighted, if ``uses_task_weights``) gradients
        of the active tasks. Default: ``diag(coefficients(inputs))``."""
        return torch.diag(self.coefficients(inputs))

    def coefficients(self, inputs: StepInputs) -> torch.Tensor:
        """(m,) float64: the weight of each active task's gradient (diagonal methods)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither directions() "
                                  "nor coefficients()")

    # -- the calls -------------------------------------------------------------------
    def combine(self, grads: Gradients, losses: Optional[Losses] = None,
                present: Optional[Present] = None, *, gram: Optional[torch.Tensor] = None,
                grad_scale: float = 1.0, update_state: bool = True) -> GradientCombination:
        """Combine per-task gradients into one update.

        :param grads: the tasks' flattened (d,) gradients at the method's
            place (:data:`Gradients`); rows of absent tasks may be anything
            (zeros), they are not read.
        :param losses: the task losses (floats or scalar tensors; needed when
            ``needs_losses``); under DDP, averaged over processes.
        :param present: which tasks have a labelled sample in this batch (all
            when None); under DDP, any process.
        :param gram: the Gram matrix to use instead of the one of ``grads``
            (under DDP with the representation place: the reduced one).
        :param grad_scale: the factor the losses were multiplied by before
            the backward (AMP's GradScaler scale); removed before the method
            runs, so coefficients and state do not depend on it, while the
            update stays in the units of ``grads``.
        :param update_state: False for a call whose step will not be taken
            (all micro-batches but the last, a dry run).
        :returns: a :class:`GradientCombination` with ``update`` set.
        """
        rows = _rows(grads, self.task_names)
        if present is None and isinstance(grads, Mapping):
            present = list(grads)
        present_mask = self._present_mask(present)
        missing = [n for n, r, p in zip(self.task_names, rows, present_mask.tolist()) if p and r is None]
        if missing:
            raise ValueError(f"no gradient given for the present tasks {missing}")
        ref = next((r for r in rows if r is not None), None)
        if ref is None:
            raise ValueError("no gradient given")
        if gram is None:
            # only the present tasks' rows are read (loss-level methods use
            # the diagonal alone: a non-finite row is dropped, not applied)
            given = [i for i, p in enumerate(present_mask.tolist()) if p]
            gram = torch.zeros(len(rows), len(rows), dtype=torch.float64)
            if given:
                idx = torch.tensor(given, dtype=torch.long)
                gram[idx.unsqueeze(1), idx.unsqueeze(0)] = gram_matrix([rows[i] for i in given]).cpu()
        present = present_mask
        result = self.plan(gram=gram, losses=losses, present=present, grad_scale=grad_scale,
                           update_state=update_state)
        if result.skip_step or not result.active:
            result.update = torch.zeros(ref.numel(), dtype=ref.dtype, device=ref.device)
        else:
            result.update = apply_coefficients(result.coefficients, rows)
        return result

    def plan(self, gram: Optional[torch.Tensor] = None, losses: Optional[Losses] = None,
             present: Optional[Present] = None, *, grad_scale: float = 1.0,
             update_state: bool = True) -> GradientCombination:
        """The coefficients without applying them: from a Gram matrix (k, k)
        of the given gradients (``gram``), or from the losses alone for
        loss-level methods (``needs_gradients`` false). Same parameters as
        :meth:`combine`; ``result.apply(grads)`` gives the update."""
        names = tuple(self.task_names)
        k = len(names)
        if self.needs_gradients and gram is None:
            raise ValueError(f"{type(self).__name__} combines gradients: give grads or gram")
        if not (float(grad_scale) > 0 and math.isfinite(float(grad_scale))):
            raise ValueError(f"grad_scale must be a positive finite number, got {grad_scale}")
        present_mask = self._present_mask(present)
        loss_vec = self._loss_vector(losses)
        if self.needs_losses:
            if loss_vec is None:
                raise ValueError(f"{type(self).__name__} reads the task losses: pass losses")
            missing = [n for n, l, p in zip(names, self._missing_losses(losses), present_mask.tolist())
                       if p and l]
            if missing:
                raise ValueError(f"no loss given for the present tasks {missing}")
        task_w = torch.tensor([self.task_weights[n] for n in names], dtype=torch.float64)

        finite = torch.ones(k, dtype=torch.bool)
        g = None
        if gram is not None:
            g = gram.detach().to("cpu", torch.float64)
            if g.shape != (k, k):
                raise ValueError(f"gram must be ({k}, {k}), got {tuple(g.shape)}")
            finite &= torch.isfinite(torch.diagonal(g))
            if not self.needs_gradients:
                g = None  # read for finiteness only
        if self.needs_losses:
            finite &= torch.isfinite(loss_vec)
        nonfinite = tuple(n for i, n in enumerate(names) if present_mask[i] and not finite[i])
        active_mask = present_mask & finite & (task_w != 0)
        update_state = bool(update_state and self.training)
        skip = bool(nonfinite) and float(grad_scale) != 1.0

        coefficients = torch.zeros(k, dtype=torch.float64)
        directions = torch.zeros(k, k, dtype=torch.float64)
        info: Dict[str, float] = {}
        active_idx = torch.nonzero(active_mask).flatten()
        if not skip and active_idx.numel():
            sub = active_idx
            scale = task_w[sub] if self.uses_task_weights else torch.ones(len(sub), dtype=torch.float64)
            sub_gram = None
            if g is not None:
                sub_gram = g[sub][:, sub] / float(grad_scale) ** 2
                sub_gram = sub_gram * scale.unsqueeze(0) * scale.unsqueeze(1)
                sub_gram = 0.5 * (sub_gram + sub_gram.T)
            primary = None
            if self.primary is not None and active_mask[names.index(self.primary)]:
                primary = int((sub == names.index(self.primary)).nonzero()[0, 0])
            inputs = StepInputs(names=tuple(names[i] for i in sub.tolist()), index=sub,
                                gram=sub_gram,
                                losses=loss_vec[sub] if loss_vec is not None else None,
                                task_weights=task_w[sub], primary=primary, update_state=update_state)
            self._info = info
            try:
                d_sub = self.directions(inputs).to(torch.float64)
            finally:
                self._info = None
            m = len(sub)
            if d_sub.shape != (m, m):
                raise RuntimeError(f"{type(self).__name__}.directions returned {tuple(d_sub.shape)}, "
                                   f"expected ({m}, {m})")
            if not torch.isfinite(d_sub).all():
                raise RuntimeError(f"{type(self).__name__} produced non-finite directions from finite "
                                   f"inputs: {d_sub.tolist()}")
            if self.primary_aware and primary is not None:
                expected = torch.zeros(m, dtype=torch.float64)
                expected[primary] = 1.0
                if not torch.equal(d_sub[primary], expected):
                    raise RuntimeError(f"{type(self).__name__} changed the primary gradient: "
                                       f"row {d_sub[primary].tolist()}")
            d_sub = d_sub * scale.unsqueeze(0)  # back to the given gradients' basis
            directions[sub.unsqueeze(1), sub.unsqueeze(0)] = d_sub
            coefficients = directions.sum(0)

        active = tuple(names[i] for i in active_idx.tolist()) if not skip else ()
        absent = tuple(n for i, n in enumerate(names) if not present_mask[i])
        weights = {n: float(coefficients[i]) for i, n in enumerate(names)}
        if self.weights_losses:
            head = {n: weights[n] for n in active}
        else:
            head = {n: self.task_weights[n] for n in active}
        return GradientCombination(task_names=names, coefficients=coefficients, directions=directions,
                                   weights=weights, head_weights=head, active=active, absent=absent,
                                   nonfinite=nonfinite, skip_step=skip, info=info)

    def head_loss(self, losses: Mapping[str, torch.Tensor], result: GradientCombination) -> torch.Tensor:
        """sum_t head_weights[t] * L_t over the active tasks: backward of it
        gives the parameters outside the gradient place their gradient
        (inactive tasks are left out, never multiplied by 0: 0 * NaN is NaN).
        When no task is active (``result.active`` empty) a constant 0 without
        graph: the step has no gradient and the trainer skips the backward."""
        total = None
        for name, weight in result.head_weights.items():
            if name in losses:
                term = losses[name] * weight
                total = term if total is None else total + term
        if total is None:  # nothing to back-propagate: the trainer skips the backward
            total = torch.zeros(())
        return total

    def forward(self, losses: Dict[str, torch.Tensor]):
        """Outside training: the losses under the tasks' configured weights
        (for reporting). In training mode: :class:`GradientWeightingError`."""
        if self.training:
            raise GradientWeightingError(
                f"model.weighting '{type(self).__name__}' combines per-task gradients: the trainer "
                "must take them and call combine()/plan() (docs/weighting.md), not forward(losses); "
                "this trainer step does not support gradient-level weighting")
        weights = {n: self.task_weights.get(n, 1.0) for n in losses}
        total = None
        for name, loss in losses.items():
            term = loss * weights[name]
            total = term if total is None else total + term
        return total, weights

    # -- helpers for subclasses ------------------------------------------------------
    def note(self, key: str, value: float) -> None:
        """Record a diagnostic in the current call's ``result.info``."""
        if getattr(self, "_info", None) is not None:
            self._info[key] = float(value)

    @contextlib.contextmanager
    def generator(self, update_state: bool) -> Iterator[torch.Generator]:
        """The method's seeded CPU generator; its state is written back to
        the ``rng_state`` buffer only when ``update_state`` (so the draws of
        a call that does not count are repeated by the next one)."""
        gen = torch.Generator()
        gen.set_state(self.rng_state.detach().cpu())
        yield gen
        if update_state:
            self.rng_state.copy_(gen.get_state().to(self.rng_state.device))

    def _present_mask(self, present: Optional[Present]) -> torch.Tensor:
        names = self.task_names
        k = len(names)
        if present is None:
            return torch.ones(k, dtype=torch.bool)
        if isinstance(present, torch.Tensor):
            if present.numel() != k:
                raise ValueError(f"present has {present.numel()} entries for {k} tasks")
            return present.detach().to("cpu").reshape(-1).bool()
        if isinstance(present, Mapping):
            unknown = [n for n in present if n not in names]
            if unknown:
                raise ValueError(f"present names unknown tasks {unknown}; tasks: {names}")
            return torch.tensor([bool(present.get(n, False)) for n in names], dtype=torch.bool)
        given = set(present)
        unknown = sorted(given - set(names))
        if unknown:
            raise ValueError(f"present names unknown tasks {unknown}; tasks: {names}")
        return torch.tensor([n in given for n in names], dtype=torch.bool)

    def _missing_losses(self, losses: Losses) -> List[bool]:
        if isinstance(losses, torch.Tensor):
            return [False] * len(self.task_names)
        return [losses.get(n) is None for n in self.task_names]

    def _loss_vector(self, losses: Optional[Losses]) -> Optional[torch.Tensor]:
        if losses is None:
            return None
        k = len(self.task_names)
        if isinstance(losses, torch.Tensor):
            if losses.numel() != k:
                raise ValueError(f"losses has {losses.numel()} entries for {k} tasks")
            return losses.detach().to("cpu", torch.float64).reshape(-1)
        values = [losses.get(n) for n in self.task_names]
        return torch.tensor([float(v.detach()) if isinstance(v, torch.Tensor) else
                             (float("nan") if v is None else float(v)) for v in values],
                            dtype=torch.float64)

