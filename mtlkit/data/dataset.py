"""Dataset wrappers: transforms with reproducible randomness, and a loader helper."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mtlkit.data.collate import collate
from mtlkit.schema import LABEL_SUBSET_DEFAULTS


class LabelSubset(Dataset):
    """``dataset`` where only a fixed fraction of the samples carry the labels
    of some tasks: the others get ``has[task] = False``, so those tasks' losses
    and metrics skip them (the paper's "auxiliary supervision on 30% of the
    images").

    The labelled samples are the first ``round(fraction * len(dataset))`` of a
    permutation seeded by ``seed``: the same subset for every run and epoch.
    Config: a split's ``label_subset: {fraction: 0.3, tasks: [scene, depth,
    normals], seed: 0}`` (see :func:`mtlkit.data.build_dataset`), checked by
    the config's one rule (:data:`mtlkit.schema.LABEL_SUBSET`).
    """

    #: its options (``fraction``, ``tasks``, ``seed``) and their defaults: :data:`mtlkit.schema.LABEL_SUBSET`
    OPTIONS = LABEL_SUBSET_DEFAULTS

    def __init__(self, dataset: Dataset, fraction: float, tasks, seed: int = 0):
        self.dataset = dataset
        self.tasks = list(tasks)
        n = len(dataset)
        self.labelled = np.zeros(n, dtype=bool)
        order = np.random.default_rng([seed, 0x5AB5E7]).permutation(n)
        self.labelled[order[:int(round(float(fraction) * n))]] = True

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = self.dataset[index]
        if not self.labelled[int(index)]:
            sample["has"] = {**(sample.get("has") or {}), **{t: False for t in self.tasks}}
        return sample

    def __getattr__(self, name: str) -> Any:
        if name == "dataset" or "dataset" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["dataset"], name)


class TransformedDataset(Dataset):
    """``dataset`` with ``transform(sample, rng)`` applied to each item.

    The generator of item ``i`` is ``numpy.random.default_rng([seed, epoch, i])``:
    the same (seed, epoch, index) always gives the same augmented sample,
    whatever the worker, the number of workers or the order items are asked
    in — so a resumed run sees exactly the samples it would have seen. Call
    :meth:`set_epoch` before each epoch (with ``persistent_workers`` the
    workers keep the epoch they were started with).

    Attributes of the wrapped dataset (``classes``, ``scenes``,
    ``sample_weights``...) are reachable on the wrapper.
    """

    def __init__(self, dataset: Dataset, transform: Optional[Callable[..., Dict[str, Any]]],
                 seed: int = 0):
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentation of ``epoch`` (forwarded to the wrapped dataset if it has ``set_epoch``)."""
        self.epoch = int(epoch)
        inner = getattr(self.dataset, "set_epoch", None)
        if callable(inner):
            inner(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = self.dataset[index]
        if self.transform is None:
            return sample
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        return self.transform(sample, rng)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found normally; guard against
        # recursion while unpickling (before ``dataset`` is set).
        if name == "dataset" or "dataset" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["dataset"], name)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)


def build_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, num_workers: int = 0,
                 seed: int = 0, sampler: Optional[Sampler] = None, drop_last: bool = False,
                 **kwargs: Any) -> DataLoader:
    """A ``DataLoader`` with :func:`mtlkit.data.collate` and seeded shuffling.

    ``sampler`` (e.g. a ``DistributedSampler`` or the weighted sampler of a
    concat dataset) overrides ``shuffle``. Extra keyword arguments go to
    ``DataLoader``.
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        **kwargs,
    )
