"""The training step the step benchmarks time, and how they time a variant
against its baseline."""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from mtlkit.data import collate


def seconds_per_step(model, optimizer, transform, dataset, batch_size: int, steps: int, *, bf16: bool,
                     channels_last: bool, inputs: Optional[Callable[[dict], Dict]] = None) -> float:
    """Mean wall seconds of one training step over ``steps`` steps, after one
    warm-up step (allocator, oneDNN primitives). A step: read ``batch_size``
    samples of ``dataset`` (cycling), augment each with ``transform``, collate,
    forward (images (B, 3, H, W), NHWC when ``channels_last``, plus
    ``inputs(batch)`` as keyword arguments), losses, weighting, backward,
    ``optimizer.step()``; under bf16 CPU autocast when ``bf16``."""

    def step(index: int) -> None:
        batch = collate([transform(dataset[i % len(dataset)], np.random.default_rng(i))
                         for i in range(index * batch_size, (index + 1) * batch_size)])
        images = batch["image"]
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        extra = inputs(batch) if inputs is not None else {}
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            out = model(images, **extra)
            total, _ = model.weighting(model.losses(out, batch))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    step(0)
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    return (time.perf_counter() - t0) / steps


def best_interleaved(benchmark, baseline: Callable[[], float], variant: Callable[[], float],
                     rounds: int = 3) -> Tuple[float, float]:
    """(best baseline, best variant) seconds over ``rounds`` interleaved
    rounds: each round runs ``baseline()`` as pytest-benchmark's untimed setup,
    then ``variant()`` timed, so load from other processes hits both alike.
    Both callables return the seconds they measured themselves."""
    base, mine = [], []
    benchmark.pedantic(lambda: mine.append(variant()), setup=lambda: base.append(baseline()),
                       rounds=rounds, iterations=1)
    return min(base), min(mine)
