"""Measure a domain shift: trained runs scored on the source domain and on
target domains, as they are and after AdaBN.

    python -m mtlkit.research.shift RUN_DIR [RUN_DIR ...] \\
        --target configs/synthetic/targets/dusk.yaml --target configs/synthetic/targets/showroom.yaml \\
        --data-config configs/synthetic/rock.yaml --data-seed 0 --split test --adabn --out runs/shift

``RUN_DIR`` is a training run (``config.yaml`` + ``last.pt``: ``mtlkit train``
or a run of ``mtlkit ablate``). The source data are the ``data`` section of
``--data-config`` with every synthetic split's seed set to ``--data-seed``;
each target is that section with a target file's overlay on it
(:mod:`.targets`: its seeds offset by the data seed). Every synthetic split is
rendered once into ``--data-dir`` (default ``OUT/data``) and read packed.

With ``--rooms``, each target's rooms are also scored in the source's look
(domain ``NAME/source-look``): the paired reference that separates the
look's effect from that of drawing other rooms.

For every run and domain: ``none`` (the model as trained) and, with
``--adabn``, ``adabn`` (BatchNorm statistics re-estimated on the domain's
*train* images, unlabelled: :func:`.adabn.adabn`), scored on ``--split``.
Writes ``OUT/shift.json`` (``{"info", "rows": [{run, model, seed,
data_seed, domain, split, method, AP, AP50, AP75, <task>/<metric>...,
eval_seconds, adapt_seconds, adapt_images}]}``, AP figures as fractions) and
``OUT/shift.md`` (mean ± std over training seeds, each domain's paired drop
from the source, AdaBN's paired gain). A finished (run, domain, method) is
stored under ``OUT/results/`` and re-used when the command is run again with
the same checkpoint and data.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from collections import defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from torch.utils.data import DataLoader

from mtlkit.adaptation.adabn import adabn
from mtlkit.adaptation.hooks import flat_scores
from mtlkit.adaptation.targets import load_target, target_data, with_data_seed
from mtlkit.config import load_config
from mtlkit.data import build_split, collate
from mtlkit.data.synthetic import SyntheticRooms
from mtlkit.data.synthetic.writer import write_set
from mtlkit.engine.evaluator import build_eval_model, evaluate_model
from mtlkit.engine.runtime import resolve_config, select_device
from mtlkit.errors import ConfigError, run_guarded
from mtlkit.research.summary import mean_std, paired
from mtlkit.utils.io import atomic_write

METHODS = ("none", "adabn")


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: suffix of a target's rooms rendered in the source's look (``--rooms``)
SOURCE_LOOK = "/source-look"
#: the dataset options that make a synthetic domain's look (dropped for its source-look reference)
LOOK_OPTIONS = ("domain", "appearance")


def domains(data_config: str, targets: Sequence[str], data_seed: int,
            rooms: bool = False) -> Dict[str, Dict[str, Any]]:
    """Domain name -> data section: ``source`` then one per target file (named
    by its stem); with ``rooms``, after each target ``NAME/source-look``: the
    same rooms (its seeds) in the source's look, the paired reference that
    separates the look's effect from the sampling of other rooms."""
    data = load_config(data_config, validate=False).get("data")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{data_config}: no data section to take the source domain from")
    source = with_data_seed(data, data_seed)
    out = {"source": source}
    for path in targets:
        name = os.path.splitext(os.path.basename(path))[0]
        if name in out:
            raise ConfigError(f"--target {path}: a domain named {name!r} is already given")
        out[name] = target_data(source, load_target(path), data_seed)
        if rooms:
            out[name + SOURCE_LOOK] = {k: ({o: v for o, v in spec.items() if o not in LOOK_OPTIONS}
                                           if k in ("train", "val", "test") and isinstance(spec, Mapping) else spec)
                                       for k, spec in out[name].items()}
    return out


def rendered(spec: Mapping[str, Any], data_dir: str, workers: int, progress: bool) -> Dict[str, Any]:
    """A synthetic split rendered once into ``data_dir`` (packed) -> the spec
    reading it; other specs as they are."""
    if spec.get("type", spec.get("name")) != "synthetic" or spec.get("root") or spec.get("cache_dir"):
        return dict(spec)
    options = {k: v for k, v in spec.items() if k not in ("type", "name", "label_subset")}
    dataset = SyntheticRooms(**options)
    folder = os.path.join(data_dir, f"{dataset.split}-seed{dataset.seed}-{_digest(dataset.config)}")
    write_set(folder, len(dataset), dataset.seed, dataset.split, dataset.options, workers=workers,
              progress=progress, preview=True, pack=True)
    return {"type": "synthetic", "root": os.path.abspath(folder), "size": len(dataset)}


def _dataset(data: Mapping[str, Any], spec: Mapping[str, Any]):
    section = {k: v for k, v in data.items() if k not in ("train", "val", "test")}
    section["test"] = dict(spec)
    return build_split(section, "test", train=False, seed=0)


def _batches(dataset, batch_size: int, device, channels_last: bool):
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
        images = batch["image"].to(device)
        yield images.contiguous(memory_format=torch.channels_last) if channels_last else images


def score_run(run_dir: str, doms: Mapping[str, Mapping[str, Any]], split: str, methods: Sequence[str],
              out: str, data_seeds: Mapping[str, Any], device_name: Optional[str] = None,
              log=print) -> List[Dict[str, Any]]:
    """Rows of one run: every (domain, method), scored on ``split`` (see the
    module docstring); ``data_seeds``: domain -> the data seed of its split, for the rows."""
    config_path, checkpoint = os.path.join(run_dir, "config.yaml"), os.path.join(run_dir, "last.pt")
    for path in (config_path, checkpoint):
        if not os.path.isfile(path):
            raise ConfigError(f"{run_dir}: not a training run ({os.path.basename(path)} is missing)")
    cfg = resolve_config(load_config(config_path))
    device = select_device(device_name or cfg["train"]["device"])
    channels_last = bool(cfg["train"].get("channels_last"))
    stat = os.stat(checkpoint)
    base, meta = build_eval_model(cfg, checkpoint, device)
    primary = base.primary
    batch_size = int(cfg["data"].get("batch_size", 8))
    rows = []
    for domain, data in doms.items():
        for method in (methods[:1] if domain.endswith(SOURCE_LOOK) else methods):
            key = _digest({"checkpoint": os.path.abspath(checkpoint), "size": stat.st_size, "mtime": stat.st_mtime_ns,
                           "eval": data[split], "adapt": data.get("train") if method != "none" else None,
                           "method": method, "split": split, "image_size": data.get("image_size")})
            cached = os.path.join(out, "results", f"{key}.json")
            if os.path.exists(cached):
                with open(cached) as handle:
                    rows.append(json.load(handle))
                continue
            model, adapt_seconds, adapt_images = base, 0.0, 0
            if method == "adabn":
                model = copy.deepcopy(base)
                start = time.perf_counter()
                adapt_images = adabn(model, _batches(_dataset(data, data["train"]), batch_size, device,
                                                     channels_last))
                adapt_seconds = time.perf_counter() - start
            start = time.perf_counter()
            values, _, _ = evaluate_model(model, _dataset(data, data[split]), batch_size, collate, device)
            row = {"run": run_dir, "model": cfg.get("name") or os.path.basename(os.path.dirname(run_dir)),
                   "seed": int(cfg["train"]["seed"]), "data_seed": data_seeds.get(domain), "domain": domain,
                   "split": split, "method": method, **flat_scores(values, primary),
                   "eval_seconds": round(time.perf_counter() - start, 2),
                   "adapt_seconds": round(adapt_seconds, 2), "adapt_images": adapt_images,
                   "iteration": meta.get("iteration")}
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            with atomic_write(cached) as handle:
                json.dump(row, handle, indent=1)
            log(f"{run_dir} {domain:>10} {method:>6}: AP50 {100 * row.get('AP50', float('nan')):5.1f} "
                f"AP {100 * row.get('AP', float('nan')):5.1f} ({row['eval_seconds']:.0f} s eval, "
                f"{adapt_seconds:.0f} s adapt)")
            rows.append(row)
    return rows


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: per model, domain and method, mAP@0.5 and mAP@[.5:.95] (mean ±
    std over seeds), the paired change from the same model on the source (as
    trained), from the same rooms in the source look (when scored: ``--rooms``)
    and AdaBN's paired gain over no adaptation on the same domain; "(k/n)":
    positive on k of n seeds."""
    by = defaultdict(dict)  # (model, domain, method) -> seed -> row
    for r in rows:
        by[(r["model"], r["domain"], r["method"])][r["seed"]] = r
    lines = ["| model | domain | method | seeds | mAP@0.5 | mAP@[.5:.95] | vs source, @0.5 | vs source, @[.5:.95] "
             "| vs its rooms in the source look, @0.5 | @[.5:.95] | AdaBN gain, @0.5 | AdaBN gain, @[.5:.95] |",
             "|---" * 12 + "|"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    doms = list(dict.fromkeys(r["domain"] for r in rows))
    for model in models:
        for domain in doms:
            for method in METHODS:
                cell = by.get((model, domain, method))
                if not cell:
                    continue
                seeds = sorted(cell)
                get = lambda c, k: [c[s][k] for s in seeds]  # noqa: E731
                src = by.get((model, "source", "none"), {})
                vs = ["", ""]
                if domain != "source" and all(s in src for s in seeds):
                    vs = [paired(get(cell, k), [src[s][k] for s in seeds]) for k in ("AP50", "AP")]
                same = ["", ""]
                ref = by.get((model, domain + SOURCE_LOOK, "none"), {})
                if ref and all(s in ref for s in seeds):
                    same = [paired(get(cell, k), [ref[s][k] for s in seeds]) for k in ("AP50", "AP")]
                gain = ["", ""]
                plain = by.get((model, domain, "none"), {})
                if method != "none" and all(s in plain for s in seeds):
                    gain = [paired(get(cell, k), [plain[s][k] for s in seeds]) for k in ("AP50", "AP")]
                lines.append(f"| {model} | {domain} | {method} | {','.join(map(str, seeds))} | "
                             f"{mean_std(get(cell, 'AP50'))} | {mean_std(get(cell, 'AP'))} | "
                             f"{vs[0]} | {vs[1]} | {same[0]} | {same[1]} | {gain[0]} | {gain[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlkit.research.shift", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="training run folders (config.yaml + last.pt)")
    parser.add_argument("--target", action="append", default=[], help="a target file (repeatable)")
    parser.add_argument("--data-config", required=True, help="the config whose data section is the source")
    parser.add_argument("--data-seed", type=int, default=0, help="the source's data seed (default 0)")
    parser.add_argument("--split", default="val", choices=["val", "test"], help="split scored (default val)")
    parser.add_argument("--adabn", action="store_true", help="also score after AdaBN on each domain's train images")
    parser.add_argument("--rooms", action="store_true",
                        help="also score each target's rooms in the source look (NAME/source-look), the "
                             "paired reference of the shift")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--data-dir", help="where splits are rendered (default OUT/data)")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", help="device (default: each run's train.device)")
    args = parser.parse_args(argv)
    return run_guarded(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.data_seed < 0:
        raise ConfigError(f"--data-seed must be >= 0, got {args.data_seed}")
    if args.threads < 1 or args.workers < 1:
        raise ConfigError("--threads and --workers must be >= 1")
    torch.set_num_threads(args.threads)
    methods = METHODS if args.adabn else METHODS[:1]
    doms = domains(args.data_config, args.target, args.data_seed, rooms=args.rooms)
    data_dir = args.data_dir or os.path.join(args.out, "data")
    started = time.perf_counter()
    seeds = {name: data[args.split].get("seed") for name, data in doms.items()
             if isinstance(data.get(args.split), Mapping)}
    for name, data in doms.items():
        adapts = args.adabn and not name.endswith(SOURCE_LOOK)
        for split in dict.fromkeys([args.split, *(["train"] if adapts else [])]):
            if not isinstance(data.get(split), Mapping):
                raise ConfigError(f"{args.data_config}: data.{split} is missing")
            data[split] = rendered(data[split], data_dir, args.workers, progress=sys.stderr.isatty())
    render_seconds = time.perf_counter() - started
    rows = []
    for run in args.runs:
        rows += score_run(run, doms, args.split, methods, args.out, seeds, args.device,
                          log=lambda m: print(m, file=sys.stderr))
    info = {"data_config": args.data_config, "data_seed": args.data_seed, "split": args.split,
            "targets": list(args.target), "rooms": args.rooms, "methods": list(methods),
            "threads": args.threads,
            "render_seconds": round(render_seconds, 1),
            "total_seconds": round(time.perf_counter() - started, 1)}
    os.makedirs(args.out, exist_ok=True)
    with atomic_write(os.path.join(args.out, "shift.json")) as handle:
        json.dump({"info": info, "rows": rows}, handle, indent=1)
    text = table(rows)
    with atomic_write(os.path.join(args.out, "shift.md")) as handle:
        handle.write(f"Split {args.split}, source data seed {args.data_seed}; in %.\n\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
