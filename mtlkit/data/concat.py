"""Mixing datasets (e.g. real + synthetic) with per-source sampling weights."""

from __future__ import annotations

import bisect
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from mtlkit.errors import ConfigError


class ConcatDataset(Dataset):
    """Several datasets seen as one; ``weights`` say how often each is drawn.

    Config: ``{type: concat, sources: [{type: nyuv2, ...}, {type: synthetic, ...}],
    weights: [0.7, 0.3]}``.

    Options (``defaults``):

    * ``sources`` (list): dataset configs (each with ``type``) or dataset objects.
    * ``weights`` (list or null): sampling weight of each source (normalised;
      default: proportional to the sources' sizes, i.e. uniform over samples).

    The sources must agree on ``classes`` and ``scenes``; a source whose list
    is empty (it carries no such labels) is compatible with any. Samples keep
    their own ``has``, so each trains only the tasks it carries. ``meta["id"]``
    becomes the index in the concatenation (unique); the source's id is kept
    as ``meta["source_id"]``.

    Use :meth:`sampler` (or :meth:`sample_weights` with your own
    ``WeightedRandomSampler``) so the weights apply; plain shuffling ignores them.
    """

    defaults = {"sources": [], "weights": None}

    def __init__(self, sources: Sequence[Any] = (), weights: Optional[Sequence[float]] = None):
        from mtlkit.data import build_dataset

        if not sources:
            raise ConfigError("concat dataset: 'sources' must list at least one dataset")
        self.datasets: List[Dataset] = [
            build_dataset(src, where=f"concat.sources[{i}]") if isinstance(src, Mapping) else src
            for i, src in enumerate(sources)
        ]
        self.cumulative = []
        total = 0
        for ds in self.datasets:
            total += len(ds)
            self.cumulative.append(total)
        if weights is None:
            weights = [float(len(ds)) for ds in self.datasets]
        if len(weights) != len(self.datasets):
            raise ConfigError(f"concat dataset: {len(weights)} weights for {len(self.datasets)} sources")
        if any(not isinstance(w, (int, float)) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"concat dataset: weights must be non-negative numbers, not all 0, got {list(weights)}")
        self.weights = [float(w) / float(sum(weights)) for w in weights]
        self.classes = self._agree("classes")
        self.scenes = self._agree("scenes")

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

    def __len__(self) -> int:
        return self.cumulative[-1] if self.cumulative else 0

    def locate(self, index: int):
        """(source number, index in that source) of a global index."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        source = bisect.bisect_right(self.cumulative, index)
        start = self.cumulative[source - 1] if source else 0
        return source, index - start

    def __getitem__(self, index: int) -> Dict[str, Any]:
        source, local = self.locate(index)
        sample = dict(self.datasets[source][local])
        meta = dict(sample.get("meta", {}))
        meta["source_id"] = meta.get("id", local)
        meta["id"] = int(index if index >= 0 else index + len(self))
        meta["source_index"] = source
        sample["meta"] = meta
        return sample

    def sample_weights(self) -> torch.Tensor:
        """(len,) float64 per-sample weights: source s has total probability ``weights[s]``."""
        out = torch.empty(len(self), dtype=torch.float64)
        start = 0
        for ds, w, end in zip(self.datasets, self.weights, self.cumulative):
            if end > start:
                out[start:end] = w / (end - start)
            start = end
        return out

    def sampler(self, num_samples: Optional[int] = None,
                generator: Optional[torch.Generator] = None) -> WeightedRandomSampler:
        """A ``WeightedRandomSampler`` (with replacement) drawing ``num_samples``
        (default ``len(self)``) indices per epoch according to the weights."""
        return WeightedRandomSampler(self.sample_weights(), num_samples or len(self),
                                     replacement=True, generator=generator)
