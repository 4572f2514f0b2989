"""A target domain: an overlay on a config's ``data`` section.

A target file (``configs/synthetic/targets/dusk.yaml``) holds a ``data``
section giving, per split, only what differs from the source's splits: for
the synthetic world the ``domain`` and the data ``seed``. The target of a run
whose source data seed is ``s`` uses the file's seed + ``s`` (the files give
the seeds that go with source data seed 0), so every source data seed has a
target of its own, never the source's rooms.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, Mapping

from mtlkit.errors import ConfigError

SPLITS = ("train", "val", "test")


def load_target(path: str) -> Dict[str, Any]:
    """The ``data`` overlay of target file ``path`` (``_base_`` allowed).

    :raises ConfigError: missing file, no ``data`` mapping, or a split that is not a mapping.
    """
    from mtlkit.config import load_config

    if not os.path.isfile(path):
        raise ConfigError(f"target {path}: no such file (expected a YAML file with a data section, "
                          "e.g. configs/synthetic/targets/dusk.yaml)")
    cfg = load_config(path, validate=False)
    data = cfg.get("data")
    if not isinstance(data, Mapping) or not any(split in data for split in SPLITS):
        raise ConfigError(f"target {path}: expected a data section with splits {list(SPLITS)}")
    for split in SPLITS:
        if split in data and not isinstance(data[split], Mapping):
            raise ConfigError(f"target {path}: data.{split} must be a mapping of dataset options, "
                              f"got {data[split]!r}")
    return dict(data)


def with_data_seed(data: Mapping[str, Any], seed: int) -> Dict[str, Any]:
    """``data`` with every synthetic split's ``seed`` set to ``seed`` (splits read from a ``root`` kept)."""
    out = copy.deepcopy(dict(data))
    for split in SPLITS:
        spec = out.get(split)
        if isinstance(spec, dict) and spec.get("type", spec.get("name")) == "synthetic" and not spec.get("root"):
            spec["seed"] = int(seed)
    return out


def target_data(source: Mapping[str, Any], overlay: Mapping[str, Any], data_seed: int = 0) -> Dict[str, Any]:
    """The target's data section: ``source`` (a config's data section) with
    each split of ``overlay`` merged over it; an overlay ``seed`` is offset by
    ``data_seed`` (the source's data seed)."""
    from mtlkit.config import merge

    out = copy.deepcopy(dict(source))
    for split in SPLITS:
        if split not in overlay:
            continue
        spec = dict(overlay[split])
        if "seed" in spec:
            seed = spec["seed"]
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ConfigError(f"target data.{split}.seed must be a non-negative integer, got {seed!r}")
            spec["seed"] = seed + int(data_seed)
        if not isinstance(out.get(split), Mapping):
            raise ConfigError(f"target data.{split}: the source config has no data.{split} to overlay")
        out[split] = merge(out[split], spec)
    return out
