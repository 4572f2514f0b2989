"""Several ablations as one table:
``python -m mtlkit.engine.ablation.combine DIR [DIR ...] --out OUT``.

Each ``DIR`` holds the ``ablation.json`` of an ``mtlkit ablate`` run,
typically one per data seed (the same rows and training seeds). Their runs
are pooled and summarised exactly as one ablation is
(:func:`.report.summarise`): each row's mean ± std over every (data seed,
training seed) run, paired gains over SSD paired by (training seed, data
seed), a row trained with measured inputs followed by its runs without the
sensor. ``OUT`` gets ``ablation.json`` / ``ablation.md`` / ``ablation.png``
in the format of one ablation, the markdown with two more tables: the
primary figure per data seed, and every pair's gain over SSD (the smallest
one is what "on every seed" targets are about).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Sequence, Tuple

from mtlkit.errors import DataError, run_guarded
from mtlkit.registry import RegistryError, get_registry
from mtlkit.utils.io import atomic_write

from .plan import Row
from .report import (COLUMNS, WITHOUT_SENSOR, _fmt, format_markdown, mean_std, paired_gain, plot, summarise,
                     with_sensorless_rows)

ABLATION_FILE = "ablation.json"


def read_ablation(folder: str) -> Dict[str, Any]:
    """``folder/ablation.json`` (its ``info``, ``runs``, ``summary``), or a
    :class:`DataError` naming the file."""
    path = os.path.join(folder, ABLATION_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: not found (a folder written by mtlkit ablate, once it finished)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not isinstance(data.get("summary"), dict):
        raise DataError(f"{path}: expected an ablation.json with 'runs' and 'summary'")
    return data


def pool(ablations: Sequence[Dict[str, Any]], names: Sequence[str]) -> Tuple[List[Dict[str, Any]], List[Row]]:
    """The runs of every ablation (each (row, seed, data seed) once) and the
    rows in the order of the first ablation that has them (labels from its summary)."""
    records: List[Dict[str, Any]] = []
    seen: Dict[Tuple[Any, Any, Any], str] = {}
    rows: Dict[str, Row] = {}
    for data, name in zip(ablations, names):
        for stem, entry in data["summary"].items():
            if not stem.endswith(WITHOUT_SENSOR) and stem not in rows:
                rows[stem] = Row(stem, entry.get("label", stem), "")
        for record in data["runs"]:
            key = (record["model"], record["seed"], record["data_seed"])
            if key in seen:
                raise DataError(f"{name}: run {key[0]} seed {key[1]} data seed {key[2]} is also in "
                                f"{seen[key]}: combine ablations of different data seeds")
            seen[key] = name
            records.append(record)
    return records, list(rows.values())


def headline_columns(records: Sequence[Dict[str, Any]]) -> List[Tuple[str, str, float]]:
    """The auxiliary columns (:func:`.report.aux_columns`) of the tasks whose
    figures the records hold, from their registered classes."""
    columns: List[Tuple[str, str, float]] = []
    tasks: List[str] = []
    for record in records:
        for key in record:
            task = key.split("/", 1)[0] if "/" in key else None
            if task is not None and task not in tasks:
                tasks.append(task)
    registry = get_registry()
    for name in tasks:
        try:
            cls = registry.get("task", name)
        except RegistryError:
            continue
        for metric, (title, scale) in getattr(cls, "headline_metrics", {}).items():
            columns.append((f"{name}/{metric}", f"{name} {title}", float(scale)))
    return columns


def pair_gains(records: Sequence[Dict[str, Any]], row: str, base: str, key: str) -> Dict[Tuple[int, int], float]:
    """(training seed, data seed) -> ``row`` − ``base`` in ``key``, in points."""
    by_pair = {(r["seed"], r["data_seed"]): r for r in records if r["model"] == base}
    return {(r["seed"], r["data_seed"]): 100.0 * (r[key] - by_pair[(r["seed"], r["data_seed"])][key])
            for r in records if r["model"] == row and (r["seed"], r["data_seed"]) in by_pair}


def extra_tables(records: Sequence[Dict[str, Any]], rows: Sequence[Row], key: str = "AP",
                 versus: Sequence[Tuple[str, str]] = ()) -> str:
    """Markdown: ``key`` per data seed (mean ± std over training seeds),
    every (training seed, data seed) pair's gain over SSD in ``key``, and the
    paired gains of each (row, reference row) of ``versus`` (stems; a row
    without its sensor is ``STEM/without_sensor``)."""
    records, rows = with_sensorless_rows(records, rows)
    title = dict(COLUMNS)[key]
    data_seeds = sorted({r["data_seed"] for r in records}, key=str)
    lines = ["", f"{title} per data seed (mean ± std over training seeds, in %).", "",
             "| Model | " + " | ".join(f"data seed {d}" for d in data_seeds) + " |",
             "|---" * (len(data_seeds) + 1) + "|"]
    for row in rows:
        cells = []
        for d in data_seeds:
            stat = mean_std([100.0 * r[key] for r in records if r["model"] == row.stem and r["data_seed"] == d])
            cells.append(f"{stat['mean']:.1f} ± {stat['std']:.1f}" if stat["n"] else "–")
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    if any(row.stem == "ssd" for row in rows):
        pairs = sorted({(r["seed"], r["data_seed"]) for r in records if r["model"] == "ssd"}, key=str)
        lines += ["", f"Gain over SSD in {title} of every (training seed, data seed) pair, in points, "
                  "and the smallest.", "",
                  "| Model | " + " | ".join(f"s{s}/d{d}" for s, d in pairs) + " | min |",
                  "|---" * (len(pairs) + 2) + "|"]
        for row in rows:
            if row.stem == "ssd":
                continue
            gains = pair_gains(records, row.stem, "ssd", key)
            cells = [f"{gains[p]:+.1f}" if p in gains else "–" for p in pairs]
            low = f"{min(gains.values()):+.1f}" if gains else "–"
            lines.append(f"| {row.label} | " + " | ".join(cells) + f" | {low} |")
    labels = {row.stem: row.label for row in rows}
    missing = [stem for pair in versus for stem in pair if stem not in labels]
    if missing:
        raise DataError(f"--versus: no row '{missing[0]}' in the ablations (rows: {', '.join(labels)})")
    if versus:
        lines += ["", "Paired gains of one row over another (per (training seed, data seed) pair: mean ± std, "
                  "on how many pairs > 0; and the smallest), in points.", "",
                  "| Row | over | " + " | ".join(t for _, t in COLUMNS) + f" | min, {title} |",
                  "|---" * (len(COLUMNS) + 3) + "|"]
        for stem, base in versus:
            cells = [_fmt(paired_gain(records, stem, base, k), signed=True) for k, _ in COLUMNS]
            gains = pair_gains(records, stem, base, key)
            low = f"{min(gains.values()):+.1f}" if gains else "–"
            lines.append(f"| {labels[stem]} | {labels[base]} | " + " | ".join(cells) + f" | {low} |")
    return "\n".join(lines) + "\n"


def combine(folders: Sequence[str], out: str, versus: Sequence[Tuple[str, str]] = ()) -> str:
    """Pool the ablations of ``folders`` into ``out`` (see the module
    docstring); returns the markdown written."""
    if not folders:
        raise DataError("combine: no ablation folder given")
    ablations = [read_ablation(f) for f in folders]
    records, rows = pool(ablations, [os.path.join(f, ABLATION_FILE) for f in folders])
    info: Dict[str, Any] = {
        "title": ", ".join(sorted({str(a.get("info", {}).get("title", "")) for a in ablations})),
        "data seeds": ", ".join(str(a.get("info", {}).get("data seed", "?")) for a in ablations),
        "seeds": ", ".join(sorted({str(a.get("info", {}).get("seeds", "?")) for a in ablations})),
        "iterations": ", ".join(sorted({str(a.get("info", {}).get("iterations", "?")) for a in ablations})),
        "machine": ", ".join(sorted({str(a.get("info", {}).get("machine", "?")) for a in ablations})),
        "wall per ablation": ", ".join(str(a.get("info", {}).get("wall (this invocation)", "?")) for a in ablations),
        "combined from": ", ".join(folders),
    }
    summary = summarise(records, rows)
    text = format_markdown(summary, info, headline_columns(records)) + extra_tables(records, rows, versus=versus)
    os.makedirs(out, exist_ok=True)
    with atomic_write(os.path.join(out, ABLATION_FILE), "w", encoding="utf-8") as handle:
        json.dump({"info": info, "runs": records, "summary": summary}, handle, indent=2)
    with atomic_write(os.path.join(out, "ablation.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    plot(summary, os.path.join(out, "ablation.png"))
    return text


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlkit.engine.ablation.combine",
                                     description="pool the runs of several mtlkit ablate folders "
                                                 "(e.g. one per data seed) into one table")
    parser.add_argument("folders", nargs="+", help="folders holding an ablation.json")
    parser.add_argument("--out", required=True, help="where the combined ablation.{json,md,png} go")
    parser.add_argument("--versus", action="append", default=[], metavar="ROW:REFERENCE",
                        help="also the paired gains of ROW over REFERENCE (row stems; a row without its "
                             "sensor is STEM/without_sensor), e.g. rock_measured:ssd_rgbd; repeatable")
    args = parser.parse_args(argv)
    versus = []
    for spec in args.versus:
        row, sep, base = spec.partition(":")
        if not sep or not row or not base:
            raise DataError(f"--versus {spec}: expected ROW:REFERENCE, e.g. rock_measured:ssd_rgbd")
        versus.append((row, base))
    if any(os.path.abspath(args.out) == os.path.abspath(f) for f in args.folders):
        raise DataError(f"--out {args.out} is one of the folders combined: its ablation.json would be replaced")
    print(combine(args.folders, args.out, versus))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_guarded(lambda: main(sys.argv[1:])))
