"""The collectives of the gradient step (:mod:`mtlkit.engine.gradient_step`)
under DDP, done by hand.

The gradient step runs every forward and backward inside DDP's
``no_sync()``: per-task gradients are taken with ``torch.autograd.grad``
(which DDP does not see), tasks that take no part leave their heads without
a gradient (which DDP without ``find_unused_parameters`` refuses), and the
method must see the *global* Gram matrix or gradients before any update. So
the step does itself what DDP does for the fixed step:

* :func:`average_gradients`: the mean of ``.grad`` over processes (DDP's
  all-reduce), keeping ``None`` for a parameter no process gave a gradient;
* :func:`broadcast_buffers`: rank 0's buffers (BatchNorm statistics, the
  weighting's state) on every process before the forward, as DDP's
  ``broadcast_buffers`` does, so every process evaluates the same model;
* :func:`all_reduce_sum` / :func:`any_process`: the losses, the Gram matrix,
  which tasks are present.

With one process every function returns its input unchanged.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from mtlkit.engine import dist


def _distributed() -> bool:
    return dist.is_initialized() and dist.world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over processes (in place, returned)."""
    if _distributed():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def any_process(mask: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(k,) bool CPU: true where ``mask`` is true on at least one process."""
    if not _distributed():
        return mask.detach().to("cpu", torch.bool)
    counts = all_reduce_sum(mask.detach().to(device, torch.float32))
    return counts.cpu() > 0


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Replace each parameter's ``.grad`` by its mean over processes (a
    missing gradient counts as zeros); a parameter without a gradient on
    every process keeps ``None`` (so the optimiser skips it, as with one
    process). One all-reduce of a flat float32 buffer."""
    if not _distributed() or not params:
        return
    world = dist.world_size()
    device = params[0].device
    n = len(params)
    pieces: List[torch.Tensor] = [torch.tensor([p.grad is not None for p in params],
                                               dtype=torch.float32, device=device)]
    pieces += [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
               for p in params]
    flat = all_reduce_sum(torch.cat(pieces))
    has = (flat[:n] > 0).tolist()
    offset = n
    for p, present in zip(params, has):
        size = p.numel()
        if present:
            mean = flat[offset:offset + size].view(p.shape) / world
            if p.grad is None:
                p.grad = torch.empty_like(p)
            p.grad.copy_(mean)
        offset += size


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers into every process's ``module`` (one
    broadcast per dtype; bool buffers travel as uint8)."""
    if not _distributed():
        return
    groups: Dict[torch.dtype, List[torch.Tensor]] = {}
    for buf in module.buffers():
        groups.setdefault(buf.dtype, []).append(buf)
    for dtype, bufs in groups.items():
        wire = torch.uint8 if dtype == torch.bool else dtype
        flat = torch.cat([b.detach().reshape(-1).to(wire) for b in bufs])
        torch.distributed.broadcast(flat, src=src)
        offset = 0
        for b in bufs:
            size = b.numel()
            b.copy_(flat[offset:offset + size].view(b.shape).to(dtype))
            offset += size
