"""What an ablation runs: its rows, their configs per seed, and the data they share.

A *run* is one (row, seed): the row's config file with overrides applied
before it is validated and resolved, once: the command's, ``train.seed``, the
data seed, the ablation's own settings (:data:`RUN_SETTINGS`: one thread, the
test split evaluated at the end) and, once :func:`share_data` has planned
them, the splits that a dataset plugin renders once for every run, read
back from their folders (:mod:`mtlkit.data.render_once`). A run's
*fingerprint* is a hash of that resolved config: a finished run is re-used
only when its fingerprint is unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mtlkit.config import flag_overrides, load_config
from mtlkit.data.render_once import RenderOnce, data_seed_option, shared_split
from mtlkit.errors import ConfigError, did_you_mean
from mtlkit.registry import get_registry
from mtlkit.resolved import ResolvedConfig, resolve_config

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
    "ssd_rgbd": "RGB-D SSD (early fusion)",
    "rock_measured": "ROCK, measured D + N",
}
#: the paper's NYUv2 figures (mAP@0.5, @0.75, @[.5:.95], in %) for the table
PAPER_FIGURES: Dict[str, Tuple[float, float, float]] = {
    "ssd": (31.2, 15.8, 16.2),
    "flat_mtl": (34.3, 16.0, 17.4),
    "intensive_pooling": (35.7, 16.2, 17.4),
    "rock": (37.6, 17.1, 18.5),
}
DATA_SPLITS = ("train", "val", "test")
#: what every run of an ablation sets: one thread and no data workers (runs
#: are the parallel unit), no progress bar or TensorBoard, one evaluation, at
#: the end, on the test split
RUN_SETTINGS: List[str] = (
    flag_overrides("train", num_threads=1, progress=False, eval_every=0, eval_at_end=True,
                   tensorboard=False)
    + flag_overrides("eval", split="test", num_workers=0) + flag_overrides("data", num_workers=0))
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
    config: ResolvedConfig
    run_dir: str
    fingerprint: str = ""
    iters: int = 0
    #: the splits as the config gave them, for those read from a shared folder
    data_specs: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: every override applied to the row's config file to make :attr:`config`
    overrides: List[str] = field(default_factory=list)

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
    (also its plain form, read back from JSON; tasks set to null are
    dropped), in config order."""
    registry = get_registry()
    return [(name, registry.get("task", options.get("name", name) if isinstance(options, Mapping) else name))
            for name, options in (config["model"].get("tasks") or {}).items() if options is not None]


def run_config(path: str, overrides: Sequence[str]) -> ResolvedConfig:
    """The resolved config of a run: ``path`` with ``overrides``, without its
    ``val`` split (a run reads train and test only: val is for choices made
    before the table, docs/ablation.md, not rendered for every ablation),
    validated and resolved once."""
    raw = load_config(path, list(overrides), validate=False)
    if isinstance(raw.get("data"), dict):
        raw["data"].pop("val", None)
    return resolve_config(raw)


def _data_seed_overrides(cfg: Mapping[str, Any], data_seed: Optional[int]) -> List[str]:
    """``data.<split>.<option>=S`` for every split whose dataset plugin names
    the option that seeds its generated world."""
    if data_seed is None:
        return []
    data = cfg.get("data") or {}
    overrides = []
    for split in DATA_SPLITS:
        if isinstance(data.get(split), Mapping):
            option = data_seed_option(data[split])
            if option is not None:
                overrides.append(f"data.{split}.{option}={int(data_seed)}")
    return overrides


def plan_runs(rows: Sequence[Row], seeds: Sequence[int], out: str, overrides: Sequence[str],
              data_seed: Optional[int], iters: Optional[int]) -> List[Run]:
    """Every (row, seed) run with its resolved config (before the data is shared)."""
    runs = []
    for row in rows:
        base = load_config(row.path, list(overrides))
        for seed in seeds:
            run_overrides = (list(overrides) + _data_seed_overrides(base, data_seed)
                             + flag_overrides("train", seed=int(seed), iters=iters) + RUN_SETTINGS)
            cfg = run_config(row.path, run_overrides)
            if (cfg.get("data") or {}).get("test") is None:
                raise ConfigError(f"{row.path}: the ablation needs a data.test split (the table is "
                                  "reported on it; data.val is for choices)")
            runs.append(Run(row=row, seed=int(seed), data_seed=data_seed, config=cfg,
                            run_dir=os.path.join(out, row.stem, f"seed{int(seed)}"),
                            iters=int(cfg["train"]["iters"]), overrides=run_overrides))
    return runs


def share_data(runs: Sequence[Run], data_dir: str) -> Dict[str, Tuple[RenderOnce, int]]:
    """Plan the splits the runs' dataset plugins render once
    (:func:`mtlkit.data.render_once.shared_split`) and point every run at them.

    Returns folder -> (what renders it, the largest size any run reads); each
    run's config is made again with ``data.<split>={type: NAME, root: FOLDER,
    size: N, ...}`` overrides (the plugin's read-back options; ``label_subset``
    kept). Splits whose plugin renders nothing are left as they are."""
    folders: Dict[str, Tuple[RenderOnce, int]] = {}
    for run in runs:
        data = run.config["data"]
        shared = []
        for split in DATA_SPLITS:
            spec = data.get(split)
            found = shared_split(spec, data_dir)
            if found is None:
                continue
            folder, plan = found.folder, found.plan
            if folder in folders:  # equal keys render equal samples: keep the largest size asked
                first, largest = folders[folder]
                folders[folder] = (first, max(largest, plan.size))
            else:
                folders[folder] = (plan, plan.size)
            if split == "test" and run.data_seed is None:
                run.data_seed = plan.seed
            run.data_specs[split] = copy.deepcopy(dict(spec))
            shared.append(f"data.{split}={json.dumps(found.read_spec)}")
        if shared:
            run.overrides = run.overrides + shared
            run.config = run_config(run.row.path, run.overrides)
    return folders


def finalise(runs: Sequence[Run]) -> None:
    """Fix each run's fingerprint (after :func:`share_data`)."""
    for run in runs:
        run.fingerprint = fingerprint({"config": run.config, "data": run.data_specs, "data_seed": run.data_seed})
