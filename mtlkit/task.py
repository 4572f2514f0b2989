"""The task interface: what a task plugin (primary or auxiliary) provides.

A task is registered by class (``registry.add("depth", DepthTask)``); the
model instantiates it once per model as ``cls(name, options)`` where
``options`` are the task's config section merged over :attr:`Task.defaults`.

Engine-facing methods (see ``docs/architecture.md``): :meth:`loss`,
:meth:`postprocess`, :meth:`new_metric`, :meth:`visualize`. How the head is
built depends on the role: the primary task builds its head on the fused
source maps (:meth:`build_head`); auxiliary tasks are assembled by the ROCK
block (see :class:`mtlkit.task.AuxiliaryTask` once defined by the model code).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

PRIMARY = "primary"
AUXILIARY = "auxiliary"

#: options every task accepts, whatever its own defaults
COMMON_DEFAULTS: Dict[str, Any] = {"weight": 1.0}


class Task(abc.ABC):
    """Base class of every task plugin.

    Class attributes a plugin sets:

    * ``role``: ``"primary"`` (exactly one per model; detection) or ``"auxiliary"``.
    * ``batch_keys``: the batch keys its loss and metric read (e.g.
      ``("depth", "depth_mask")``); datasets that lack them mark the sample
      with ``has[name] = False``.
    * ``defaults``: option name -> default value (validated by the config).
    """

    role: ClassVar[str] = AUXILIARY
    batch_keys: ClassVar[Tuple[str, ...]] = ()
    defaults: ClassVar[Dict[str, Any]] = {}

    def __init__(self, name: str, options: Optional[Dict[str, Any]] = None):
        self.name = name
        merged = {**COMMON_DEFAULTS, **self.defaults}
        merged.update(options or {})
        self.options = merged
        self.weight = float(merged["weight"])

    # -- model side ----------------------------------------------------------
    def build_head(self, in_channels: Sequence[int], **context: Any) -> nn.Module:
        """Primary task: the module mapping the (fused) source maps to the raw
        prediction. ``in_channels`` has one entry per backbone source map (the
        last is X~); ``context`` carries e.g. ``image_size``."""
        raise NotImplementedError(f"task '{self.name}' ({type(self).__name__}) builds no head")

    @abc.abstractmethod
    def loss(self, prediction: Any, batch: Dict[str, Any]) -> torch.Tensor:
        """Scalar loss, unweighted, masked per sample by ``batch["has"][self.name]``
        (B,) and per pixel by the task's validity mask. A batch with no labelled
        sample gives an exact 0 connected to the graph (``prediction.sum() * 0``),
        never NaN."""

    @abc.abstractmethod
    def postprocess(self, prediction: Any, image_size: Tuple[int, int]) -> Any:
        """Raw prediction of a batch -> prediction in user units for the batch."""

    @abc.abstractmethod
    def new_metric(self) -> Any:
        """A fresh metric accumulator: ``update(postprocessed, batch)``,
        ``compute() -> dict[str, float]``, ``merge(other)``; picklable."""

    def visualize(self, prediction: Any, index: int, sample: Dict[str, Any]) -> Optional[np.ndarray]:
        """A picture (H, W, 3) uint8 of the postprocessed prediction of sample
        ``index`` of the batch, or ``None`` when the task has nothing to draw."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, role={self.role!r}, weight={self.weight})"
