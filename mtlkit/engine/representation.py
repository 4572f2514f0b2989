"""Cutting the autograd graph at a module's output: the shared representation
R of the gradient step's ``representation`` place (docs/weighting.md §3).

While a :class:`RepresentationCut` is open, the module's output (a tensor, or
a list / tuple of tensors: a backbone's source maps) is replaced by detached
copies that require a gradient. Everything above the module then builds its
graph on the copies, so ``torch.autograd.grad(L_t, cut.detached)`` gives task
t's gradient at R by back-propagating through the layers above R only, and
one ``torch.autograd.backward(cut.attached, update)`` sends a combined
gradient through the trunk below R.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
from torch import nn

from mtlkit.errors import ConfigError


class RepresentationCut:
    """A context manager over one forward of the model (see the module docstring).

    After the forward, :attr:`attached` holds the module's outputs (the
    trunk's graph hangs on them) and :attr:`detached` the copies the rest of
    the model used, in the same order; the module must run exactly once.
    """

    def __init__(self, module: nn.Module, where: str = "model.backbone"):
        self.module = module
        self.where = where
        self.attached: List[torch.Tensor] = []
        self.detached: List[torch.Tensor] = []
        self._handle: Optional[Any] = None
        self._calls = 0

    def __enter__(self) -> "RepresentationCut":
        self._handle = self.module.register_forward_hook(self._cut)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _cut(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        self._calls += 1
        if self._calls > 1:
            raise ConfigError(f"{self.where} ran twice in one forward: the representation place needs "
                              "one shared representation per forward (use place: parameters)")
        single = isinstance(output, torch.Tensor)
        tensors = [output] if single else list(output) if isinstance(output, (list, tuple)) else None
        if not tensors or not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in tensors):
            raise ConfigError(f"{self.where} returned {type(output).__name__}: the representation place "
                              "needs a floating-point tensor or a list / tuple of them (use place: parameters)")
        self.attached = tensors
        self.detached = [t.detach().requires_grad_() for t in tensors]
        if single:
            return self.detached[0]
        return type(output)(self.detached) if isinstance(output, tuple) else list(self.detached)

    # -- flat vectors over the representation ------------------------------------------
    @property
    def size(self) -> int:
        """d: the number of elements of R (all its tensors, over the batch)."""
        return sum(t.numel() for t in self.attached)

    def gradient(self, loss: torch.Tensor, retain_graph: bool = True) -> torch.Tensor:
        """(d,) dloss/dR, flattened in the tensors' logical order and
        concatenated (zeros for a tensor ``loss`` does not reach)."""
        if not loss.requires_grad:
            return torch.zeros(self.size, dtype=self.detached[0].dtype, device=self.detached[0].device)
        grads = torch.autograd.grad(loss, self.detached, retain_graph=retain_graph, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(r)).reshape(-1)
                          for g, r in zip(grads, self.detached)])

    def split(self, update: torch.Tensor) -> Sequence[torch.Tensor]:
        """The (d,) vector ``update`` as one tensor per output, in their shapes."""
        if update.numel() != self.size:
            raise ValueError(f"update has {update.numel()} elements, the representation {self.size}")
        pieces, offset = [], 0
        for t in self.attached:
            pieces.append(update[offset:offset + t.numel()].view(t.shape))
            offset += t.numel()
        return pieces
