"""What one adaptation iteration minimises: steps of the trainer
(:class:`mtlkit.engine.step.TrainStep`), so adaptation runs in the training
loop itself (one loop, one lr schedule, checkpoints, resume, logging, curves).

* :class:`AuxiliaryStep`: the model's sensor tasks' losses (depth, normals:
  :func:`.unlabelled.sensor_tasks`) on unlabelled target images; test-time
  training with supervised auxiliary signals.
* :class:`EntropyStep`: TENT (Wang et al., ICLR 2021): the mean entropy of the
  primary task's class posteriors (:meth:`mtlkit.task.Task.class_logits`).
* :class:`AdaBNStep`: AdaBN, no gradient: each iteration adds its batch to the
  exact population statistics of every BatchNorm layer (:mod:`.adabn`).

Each step reads only the image and the sensor's maps of a batch
(:func:`.unlabelled.unlabelled`): the target's annotations never reach a loss.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import nn

from mtlkit.engine.precision import to_memory_format
from mtlkit.engine.state import RunState
from mtlkit.engine.step import Losses, TrainStep
from mtlkit.errors import ConfigError
from mtlkit.task import Task

from .adabn import Moments, batchnorm_layers
from .params import freeze_all_but, moving_modules, moving_norms, set_adapt_modes
from .unlabelled import check_sensor_data, sensor_tasks, unlabelled


def first_batch(state: RunState) -> Dict[str, Any]:
    """The first ``batch_size`` samples of the adaptation data, collated (for checks)."""
    dataset = state.train_dataset
    count = min(len(dataset), max(1, int(state.batch_size)))
    return state.collate_fn([dataset[i] for i in range(count)])


class GradientAdaptStep(TrainStep):
    """A step that fits the parameters chosen by ``params``
    (:mod:`.params`) to an objective of :meth:`objective`; everything else is
    frozen and in evaluation mode. The moving BatchNorm layers normalise with
    each batch's statistics and update their running ones: by their momentum,
    or with ``cumulative_stats`` (online) as the mean over every batch seen."""

    #: the method's name (adapt.json, the logs)
    method = ""

    def __init__(self, params: str, cumulative_stats: bool = False) -> None:
        super().__init__()
        self.params = params
        self.cumulative_stats = bool(cumulative_stats)
        self.norms: List[nn.Module] = []

    def setup(self, state: RunState) -> None:
        core = state.core
        modules = moving_modules(core, self.params)
        self.norms = moving_norms(modules)
        moving = freeze_all_but(core, modules)
        if not moving:
            raise ConfigError(f"--params {self.params}: this model has no parameter there to adapt")
        if self.cumulative_stats:
            # online: the moving layers' running statistics become the mean over the
            # target batches seen so far (the first prediction uses the first batch's)
            for bn in self.norms:
                bn.momentum = None
                bn.num_batches_tracked.zero_()

    def forward(self, state: RunState, batch: Dict[str, Any]) -> Losses:
        set_adapt_modes(state.core, self.norms)
        outputs = state.model(to_memory_format(batch["image"], state.channels_last))
        return self.objective(state, outputs, batch)

    def objective(self, state: RunState, outputs: Mapping[str, Any], batch: Dict[str, Any]) -> Losses:
        raise NotImplementedError


class AuxiliaryStep(GradientAdaptStep):
    """Minimise the sensor tasks' losses, each times its ``weight``, on the
    unlabelled batch."""

    method = "aux"

    def setup(self, state: RunState) -> None:
        self.tasks = sensor_tasks(state.core)
        if not self.tasks:
            raise ConfigError("--method aux: the model has no auxiliary task a sensor measures (depth, "
                              "normals): nothing to adapt with (an SSD); use --method adabn or tent")
        check_sensor_data(state.core, self.tasks, first_batch(state), "--target")
        super().setup(state)

    def loss_names(self, state: RunState) -> List[str]:
        return sensor_tasks(state.core)

    def objective(self, state: RunState, outputs: Mapping[str, Any], batch: Dict[str, Any]) -> Losses:
        core = state.core
        target = unlabelled(batch, self.tasks, core)
        losses = {name: core.tasks[name].loss(outputs[name], target) for name in self.tasks}
        weights = {name: float(core.tasks[name].weight) for name in self.tasks}
        total = sum(weights[n] * losses[n] for n in self.tasks)
        return Losses(tasks=losses, total=total, weights=weights)


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over every anchor of the entropy (nats) of ``softmax(logits)``;
    logits (..., C)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


class EntropyStep(GradientAdaptStep):
    """TENT: minimise the mean entropy of the primary task's class posteriors."""

    method = "tent"

    def setup(self, state: RunState) -> None:
        primary = state.core.tasks[state.core.primary]
        if type(primary).class_logits is Task.class_logits:
            raise ConfigError(f"--method tent: the primary task '{state.core.primary}' "
                              f"({type(primary).__name__}) gives no class posteriors (Task.class_logits)")
        super().setup(state)

    def loss_names(self, state: RunState) -> List[str]:
        return ["entropy"]

    def objective(self, state: RunState, outputs: Mapping[str, Any], batch: Dict[str, Any]) -> Losses:
        core = state.core
        logits = core.tasks[core.primary].class_logits(outputs[core.primary])
        if logits is None:
            raise ConfigError(f"--method tent: the primary task '{core.primary}' gives no class posteriors")
        entropy = mean_entropy(logits)
        return Losses(tasks={"entropy": entropy}, total=entropy)


class AdaBNStep(TrainStep):
    """AdaBN inside the loop: no optimiser; each iteration runs its batch
    through the model (every BatchNorm normalising with the batch's own
    statistics, running ones untouched) and adds each layer's input moments;
    the running statistics then become the population statistics of every
    image seen so far (exactly: sums in float64). Reports the number of images."""

    uses_optimizer = False
    method = "adabn"

    def __init__(self) -> None:
        super().__init__()
        self.layers: List[nn.Module] = []
        self.moments: List[Moments] = []
        self.images = 0

    def setup(self, state: RunState) -> None:
        core = state.core
        for p in core.parameters():
            p.requires_grad_(False)
        self.layers = batchnorm_layers(core)
        self.moments = [Moments() for _ in self.layers]

    def loss_names(self, state: RunState) -> List[str]:
        return []

    def forward(self, state: RunState, batch: Dict[str, Any]) -> Losses:
        set_adapt_modes(state.core, self.layers)
        saved = [layer.momentum for layer in self.layers]
        tracked = [layer.num_batches_tracked.clone() for layer in self.layers]
        for layer in self.layers:
            layer.momentum = 0.0  # the running statistics are set from the moments, in update()
        # hooked for this forward only: evaluations in between (hooks) must not count
        handles = [layer.register_forward_pre_hook(moments) for layer, moments in zip(self.layers, self.moments)]
        try:
            # gradients stay enabled (nothing requires one): an inference-only fast path
            # (a BatchNorm folded into its convolution under no_grad) would skip the layers
            state.model(to_memory_format(batch["image"], state.channels_last))
        finally:
            for handle in handles:
                handle.remove()
            for layer, momentum, count in zip(self.layers, saved, tracked):
                layer.momentum = momentum
                layer.num_batches_tracked.copy_(count)
        self.images += int(batch["image"].shape[0])
        return Losses(tasks={}, total=torch.zeros((), device=batch["image"].device))

    def backward(self, state: RunState, losses: Losses) -> None:
        """No gradient."""

    def update(self, state: RunState, output) -> None:
        with torch.no_grad():
            for layer, moments in zip(self.layers, self.moments):
                if moments.count:
                    mean, var = moments.mean_var()
                    layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
                    layer.running_var.copy_(var.to(layer.running_var.dtype))

    def state_dict(self) -> Optional[Dict[str, Any]]:
        return {"images": self.images, "moments": [m.state_dict() for m in self.moments]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state.get("moments") or []) != len(self.moments):
            raise ConfigError("the checkpoint's AdaBN statistics do not fit this model's BatchNorm layers")
        self.images = int(state["images"])
        for moments, saved in zip(self.moments, state["moments"]):
            moments.load_state_dict(saved)


STEPS = {"aux": AuxiliaryStep, "tent": EntropyStep, "adabn": AdaBNStep}
