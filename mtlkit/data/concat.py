"""Mixing datasets (e.g. real + synthetic) with per-source sampling weights."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from mtlkit.data.builders import build_dataset
from mtlkit.errors import ConfigError


def _quotas(weights: Sequence[float], total: int) -> List[int]:
    """Split ``total`` items between sources in proportion to ``weights``
    (largest remainders, so the counts sum to ``total`` exactly)."""
    raw = np.asarray(weights, dtype=np.float64) * total
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts.tolist()


class ConcatDataset(Dataset):
    """Several datasets seen as one; ``weights`` say how much of each an epoch holds.

    Config: ``{type: concat, sources: [{type: nyuv2, ...}, {type: synthetic, ...}],
    weights: [0.7, 0.3]}``.

    Options (``defaults``):

    * ``sources`` (list): dataset configs (each with ``type``) or dataset objects.
    * ``weights`` (list or null): share of each source in an epoch. ``null``:
      the plain concatenation (every sample once).
    * ``size`` (int or null): items per epoch with ``weights`` (default: the
      sum of the sources' sizes).
    * ``seed`` (int): seeds which samples fill each source's share.

    With ``weights``, the index space itself realises the mixture: an epoch of
    ``size`` items holds ``round(w_s * size)`` items of source ``s`` (largest
    remainders), drawn as a permutation of that source per (seed, epoch,
    source) — cycled when the share exceeds the source (oversampling), a
    different subset each epoch when it is smaller. So any sampler (plain
    shuffling, ``DistributedSampler``, the engine's sharded order) trains on
    the requested mixture. Call :meth:`set_epoch` each epoch
    (:class:`~mtlkit.data.dataset.TransformedDataset` forwards it).

    :meth:`sampler` / :meth:`sample_weights` draw the same mixture with
    replacement (a ``WeightedRandomSampler``), for code that prefers sampling
    to a fixed epoch.

    The sources must agree on ``classes`` and ``scenes``; a source whose list
    is empty (it carries no such labels) is compatible with any. Samples keep
    their own ``has``, so each trains only the tasks it carries.
    ``meta["id"]`` is the sample's index in the plain concatenation (unique per
    underlying sample); ``meta["source_id"]`` the source's own id and
    ``meta["source_index"]`` the source number.
    """

    defaults = {"sources": [], "weights": None, "size": None, "seed": 0}

    def __init__(self, sources: Sequence[Any] = (), weights: Optional[Sequence[float]] = None,
                 size: Optional[int] = None, seed: int = 0):
        if not sources:
            raise ConfigError("concat dataset: 'sources' must list at least one dataset")
        self.datasets: List[Dataset] = [
            build_dataset(src, where=f"concat.sources[{i}]") if isinstance(src, Mapping) else src
            for i, src in enumerate(sources)
        ]
        self.lengths = [len(ds) for ds in self.datasets]
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self.weighted = weights is not None
        if weights is None:
            weights = [float(n) for n in self.lengths]
        if len(weights) != len(self.datasets):
            raise ConfigError(f"concat dataset: {len(weights)} weights for {len(self.datasets)} sources")
        if (any(not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0 for w in weights)
                or sum(weights) <= 0):
            raise ConfigError(f"concat dataset: weights must be non-negative numbers, not all 0, got {list(weights)}")
        for i, (w, n) in enumerate(zip(weights, self.lengths)):
            if w > 0 and n == 0:
                raise ConfigError(f"concat dataset: sources[{i}] is empty but has weight {w}")
        self.weights = [float(w) / float(sum(weights)) for w in weights]
        self.seed = int(seed)
        self.epoch = 0
        total = int(size) if size is not None else int(sum(self.lengths))
        if self.weighted:
            self.quotas = _quotas(self.weights, total)
        else:
            self.quotas = list(self.lengths)
        self.quota_starts = np.concatenate([[0], np.cumsum(self.quotas)]).astype(np.int64)
        self.classes = self._agree("classes")
        self.scenes = self._agree("scenes")
        self._perms: Dict[int, np.ndarray] = {}

    def _agree(self, attr: str) -> List[str]:
        chosen: List[str] = []
        chosen_from = -1
        for i, ds in enumerate(self.datasets):
            values = list(getattr(ds, attr, []) or [])
            if not values:
                continue
            if not chosen:
                chosen, chosen_from = values, i
            elif values != chosen:
                raise ConfigError(
                    f"concat dataset: sources disagree on {attr}: sources[{chosen_from}] has {chosen}, "
                    f"sources[{i}] has {values}; mixed sources must use the same {attr} in the same order"
                )
        return chosen

    def set_epoch(self, epoch: int) -> None:
        """Choose which samples fill each source's share this epoch (with ``weights``)."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._perms = {}
        for ds in self.datasets:
            if callable(getattr(ds, "set_epoch", None)):
                ds.set_epoch(epoch)

    def __len__(self) -> int:
        return int(self.quota_starts[-1])

    def locate(self, index: int):
        """(source number, index in that source) of item ``index`` of this epoch."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        source = int(np.searchsorted(self.quota_starts, index, side="right")) - 1
        j = index - int(self.quota_starts[source])
        if not self.weighted:
            return source, j
        perm = self._perms.get(source)
        if perm is None:
            rng = np.random.default_rng([self.seed, self.epoch, source])
            perm = self._perms[source] = rng.permutation(self.lengths[source])
        return source, int(perm[j % self.lengths[source]])

    def __getitem__(self, index: int) -> Dict[str, Any]:
        source, local = self.locate(index)
        sample = dict(self.datasets[source][local])
        meta = dict(sample.get("meta", {}))
        meta["source_id"] = meta.get("id", local)
        meta["id"] = int(self.starts[source]) + local
        meta["source_index"] = source
        sample["meta"] = meta
        return sample

    def sample_weights(self) -> torch.Tensor:
        """(len,) float64 per-item weights for a ``WeightedRandomSampler`` such that
        source ``s`` is drawn with probability ``weights[s]``."""
        out = torch.empty(len(self), dtype=torch.float64)
        for s, w in enumerate(self.weights):
            lo, hi = int(self.quota_starts[s]), int(self.quota_starts[s + 1])
            if hi > lo:
                out[lo:hi] = w / (hi - lo)
        return out

    def sampler(self, num_samples: Optional[int] = None,
                generator: Optional[torch.Generator] = None) -> WeightedRandomSampler:
        """A ``WeightedRandomSampler`` (with replacement) drawing ``num_samples``
        (default ``len(self)``) indices according to the weights."""
        return WeightedRandomSampler(self.sample_weights(), num_samples or len(self),
                                     replacement=True, generator=generator)
