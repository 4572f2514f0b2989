"""Deterministic, resumable, sharded data order for training and evaluation.

The order of training samples is a pure function of ``(seed, epoch)``: epoch
``e`` visits ``permutation(seed, e)`` in global batches of
``batch_size * world_size`` images (an incomplete last batch is dropped);
rank ``r`` takes slice ``[r * batch_size, (r + 1) * batch_size)`` of every
global batch. So 2 processes with batch 4 see exactly the samples 1 process
with batch 8 sees, in the same iterations, and a run resumed at
``(epoch, batch)`` sees what the uninterrupted run saw. Augmentation
randomness is the dataset's business: datasets with ``set_epoch(epoch)``
(e.g. :class:`mtlkit.data.TransformedDataset`) draw it from
``(seed, epoch, index)``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mtlkit.errors import DataError


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` samples in ``epoch``: (n,) int64, pure in (seed, epoch)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x5EED]).permutation(n)


class ShardedBatches:
    """Per-rank index batches of each epoch (see the module docstring)."""

    def __init__(self, n: int, batch_size: int, world_size: int = 1, rank: int = 0,
                 seed: int = 0, shuffle: bool = True):
        if batch_size < 1:
            raise DataError(f"data.batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size = int(n), int(batch_size)
        self.world_size, self.rank = int(world_size), int(rank)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.global_batch = self.batch_size * self.world_size
        self.batches_per_epoch = self.n // self.global_batch
        if self.batches_per_epoch == 0:
            raise DataError(
                f"the training set has {self.n} samples, fewer than one global batch "
                f"(data.batch_size {self.batch_size} x {self.world_size} processes)"
            )

    def epoch_batches(self, epoch: int, start: int = 0) -> List[List[int]]:
        """This rank's batches of ``epoch`` from batch ``start`` on."""
        order = epoch_permutation(self.n, self.seed, epoch) if self.shuffle else np.arange(self.n)
        lo = self.rank * self.batch_size
        return [
            order[b * self.global_batch + lo: b * self.global_batch + lo + self.batch_size].tolist()
            for b in range(int(start), self.batches_per_epoch)
        ]


def _loader(dataset: Dataset, batches: Sequence[List[int]], collate_fn: Callable,
            num_workers: int, pin_memory: bool, seed: int) -> DataLoader:
    # A private generator: creating the iterator must not consume the global
    # torch RNG (that would make the model's randomness depend on data loading).
    generator = torch.Generator()
    generator.manual_seed(int(seed) & 0x7FFFFFFFFFFFFFFF)
    return DataLoader(dataset, batch_sampler=list(batches), collate_fn=collate_fn,
                      num_workers=int(num_workers), pin_memory=pin_memory, generator=generator)


class TrainStream:
    """An endless stream of training batches whose position can be saved.

    :meth:`next` returns the next batch; :meth:`state` is the position of the
    batch after the last one returned: ``{"epoch", "batch"}``.
    """

    def __init__(self, dataset: Dataset, sampler: ShardedBatches, collate_fn: Callable,
                 num_workers: int = 0, pin_memory: bool = False, epoch: int = 0, batch: int = 0):
        self.dataset, self.sampler, self.collate_fn = dataset, sampler, collate_fn
        self.num_workers, self.pin_memory = int(num_workers), pin_memory
        self.epoch, self.batch = int(epoch), int(batch)
        self._it: Optional[Iterator[Any]] = None

    def _start_epoch(self) -> None:
        if self.batch >= self.sampler.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.epoch)
        batches = self.sampler.epoch_batches(self.epoch, self.batch)
        seed = hash((self.sampler.seed, self.epoch, self.batch)) & 0x7FFFFFFF
        self._it = iter(_loader(self.dataset, batches, self.collate_fn, self.num_workers,
                                self.pin_memory, seed))

    def next(self) -> Dict[str, Any]:
        if self._it is None:
            self._start_epoch()
        try:
            batch = next(self._it)
        except StopIteration:
            self._it = None
            self.batch = self.sampler.batches_per_epoch
            self._start_epoch()
            batch = next(self._it)
        self.batch += 1
        return batch

    def state(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def close(self) -> None:
        self._it = None


def eval_loader(dataset: Dataset, batch_size: int, collate_fn: Callable, num_workers: int = 0,
                world_size: int = 1, rank: int = 0, pin_memory: bool = False) -> DataLoader:
    """Rank ``r`` evaluates samples ``r, r + world, ...`` in order (no sample
    is dropped or repeated, so merged metrics equal a single-process run)."""
    indices = list(range(rank, len(dataset), world_size))
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    return _loader(dataset, batches, collate_fn, num_workers, pin_memory, seed=rank)
