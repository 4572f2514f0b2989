"""What an ablation runs: its rows, their configs per seed, and the data they share.

A *run* is one (row, seed): the row's config with the command's overrides,
``train.seed`` and the data seed applied, made single-threaded, and with its
synthetic splits replaced by folders rendered once for every run
(:func:`shared_data`). A run's *fingerprint* is a hash of that resolved
config: a finished run is re-used only when its fingerprint is unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mtlkit.errors import ConfigError

#: the paper's rows, in order: (config stem, label in the table)
PAPER_ROWS: List[Tuple[str, str]] = [
    ("ssd", "SSD"),
    ("flat_mtl", "+ flat MTL"),
    ("intensive_pooling", "+ intensive pool."),
    ("rock", "+ fusion (ROCK)"),
]
#: rows on request (``--rows``)
EXTRA_ROWS: Dict[str, str] = {
    "rock_depth_only": "ROCK, aux. D only",
    "rock_aux30": "ROCK, aux. labels on 30%",
    "rock_concat": "ROCK, concat fusion",
    "rock_gated": "ROCK, gated fusion",
    "rock_light": "ROCK light",
}
#: the paper's NYUv2 figures (mAP@0.5, @0.75, @[.5:.95], in %) for the table
PAPER_FIGURES: Dict[str, Tuple[float, float, float]] = {
    "ssd": (31.2, 15.8, 16.2),
    "flat_mtl": (34.3, 16.0, 17.4),
    "intensive_pooling": (35.7, 16.2, 17.4),
    "rock": (37.6, 17.1, 18.5),
}
DATA_SPLITS = ("train", "val", "test")
_ROW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Row:
    stem: str
    label: str
    path: str


@dataclass
class Run:
    """One (row, seed) of the ablation."""

    row: Row
    seed: int
    data_seed: Optional[int]
    config: Dict[str, Any]
    run_dir: str
    fingerprint: str = ""
    iters: int = 0
    data_specs: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.row.stem}/seed{self.seed}"


def select_rows(folder: str, selection: Optional[Sequence[str]]) -> List[Row]:
    """The rows named in ``selection`` (default: the paper's four), each a
    config stem of ``folder``; a name that is a path, or has no config, is an error."""
    labels = dict(PAPER_ROWS, **EXTRA_ROWS)
    stems = list(selection) if selection else [s for s, _ in PAPER_ROWS]
    rows, seen = [], set()
    for stem in stems:
        if not _ROW_NAME.match(stem) or stem in (".", ".."):
            raise ConfigError(f"--rows: '{stem}' is not a row name (a config stem of {folder}, "
                              "letters, digits, '_', '-' and '.', no path)")
        if stem in seen:
            raise ConfigError(f"--rows: row '{stem}' is listed twice")
        seen.add(stem)
        path = os.path.join(folder, f"{stem}.yaml")
        if not os.path.isfile(path):
            known = sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith(".yaml"))
            from mtlkit.registry import did_you_mean

            raise ConfigError(f"--rows: no config for row '{stem}' ({path} not found)"
                              f"{did_you_mean(stem, known)}; rows in {folder}: {', '.join(known)}")
        rows.append(Row(stem, labels.get(stem, stem), path))
    return rows


def fingerprint(config: Mapping[str, Any]) -> str:
    """A stable hash of a resolved config."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def task_classes(config: Mapping[str, Any]) -> List[Tuple[str, type]]:
    """(task name, registered task class) for every task of a resolved config
    (tasks set to null are dropped), in config order."""
    from mtlkit.registry import get_registry

    registry = get_registry()
    return [(name, registry.get("task", options.get("name", name) if isinstance(options, Mapping) else name))
            for name, options in (config["model"].get("tasks") or {}).items() if options is not None]


def _dataset_type(spec: Mapping[str, Any]) -> Optional[str]:
    """A data split's dataset plugin: its ``name``, or ``type`` (the older selector)."""
    return spec.get("name", spec.get("type"))


def _data_seed_overrides(cfg: Mapping[str, Any], data_seed: Optional[int]) -> List[str]:
    if data_seed is None:
        return []
    data = cfg.get("data") or {}
    return [f"data.{split}.seed={int(data_seed)}" for split in DATA_SPLITS
            if isinstance(data.get(split), Mapping) and _dataset_type(data[split]) == "synthetic"
            and data[split].get("root") is None]


def plan_runs(rows: Sequence[Row], seeds: Sequence[int], out: str, overrides: Sequence[str],
              data_seed: Optional[int], iters: Optional[int]) -> List[Run]:
    """Every (row, seed) run with its resolved config (before the data is shared)."""
    from mtlkit.config import load_config
    from mtlkit.engine.trainer import resolve_config

    runs = []
    for row in rows:
        base = load_config(row.path, list(overrides))
        for seed in seeds:
            extra = _data_seed_overrides(base, data_seed) + [f"train.seed={int(seed)}"]
            cfg = resolve_config(load_config(row.path, list(overrides) + extra))
            data = cfg.get("data") or {}
            if data.get("test") is None:
                raise ConfigError(f"{row.path}: the ablation needs a data.test split (the table is "
                                  "reported on it; data.val is for choices)")
            if iters is not None:
                cfg["train"]["iters"] = int(iters)
            # One thread and no data workers per run: runs are the parallel unit.
            cfg["train"].update(num_threads=1, progress=False, eval_every=0, eval_at_end=True,
                                tensorboard=False)
            cfg["eval"]["split"] = "test"
            cfg["eval"]["num_workers"] = 0
            data["num_workers"] = 0
            # a run reads train and test only: val is for choices made before
            # the table (docs/ablation.md), not rendered for every ablation
            data.pop("val", None)
            seed_of_data = data_seed if data_seed is not None else _config_data_seed(data)
            runs.append(Run(row=row, seed=int(seed), data_seed=seed_of_data, config=cfg,
                            run_dir=os.path.join(out, row.stem, f"seed{int(seed)}"),
                            iters=int(cfg["train"]["iters"])))
    return runs


def _config_data_seed(data: Mapping[str, Any]) -> Optional[int]:
    spec = data.get("test") or {}
    seed = spec.get("seed") if isinstance(spec, Mapping) else None
    return int(seed) if isinstance(seed, int) else None


#: options of a synthetic split that are not rendering options: they are kept
#: on the rendered folder's spec
_READ_OPTIONS = ("size", "label_subset")


def shared_data(runs: Sequence[Run], data_dir: str) -> Dict[str, Dict[str, Any]]:
    """Group the runs' synthetic splits by what they render.

    Returns folder -> {"dataset": a SyntheticRooms of the largest size asked,
    "users": [(run, split)]}; every run's config is rewritten to read its
    splits from the folders (``{type: synthetic, root: FOLDER, size: N, ...}``).
    Splits given by ``root`` / ``cache_dir`` or of other dataset types are
    left as they are."""
    from mtlkit.data.synthetic import SyntheticRooms

    folders: Dict[str, Dict[str, Any]] = {}
    for run in runs:
        data = run.config["data"]
        for split in DATA_SPLITS:
            spec = data.get(split)
            if not isinstance(spec, Mapping) or _dataset_type(spec) != "synthetic":
                continue
            if spec.get("root") is not None or spec.get("cache_dir") is not None:
                continue
            options = {k: v for k, v in spec.items() if k not in ("type", "name")}
            render = {k: v for k, v in options.items() if k not in _READ_OPTIONS}
            dataset = SyntheticRooms(**render, size=options.get("size"))
            key = fingerprint(dataset.config)
            folder = os.path.abspath(os.path.join(data_dir, f"{dataset.split}-seed{dataset.seed}-{key}"))
            entry = folders.setdefault(folder, {"dataset": dataset, "users": []})
            if len(dataset) > len(entry["dataset"]):
                entry["dataset"] = dataset
            entry["users"].append((run, split))
            if split == "test" and run.data_seed is None:
                run.data_seed = dataset.seed
            run.data_specs[split] = copy.deepcopy(dict(spec))
            data[split] = {"type": "synthetic", "root": folder,
                           **{k: options[k] for k in _READ_OPTIONS if options.get(k) is not None},
                           }
            data[split].setdefault("size", len(dataset))
    return folders


def finalise(runs: Sequence[Run]) -> None:
    """Fix each run's fingerprint (after :func:`shared_data`)."""
    for run in runs:
        run.fingerprint = fingerprint({"config": run.config, "data": run.data_specs, "data_seed": run.data_seed})
