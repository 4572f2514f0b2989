"""``mtlkit ablate``: reproduce the paper's ablation (SSD -> flat MTL ->
intensive pooling -> ROCK fusion) on a dataset, by default the synthetic rooms.

Each row is a config of a folder (``configs/synthetic/ssd.yaml``, ...), trained
for each seed in ``OUT/<row>/seed<k>/`` and evaluated on the test split (the
validation split when the config has none). The job is resumable: a finished
run (``result.json`` present) is skipped and an interrupted one resumes from
its last checkpoint, so re-running the same command after a crash or Ctrl-C
only does what is left. The table (markdown), the raw results (JSON) and a
bar chart are written to ``OUT``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
from typing import Any, Dict, List, Sequence

from mtlkit.errors import ConfigError, MtlkitError
from mtlkit.utils.io import atomic_write

#: the paper's rows, in order: (config stem, label in the table)
PAPER_ROWS = [
    ("ssd", "SSD"),
    ("flat_mtl", "+ flat MTL"),
    ("intensive_pooling", "+ intensive pool."),
    ("rock", "+ fusion (ROCK)"),
]
EXTRA_ROWS = {"rock_concat": "ROCK, concat fusion", "rock_gated": "ROCK, gated fusion",
              "rock_light": "ROCK light"}
#: detection figures in the table: (metric key, column title)
COLUMNS = [("AP50", "mAP@0.5"), ("AP75", "mAP@0.75"), ("AP", "mAP@[.5:.95]")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configs", nargs="?", default="configs/synthetic",
                        help="folder holding ssd.yaml, flat_mtl.yaml, intensive_pooling.yaml, "
                             "rock.yaml (default: configs/synthetic)")
    parser.add_argument("--out", default="runs/ablation", help="output folder (default: %(default)s)")
    parser.add_argument("--rows", default=None,
                        help="comma-separated config stems (default: the paper's four rows; "
                             f"extras: {', '.join(EXTRA_ROWS)})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default: 0)")
    parser.add_argument("--iters", type=int, default=None, help="training iterations per run "
                        "(default: the configs' train.iters)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every row (repeatable)")


def _rows(folder: str, selection: str | None) -> List[tuple]:
    labels = dict(PAPER_ROWS, **EXTRA_ROWS)
    stems = [s.strip() for s in selection.split(",")] if selection else [s for s, _ in PAPER_ROWS]
    rows = []
    for stem in stems:
        path = os.path.join(folder, f"{stem}.yaml")
        if not os.path.isfile(path):
            raise ConfigError(f"ablation row '{stem}': config not found: {path}")
        rows.append((stem, labels.get(stem, stem), path))
    return rows


def _evaluation_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Evaluate on the test split when the config has one."""
    cfg = copy.deepcopy(cfg)
    data = cfg.get("data") or {}
    if data.get("test") is not None:
        data["val"] = data["test"]
    return cfg


def run_one(config_path: str, overrides: Sequence[str], seed: int, iters: int | None,
            run_dir: str) -> Dict[str, Any]:
    """Train (or resume) one row/seed and evaluate it; the result is cached in
    ``run_dir/result.json``."""
    from mtlkit.config import load_config
    from mtlkit.engine import evaluate, train

    result_path = os.path.join(run_dir, "result.json")
    if os.path.isfile(result_path):
        with open(result_path, encoding="utf-8") as handle:
            return json.load(handle)
    cfg = load_config(config_path, list(overrides) + [f"train.seed={seed}"])
    if (cfg.get("data") or {}).get("val") is None and (cfg.get("data") or {}).get("test") is None:
        raise ConfigError(f"{config_path}: the ablation needs data.test or data.val to evaluate on")
    resume = os.path.isfile(os.path.join(run_dir, "last.pt"))
    # The trainer's final evaluation is on data.val; a test split is evaluated separately.
    metrics = train(cfg, run_dir, iters=iters, resume=resume)
    if (cfg.get("data") or {}).get("test") is not None:
        metrics = evaluate(_evaluation_config(cfg), os.path.join(run_dir, "last.pt"),
                           out_dir=os.path.join(run_dir, "eval_test"))
    result = {"config": config_path, "seed": seed, "metrics": metrics}
    with atomic_write(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2, default=float)
    return result


def _mean_std(values: List[float]) -> tuple:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
    return mean, math.sqrt(var)


def summarise(results: Dict[str, List[Dict[str, Any]]], rows: List[tuple]) -> Dict[str, Any]:
    """Mean and std over seeds of each row's detection figures (in %) and of
    every auxiliary figure."""
    table = {}
    for stem, label, _ in rows:
        runs = results[stem]
        detection = [r["metrics"].get("detection", {}) for r in runs]
        entry = {"label": label, "seeds": [r["seed"] for r in runs], "detection": {}, "auxiliary": {}}
        for key, _ in COLUMNS:
            mean, std = _mean_std([100.0 * d[key] for d in detection if key in d])
            entry["detection"][key] = {"mean": mean, "std": std}
        for task, figures in runs[0]["metrics"].items():
            if task == "detection" or not isinstance(figures, dict):
                continue
            for name in figures:
                if isinstance(figures[name], (int, float)):
                    mean, std = _mean_std([r["metrics"][task].get(name) for r in runs])
                    entry["auxiliary"][f"{task}/{name}"] = {"mean": mean, "std": std}
        table[stem] = entry
    return table


def format_table(summary: Dict[str, Any], seeds: int) -> str:
    """The paper's table, as markdown."""
    head = "| Model | " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for entry in summary.values():
        cells = []
        for key, _ in COLUMNS:
            fig = entry["detection"][key]
            cells.append(f"{fig['mean']:.1f}" + (f" ± {fig['std']:.1f}" if seeds > 1 else ""))
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [e["label"] for e in summary.values()]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(COLUMNS)
    for i, (key, title) in enumerate(COLUMNS):
        means = [e["detection"][key]["mean"] for e in summary.values()]
        stds = [e["detection"][key]["std"] for e in summary.values()]
        xs = [j + (i - (len(COLUMNS) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, means, width, yerr=[0 if math.isnan(s) else s for s in stds], label=title)
    ax.set_xticks(range(len(labels)), labels, rotation=15)
    ax.set_ylabel("mAP (%)")
    ax.legend(fontsize=8)
    ax.set_title("Ablation")
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.configs):
        raise MtlkitError(f"config folder not found: {args.configs}")
    rows = _rows(args.configs, args.rows)
    os.makedirs(args.out, exist_ok=True)
    results: Dict[str, List[Dict[str, Any]]] = {}
    total = len(rows) * len(args.seeds)
    done = 0
    for stem, label, path in rows:
        results[stem] = []
        for seed in args.seeds:
            done += 1
            print(f"[{done}/{total}] {label} (seed {seed})", file=sys.stderr, flush=True)
            run_dir = os.path.join(args.out, stem, f"seed{seed}")
            results[stem].append(run_one(path, args.override, seed, args.iters, run_dir))
    summary = summarise(results, rows)
    table = format_table(summary, len(args.seeds))
    with atomic_write(os.path.join(args.out, "ablation.json"), "w", encoding="utf-8") as handle:
        json.dump({"rows": summary, "runs": results}, handle, indent=2, default=float)
    with atomic_write(os.path.join(args.out, "ablation.md"), "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    plot(summary, os.path.join(args.out, "ablation.png"))
    print(table)
    print(f"\nwritten: {os.path.join(args.out, 'ablation.md')}, ablation.json, ablation.png")
    return 0
