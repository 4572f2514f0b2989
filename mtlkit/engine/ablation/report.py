"""The ablation's outputs: ``ablation.json`` (runs + summary), ``ablation.md``
(mean ± std over seeds, the paper's figures, paired gains) and ``ablation.png``.

Paired gains: for a row R and a reference row B trained on the same seeds,
the gain is the mean and the std of the per-seed differences R(seed) − B(seed);
"positive on k/n seeds" counts the seeds where the difference is > 0. The
reference is SSD (the row's total effect) and the row before it in the
paper's order (the step's own effect).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mtlkit import viz
from mtlkit.task import PRIMARY
from mtlkit.utils.io import atomic_write

from .plan import PAPER_FIGURES, PAPER_ROWS, Row, task_classes

#: the primary task's figures in the table: (record key, column title)
COLUMNS = [("AP50", "mAP@0.5"), ("AP75", "mAP@0.75"), ("AP", "mAP@[.5:.95]")]
def mean_std(values: Sequence[float]) -> Dict[str, Any]:
    """Mean, sample std (ddof 1; 0 for one value) and count of the finite values."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    mean = sum(finite) / len(finite)
    var = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1) if len(finite) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "n": len(finite)}


def paired_gain(records: Sequence[Dict[str, Any]], row: str, base: str, key: str) -> Optional[Dict[str, Any]]:
    """Gain of ``row`` over ``base`` in ``key`` (in %), paired by (seed, data seed)."""
    by_seed = {(r["seed"], r["data_seed"]): r for r in records if r["model"] == base}
    diffs = [100.0 * (r[key] - by_seed[(r["seed"], r["data_seed"])][key]) for r in records
             if r["model"] == row and (r["seed"], r["data_seed"]) in by_seed]
    if not diffs:
        return None
    out = mean_std(diffs)
    out["positive"] = sum(1 for d in diffs if d > 0)
    return out


#: suffix of the derived row of a row trained with measured inputs, evaluated without its sensor
WITHOUT_SENSOR = "/without_sensor"


def with_sensorless_rows(records: Sequence[Dict[str, Any]], rows: Sequence[Row]
                         ) -> "tuple[List[Dict[str, Any]], List[Row]]":
    """The records and rows, plus for every row whose runs carry
    ``without_sensor`` (trained with measured inputs) a row ``STEM/without_sensor``
    right after it: the same runs evaluated with the sensor off."""
    records, out_rows = list(records), []
    for row in rows:
        out_rows.append(row)
        mine = [r for r in records if r["model"] == row.stem and isinstance(r.get("without_sensor"), dict)]
        if not mine:
            continue
        stem = row.stem + WITHOUT_SENSOR
        out_rows.append(Row(stem, f"{row.label}, no sensor", row.path))
        for r in mine:
            records.append({"model": stem, "seed": r["seed"], "data_seed": r["data_seed"],
                            **{k: r["without_sensor"].get(k, float("nan")) for k, _ in COLUMNS},
                            "iters": r["iters"], "train_seconds": r["train_seconds"]})
    return records, out_rows


def summarise(records: Sequence[Dict[str, Any]], rows: Sequence[Row]) -> Dict[str, Any]:
    """Per row: label, seeds, mean/std (in %) of the primary task's figures and of
    every auxiliary figure, the paper's figures, and paired gains over SSD and
    over the previous row. A row trained with measured inputs is followed by
    its runs without the sensor (:func:`with_sensorless_rows`)."""
    records, rows = with_sensorless_rows(records, rows)
    stems = [row.stem for row in rows]
    summary: Dict[str, Any] = {}
    for i, row in enumerate(rows):
        mine = [r for r in records if r["model"] == row.stem]
        entry: Dict[str, Any] = {"label": row.label, "seeds": sorted(r["seed"] for r in mine),
                                 "iters": sorted({r["iters"] for r in mine}),
                                 "train_seconds": mean_std([r["train_seconds"] for r in mine])}
        for key, _ in COLUMNS:
            entry[key] = mean_std([100.0 * r[key] for r in mine])
        aux_keys = sorted({k for r in mine for k in r if "/" in k})
        entry["auxiliary"] = {k: mean_std([r.get(k) for r in mine]) for k in aux_keys}
        if row.stem in PAPER_FIGURES:
            entry["paper"] = dict(zip([k for k, _ in COLUMNS], PAPER_FIGURES[row.stem]))
        gains: Dict[str, Any] = {}
        if "ssd" in stems and row.stem != "ssd":
            gains["vs_ssd"] = {k: paired_gain(records, row.stem, "ssd", k) for k, _ in COLUMNS}
        previous = _previous_row(row.stem, stems)
        if previous is not None and previous != "ssd":
            gains["vs_previous"] = {"row": previous,
                                    **{k: paired_gain(records, row.stem, previous, k) for k, _ in COLUMNS}}
        entry["gains"] = gains
        summary[row.stem] = entry
    return summary


def _previous_row(stem: str, stems: Sequence[str]) -> Optional[str]:
    """The row before ``stem`` in the paper's order (for a paper row), else
    ROCK for the ROCK variants, when those rows are in the ablation."""
    order = [s for s, _ in PAPER_ROWS]
    if stem in order:
        earlier = [s for s in order[:order.index(stem)] if s in stems]
        return earlier[-1] if earlier else None
    return "rock" if stem.startswith("rock") and "rock" in stems else None


def _fmt(stat: Optional[Dict[str, Any]], signed: bool = False, scale: float = 1.0,
         digits: Optional[int] = 1) -> str:
    """``mean ± std (positive/n)``; ``digits=None``: 1 decimal from 1 up, else 3."""
    if not stat or not stat.get("n"):
        return "–"
    mean, std = stat["mean"] * scale, stat["std"] * scale
    if digits is None:
        digits = 1 if abs(mean) >= 1.0 or mean == 0.0 else 3
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if stat["n"] > 1:
        text += f" ± {std:.{digits}f}"
    if "positive" in stat:
        text += f" ({stat['positive']}/{stat['n']})"
    return text


def format_markdown(summary: Dict[str, Any], info: Dict[str, Any],
                    aux_columns: Sequence[Tuple[str, str, float]] = ()) -> str:
    """The tables of ``ablation.md``; ``aux_columns``: (record key, title,
    display factor) of the auxiliary figures to show (:func:`aux_columns`)."""
    lines = [f"# Ablation: {info.get('title', '')}".rstrip(), ""]
    lines.append(", ".join(f"{k}: {v}" for k, v in info.items() if k != "title"))
    lines += ["", "Detection on the test split, mean ± std over seeds (in %); the paper's NYUv2 "
              "figures in brackets.", ""]
    head = "| Model | " + " | ".join(t for _, t in COLUMNS) + " |"
    lines += [head, "|---" * (len(COLUMNS) + 1) + "|"]
    for entry in summary.values():
        paper = entry.get("paper") or {}
        cells = [_fmt(entry[k]) + (f" [{paper[k]:.1f}]" if k in paper else "") for k, _ in COLUMNS]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    gain_rows = [(e["label"], e["gains"]) for e in summary.values() if e["gains"]]
    if gain_rows:
        lines += ["", "Paired gains (per-seed differences: mean ± std, and on how many seeds > 0), in "
                  "mAP points.", "",
                  "| Model | vs SSD: @0.5 | vs SSD: @[.5:.95] | step: vs | step: @0.5 | step: @[.5:.95] |",
                  "|---|---|---|---|---|---|"]
        for label, gains in gain_rows:
            ssd = gains.get("vs_ssd") or {}
            prev = gains.get("vs_previous") or {}
            prev_label = summary.get(prev.get("row"), {}).get("label", "–") if prev else "–"
            lines.append(f"| {label} | {_fmt(ssd.get('AP50'), True)} | {_fmt(ssd.get('AP'), True)} | "
                         f"{prev_label} | {_fmt(prev.get('AP50'), True)} | {_fmt(prev.get('AP'), True)} |")
    present = [(k, t, scale) for k, t, scale in aux_columns
               if any(k in e["auxiliary"] for e in summary.values())]
    if present:
        lines += ["", "Auxiliary tasks on the test split (mean ± std over seeds).", "",
                  "| Model | " + " | ".join(t for _, t, _ in present) + " | train s / run |",
                  "|---" * (len(present) + 2) + "|"]
        for entry in summary.values():
            cells = [_fmt(entry["auxiliary"].get(k), scale=scale, digits=None) for k, _, scale in present]
            lines.append(f"| {entry['label']} | " + " | ".join(cells) + f" | {_fmt(entry['train_seconds'])} |")
    return "\n".join(lines) + "\n"


def plot(summary: Dict[str, Any], path: str) -> None:
    """Bars with error bars (std over seeds) for the primary task's figures."""
    labels = [e["label"] for e in summary.values()]
    fig = viz.figure(max(6.0, 1.6 * len(labels)), 3.6)
    ax = fig.subplots()
    width = 0.8 / len(COLUMNS)
    for i, (key, title) in enumerate(COLUMNS):
        means = [e[key]["mean"] for e in summary.values()]
        stds = [0.0 if not math.isfinite(e[key]["std"]) else e[key]["std"] for e in summary.values()]
        xs = [j + (i - (len(COLUMNS) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=title)
    ax.set_xticks(range(len(labels)), labels, rotation=12)
    ax.set_ylabel("mAP (%) on the test split")
    ax.legend(fontsize=8)
    ax.set_title("Ablation (mean ± std over seeds)")
    viz.save_figure(fig, path, dpi=120)


def aux_columns(configs: Sequence[Mapping[str, Any]]) -> List[Tuple[str, str, float]]:
    """The auxiliary columns of the table: each task's ``headline_metrics``
    (:class:`mtlkit.task.Task`), for the tasks of the given configs, in order."""
    columns: List[Tuple[str, str, float]] = []
    for config in configs:
        for name, cls in task_classes(config):
            if getattr(cls, "role", None) == PRIMARY:
                continue
            for metric, (title, scale) in getattr(cls, "headline_metrics", {}).items():
                column = (f"{name}/{metric}", f"{name} {title}", float(scale))
                if column not in columns:
                    columns.append(column)
    return columns


def write_outputs(out: str, records: List[Dict[str, Any]], rows: Sequence[Row],
                  info: Dict[str, Any], columns: Sequence[Tuple[str, str, float]] = ()) -> str:
    """Write ablation.json, ablation.md and ablation.png to ``out``; returns the markdown."""
    summary = summarise(records, rows)
    with atomic_write(os.path.join(out, "ablation.json"), "w", encoding="utf-8") as handle:
        json.dump({"info": info, "runs": records, "summary": summary}, handle, indent=2)
    text = format_markdown(summary, info, columns)
    with atomic_write(os.path.join(out, "ablation.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    plot(summary, os.path.join(out, "ablation.png"))
    return text
