"""The table of docs/adapt.md: trained source models carried into the target
domains by every method of ``mtlkit adapt``, with the settings of the
auxiliary adaptation and TENT chosen on the tuning data seed.

    python -m mtlkit.research.adapt_table --final-runs RUNS0 --tune-runs RUNS1000 --out DIR --jobs 2

``--final-runs`` / ``--tune-runs``: ``mtlkit ablate`` folders of the source
data seed reported (0) and of the tuning data seed (1000), each with
``ssd/seedK`` and ``rock/seedK`` runs. Phases (every job one
:func:`mtlkit.adaptation.adapt` call; a job whose ``adapt.json`` exists is
re-used, so the command continues where it stopped):

1. tuning (data seed 1000, ROCK of training seed 0, scored on the targets' *val* split): the
   auxiliary adaptation's ``params`` x ``lr`` grid and TENT's ``lr``; the
   setting of the best mean mAP@0.5 gain over models and targets is chosen;
2. reported (data seed 0, test split): for SSD and ROCK, every training seed
   and target: none (zero steps), AdaBN, TENT; for ROCK also the auxiliary
   adaptation offline and online with the chosen setting; the source test
   score (none on the source itself) for the size of the shift.

Writes ``DIR/adapt_table.json`` (every row) and ``DIR/adapt_table.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections import defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from mtlkit.adaptation import adapt
from mtlkit.adaptation.targets import load_target
from mtlkit.errors import run_guarded
from mtlkit.research.summary import mean_std, paired
from mtlkit.utils.io import atomic_write

#: the checkout's configs (this tool runs from a checkout)
_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
CONFIGS = {m: os.path.join(_CONFIGS, "synthetic", f"{m}.yaml") for m in ("ssd", "rock")}
TARGETS = {t: os.path.join(_CONFIGS, "synthetic", "targets", f"{t}.yaml") for t in ("dusk", "showroom")}
#: the tuning grid of the auxiliary adaptation, and of TENT's learning rate
AUX_GRID = [(p, lr) for p in ("all_but_head", "last_stage", "bn") for lr in (1e-4, 1e-3)]
TENT_GRID = [("bn", lr) for lr in (1e-4, 1e-3)]
#: settings of every run: one thread, no loader worker, no TensorBoard
RUN_OVERRIDES = ["train.num_threads=1", "data.num_workers=0", "eval.num_workers=0", "train.tensorboard=false",
                 "train.plots=true"]


def _val_overlay(path: str) -> Dict[str, Any]:
    """A target file's overlay scored on its val split (tuning)."""
    overlay = load_target(path)
    val = dict(overlay.get("val") or overlay["test"])
    return {"train": dict(overlay["train"]), "test": {**val, "split": "val", "size": 300}}


def job_dir(out: str, phase: str, model: str, seed: int, domain: str, tag: str) -> str:
    return os.path.join(out, phase, model, f"seed{seed}", domain, tag)


def run_job(job: Mapping[str, Any]) -> Dict[str, Any]:
    """One adaptation (or a zero-step scoring): its adapt.json record, plus the job's labels."""
    torch.set_num_threads(1)
    path = os.path.join(job["out"], "adapt.json")
    if not os.path.isfile(path):
        if os.path.isdir(job["out"]):
            shutil.rmtree(job["out"])
        adapt(job["config"], job["checkpoint"], job["target"], job["out"], method=job["method"], mode=job["mode"],
              params=job.get("params"), steps=job.get("steps"), lr=job.get("lr"), data_seed=job["data_seed"],
              data_dir=job["data_dir"], progress=False, overrides=RUN_OVERRIDES, before=job.get("before"),
              log=lambda m: None)
    with open(path) as handle:
        record = json.load(handle)
    # the job's labels win over the record's fields of the same name (the record's
    # ``seed`` is the adaptation's data-order seed, not the training seed)
    labels = {k: job[k] for k in ("phase", "model", "seed", "domain", "tag")}
    print(f"{labels['phase']:>5} {labels['model']:>4} seed{labels['seed']} {labels['domain']:>8} "
          f"{labels['tag']:<26} AP50 {100 * record['before'].get('AP50', float('nan')):5.1f} -> "
          f"{100 * record['after'].get('AP50', float('nan')):5.1f} ({record['adapt_seconds']:.0f} s)", flush=True)
    return {**record, "order_seed": record.get("seed"), **labels}


def _pool_map(jobs: List[Dict[str, Any]], workers: int) -> List[Dict[str, Any]]:
    if workers == 1 or len(jobs) < 2:
        return [run_job(j) for j in jobs]
    # no maxtasksperchild: the SSD phase of the first table run hung with it (a worker replaced
    # mid-map; cause not confirmed) and a worker keeps little between jobs
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(run_job, jobs, chunksize=1)


def _base(out: str, phase: str, model: str, seed: int, domain: str, runs: str, target: Any, data_seed: int,
          data_dir: str) -> Dict[str, Any]:
    return {"phase": phase, "model": model, "seed": seed, "domain": domain, "config": CONFIGS[model],
            "checkpoint": os.path.join(runs, model, f"seed{seed}", "last.pt"), "target": target,
            "data_seed": data_seed, "data_dir": data_dir, "mode": "offline"}


def _tag(method: str, mode: str, params: Optional[str], lr: Optional[float]) -> str:
    if method == "adabn":
        return "adabn"
    return f"{method}-{mode}-{params}-lr{lr:g}"


def plan(out: str, phase: str, models: Sequence[str], seeds: Sequence[int], domains: Mapping[str, Any],
         runs: str, data_seed: int, data_dir: str, methods: Sequence[Tuple[str, str, Optional[str], Optional[float]]],
         befores: Mapping[Tuple[str, int, str], Mapping[str, float]]) -> Tuple[List[Dict], List[Dict]]:
    """(zero-step jobs: the scores before, adaptation jobs) of a phase."""
    zero, jobs = [], []
    for model in models:
        for seed in seeds:
            for domain, target in domains.items():
                base = _base(out, phase, model, seed, domain, runs, target, data_seed, data_dir)
                zero.append({**base, "tag": "none", "method": "adabn", "steps": 0,
                             "out": job_dir(out, phase, model, seed, domain, "none")})
                if domain == "source":
                    continue
                for method, mode, params, lr in methods:
                    if method == "aux" and model == "ssd":
                        continue
                    tag = _tag(method, mode, params, lr)
                    jobs.append({**base, "tag": tag, "method": method, "mode": mode, "params": params, "lr": lr,
                                 "before": befores.get((model, seed, domain)),
                                 "out": job_dir(out, phase, model, seed, domain, tag)})
    return zero, jobs


def _run_phase(out, phase, models, seeds, domains, runs, data_seed, data_dir, methods, workers):
    zero, _ = plan(out, phase, models, seeds, domains, runs, data_seed, data_dir, methods, {})
    rows = _pool_map(zero, workers)
    befores = {(r["model"], r["seed"], r["domain"]): r["before"] for r in rows}
    _, jobs = plan(out, phase, models, seeds, domains, runs, data_seed, data_dir, methods, befores)
    return rows + _pool_map(jobs, workers)


def collect(out: str, phase: str) -> List[Dict[str, Any]]:
    """The rows of every finished job of ``phase`` under ``out`` (labels from their folders)."""
    rows = []
    base = os.path.join(out, phase)
    for dirpath, _, files in os.walk(base):
        if "adapt.json" not in files:
            continue
        model, seed, domain, tag = os.path.relpath(dirpath, base).split(os.sep)
        with open(os.path.join(dirpath, "adapt.json")) as handle:
            record = json.load(handle)
        rows.append({**record, "order_seed": record.get("seed"), "phase": phase, "model": model,
                     "seed": int(seed[4:]), "domain": domain, "tag": tag})
    return rows


def choose(rows: Sequence[Mapping[str, Any]], method: str) -> Tuple[str, float, Dict[str, float]]:
    """The (params, lr) of ``method`` with the best mean AP50 gain over the tuning rows."""
    gains = defaultdict(list)
    for r in rows:
        if r["method"] == method:
            gains[(r["params"], r["lr"])].append(r["after"]["AP50"] - r["before"]["AP50"])
    means = {f"{p} lr {lr:g}": float(np.mean(g)) for (p, lr), g in gains.items()}
    (params, lr), _ = max(gains.items(), key=lambda kv: np.mean(kv[1]))
    return params, lr, means


LABELS = {"none": "none", "adabn": "AdaBN", "tent": "TENT", "aux-offline": "aux, offline", "aux-online": "aux, online"}


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: per model, target and method, mAP@0.5 and mAP@[.5:.95] after
    adaptation (mean ± std over training seeds), the paired gain over none, the
    share of the shift recovered (gain / (source - none), mean of the seeds'
    sums), AdaBN's paired difference, and the auxiliary metrics' change
    (depth abs-rel, normals mean angle) for the TTT++ check."""
    by = defaultdict(dict)
    for r in rows:
        key = "none" if r["tag"] == "none" else (r["method"] if r["method"] != "aux" else f"aux-{r['mode']}")
        by[(r["model"], r["domain"], key)][r["seed"]] = r
    lines = ["| model | target | method | mAP@0.5 | mAP@[.5:.95] | gain @0.5 (k/n > 0) | gain @[.5:.95] "
             "| shift recovered @0.5 | vs AdaBN @0.5 | depth abs-rel | normals mean ° |",
             "|---" * 11 + "|"]
    for model in ("ssd", "rock"):
        src = by.get((model, "source", "none"), {})
        if src:
            seeds = sorted(src)
            lines.append(f"| {model.upper()} | source | none | {mean_std([src[s]['after']['AP50'] for s in seeds])} | "
                         f"{mean_std([src[s]['after']['AP'] for s in seeds])} | | | | | | |")
        for domain in ("dusk", "showroom"):
            none = by.get((model, domain, "none"), {})
            if not none:
                continue
            seeds = sorted(none)
            for method in ("none", "adabn", "tent", "aux-offline", "aux-online"):
                cell = by.get((model, domain, method))
                if not cell or sorted(cell) != seeds:
                    continue
                after = lambda k: [cell[s]["after"][k] for s in seeds]  # noqa: E731
                plain = lambda k: [none[s]["after"][k] for s in seeds]  # noqa: E731
                gain = gain_ap = rec = vs = ""
                if method != "none":
                    gain, gain_ap = paired(after("AP50"), plain("AP50")), paired(after("AP"), plain("AP"))
                    if src:
                        lost = sum(src[s]["after"]["AP50"] - none[s]["after"]["AP50"] for s in seeds)
                        won = sum(cell[s]["after"]["AP50"] - none[s]["after"]["AP50"] for s in seeds)
                        rec = f"{100 * won / lost:.0f} %" if lost > 0 else ""
                    ada = by.get((model, domain, "adabn"))
                    if method != "adabn" and ada and sorted(ada) == seeds:
                        vs = paired(after("AP50"), [ada[s]["after"]["AP50"] for s in seeds])
                aux = []
                for key, fmt in (("depth/abs_rel", "{:.3f}"), ("normals/mean", "{:.1f}")):
                    vals = [cell[s]["after"].get(key) for s in seeds]
                    aux.append(fmt.format(float(np.mean(vals))) if all(v is not None for v in vals) else "")
                lines.append(f"| {model.upper()} | {domain} | {LABELS[method]} | {mean_std(after('AP50'))} | "
                             f"{mean_std(after('AP'))} | {gain} | {gain_ap} | {rec} | {vs} | {aux[0]} | {aux[1]} |")
    return "\n".join(lines) + "\n"


def ttt_check(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: for every gradient adaptation (aux, TENT), per seed, the
    objective at its first and last iteration, the auxiliary metrics on the
    target test images before and after, and the mAP@0.5 gain; "TTT++
    failure" where the objective was met (aux: depth abs-rel and normals mean
    angle on the test images both improved; TENT: the entropy fell) while
    mAP@0.5 fell."""
    plain = {(r["model"], r["domain"], r["seed"]): r["after"] for r in rows if r["tag"] == "none"}
    lines = ["| model | target | method | seed | objective first → last | depth abs-rel before → after "
             "| normals mean ° before → after | mAP@0.5 gain | TTT++ failure |", "|---" * 9 + "|"]
    for r in sorted(rows, key=lambda r: (r["model"], r["domain"], r["tag"], r["seed"])):
        if r["method"] not in ("aux", "tent") or r["tag"] == "none":
            continue
        first = sum((r["objective"].get("first") or {}).values())
        last = sum((r["objective"].get("last") or {}).values())
        b, a = plain.get((r["model"], r["domain"], r["seed"]), r["before"]), r["after"]
        gain = 100 * (a["AP50"] - b["AP50"])
        aux_better = (a.get("depth/abs_rel", 0) < b.get("depth/abs_rel", 0)
                      and a.get("normals/mean", 0) < b.get("normals/mean", 0))
        # aux: its tasks' test metrics improved (the loss fell where it is scored) while detection fell;
        # TENT: its objective fell over the run while detection fell
        improved = aux_better if r["method"] == "aux" else last < first
        failure = "yes" if improved and gain < 0 else "no"
        method = r["method"] if r["method"] != "aux" else f"aux, {r['mode']}"
        lines.append(f"| {r['model'].upper()} | {r['domain']} | {method} | {r['seed']} | {first:.3f} → {last:.3f} | "
                     f"{b.get('depth/abs_rel', float('nan')):.3f} → {a.get('depth/abs_rel', float('nan')):.3f} | "
                     f"{b.get('normals/mean', float('nan')):.1f} → {a.get('normals/mean', float('nan')):.1f} | "
                     f"{gain:+.1f} | {failure} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlkit.research.adapt_table", description=__doc__.split("\n")[0])
    parser.add_argument("--final-runs", required=True, help="mtlkit ablate folder of data seed 0 (ssd/, rock/)")
    parser.add_argument("--tune-runs", required=True, help="mtlkit ablate folder of the tuning data seed 1000")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds reported")
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=[0], help="training seeds for tuning (default 0)")
    parser.add_argument("--data-dir", required=True, help="where the target splits are rendered once")
    parser.add_argument("--out", required=True)
    parser.add_argument("--jobs", type=int, default=2, help="processes (one thread each; default 2)")
    parser.add_argument("--table-only", action="store_true",
                        help="only write the table of the finished jobs found in --out (a partial run)")
    args = parser.parse_args(argv)
    if args.table_only:
        rows = collect(args.out, "final")
        text = table(rows) + "\n" + ttt_check(rows)
        with atomic_write(os.path.join(args.out, "adapt_table.partial.md")) as handle:
            handle.write(text)
        print(text)
        return 0
    # SIGTERM (a deadline's timeout) ends the pool's workers too: they must not outlive the lock
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run_guarded(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    tune_domains = {name: _val_overlay(path) for name, path in TARGETS.items()}
    tuned = _run_phase(args.out, "tune", ["rock"], args.tune_seeds, tune_domains, args.tune_runs, 1000,
                       args.data_dir, [("aux", "offline", p, lr) for p, lr in AUX_GRID]
                       + [("tent", "offline", p, lr) for p, lr in TENT_GRID], args.jobs)
    aux_params, aux_lr, aux_means = choose(tuned, "aux")
    _, tent_lr, tent_means = choose(tuned, "tent")
    print(f"chosen: aux {aux_params} lr {aux_lr:g} ({aux_means}); tent lr {tent_lr:g} ({tent_means})", flush=True)
    tune_seconds = time.perf_counter() - started
    domains = {"source": "{}", **TARGETS}
    methods = [("adabn", "offline", None, None), ("aux", "offline", aux_params, aux_lr),
               ("aux", "online", aux_params, aux_lr), ("tent", "offline", "bn", tent_lr)]
    final = []
    for model in ("rock", "ssd"):  # ROCK first: its rows are the question
        final += _run_phase(args.out, "final", [model], args.seeds, domains, args.final_runs, 0,
                            args.data_dir, methods, args.jobs)
    info = {"chosen": {"aux": {"params": aux_params, "lr": aux_lr, "tuning_gains_AP50": aux_means},
                       "tent": {"params": "bn", "lr": tent_lr, "tuning_gains_AP50": tent_means}},
            "tune_seconds": round(tune_seconds, 1), "total_seconds": round(time.perf_counter() - started, 1),
            "jobs": args.jobs}
    os.makedirs(args.out, exist_ok=True)
    with atomic_write(os.path.join(args.out, "adapt_table.json")) as handle:
        json.dump({"info": info, "tune": tuned, "rows": final}, handle, indent=1)
    text = table(final) + "\n" + ttt_check(final)
    with atomic_write(os.path.join(args.out, "adapt_table.md")) as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
