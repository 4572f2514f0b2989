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

import yaml

from mtlkit.config import load_config, merge
from mtlkit.errors import ConfigError
from mtlkit.utils.yaml_io import yaml_load

SPLITS = ("train", "val", "test")
#: the keys that select a dataset plugin: an overlay split giving one replaces the source's split
SELECTORS = ("type", "name")


def load_target(path: str) -> Dict[str, Any]:
    """The ``data`` overlay of target file ``path`` (``_base_`` allowed).

    :raises ConfigError: missing file, no ``data`` mapping, or a split that is not a mapping.
    """
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
    each split of ``overlay`` merged over it (an overlay split that names its
    dataset plugin, ``type``, replaces the source's split instead); an overlay
    ``seed`` is offset by ``data_seed`` (the source's data seed).

    :raises ConfigError: a bad seed, a split the source lacks, or an overlay
        on a source split that reads a rendered folder (``root``: the options
        that generated it are not there to change)."""
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
        if any(key in spec for key in SELECTORS):
            out[split] = spec
            continue
        if not isinstance(out.get(split), Mapping):
            raise ConfigError(f"target data.{split}: the source config has no data.{split} to overlay")
        if out[split].get("root"):
            raise ConfigError(f"target data.{split}: the source's data.{split} reads the rendered folder "
                              f"{out[split]['root']}, whose generating options the target would change; "
                              "give the config the model was trained from (e.g. configs/synthetic/rock.yaml) "
                              "as the source, or a complete dataset spec (with type) as the target")
        out[split] = merge(out[split], spec)
    return out


def parse_target(text: Any) -> Dict[str, Any]:
    """``--target``: a target file (:func:`load_target`), or inline YAML (or
    its mapping, from Python): a
    mapping of splits (``{train: {...}, test: {...}}``) or one dataset spec
    for both the train and the test split (``{domain: dusk, seed: 10000}``
    over the source's, or ``{type: coco, ...}`` replacing them).

    :raises ConfigError: a missing file, or text that is neither."""
    if isinstance(text, Mapping):
        value = text
    elif os.path.isfile(text):
        return load_target(text)
    else:
        try:
            value = yaml_load(text)
        except yaml.YAMLError:
            value = None
    if not isinstance(value, Mapping):
        raise ConfigError(f"--target {text}: no such file, and not an inline YAML mapping (expected a target "
                          "file such as configs/synthetic/targets/dusk.yaml or e.g. '{domain: dusk, seed: 10000}')")
    if any(split in value for split in SPLITS):
        for split, spec in value.items():
            if split not in SPLITS or not isinstance(spec, Mapping):
                raise ConfigError(f"--target: {split!r} must be one of {list(SPLITS)} holding a mapping of "
                                  f"dataset options, got {spec!r}")
        return dict(value)
    return {"train": dict(value), "test": dict(value)}
