"""``mtlkit data synth``: write a synthetic set to disk (resumable).

    mtlkit data synth --out data/synth-train -n 400 --seed 0 --split train --size 240 320 --workers 2

Writes ``OUT/samples/NNNNNN.npz`` (one per sample), ``OUT/dataset.json``
(classes, scenes, generation config, count) and ``OUT/preview.png``. Samples
already on disk are skipped, so an interrupted run continues where it
stopped; rerunning with a larger ``-n`` extends the set. Load it with
``SyntheticRooms(root=OUT)`` (dataset type ``synthetic`` with option ``root``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from typing import Tuple

from tqdm import tqdm

from mtlkit.errors import ConfigError, DataError

from . import storage
from .generate import GENERATOR_VERSION, SPLITS, RenderOptions, generate_sample, make_options
from .objects import CLASSES
from .scenes import SCENES

PREVIEW_COUNT = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("-n", "--num", type=int, required=True, help="number of samples")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--split", default="train", choices=sorted(SPLITS), help="random stream (default train)")
    parser.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"),
                        help="image size (default 240 320)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--no-shadows", action="store_true", help="skip shadow rays")
    parser.add_argument("--kinect-holes", action="store_true", help="simulate Kinect depth holes")
    parser.add_argument("--no-preview", action="store_true", help="do not write preview.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(seed: int, split: str, options: RenderOptions) -> dict:
    return {"seed": seed, "split": split, "generator_version": GENERATOR_VERSION, **options.to_dict()}


def _work(task: Tuple[str, int, str, int, RenderOptions]) -> int:
    out, seed, split, index, options = task
    storage.save_sample(storage.sample_path(out, index), generate_sample(seed, split, index, options))
    return index


def _meta(config: dict, count: int, complete: bool) -> dict:
    return {"format": storage.FORMAT, "version": storage.FORMAT_VERSION, "classes": list(CLASSES),
            "scenes": list(SCENES), "config": config, "count": count, "complete": complete}


def main(args: argparse.Namespace) -> int:
    if args.num < 0:
        raise ConfigError(f"-n must be >= 0, got {args.num}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    options = make_options(tuple(args.size), shadows=not args.no_shadows, kinect_holes=args.kinect_holes)
    new, count = write_set(args.out, args.num, args.seed, args.split, options, args.workers,
                           progress=not args.quiet, preview=not args.no_preview)
    if not args.quiet:
        print(f"wrote {new} new samples ({count} in all) to {args.out}")
    return 0


def write_set(out: str, num: int, seed: int, split: str, options: RenderOptions, workers: int = 1,
              progress: bool = True, preview: bool = True, pack: bool = False) -> Tuple[int, int]:
    """Render samples 0..num-1 of (seed, split) into ``out`` (the layout of
    :mod:`.storage`), skipping those already there; with ``pack`` also stack
    them into ``out/pack/``. Returns (samples rendered now, samples in the set).

    :raises DataError: when ``out`` holds a set of other options.
    """
    config = _config(seed, split, options)
    meta_path = os.path.join(out, "dataset.json")
    existing = 0
    if os.path.exists(meta_path):
        previous = storage.read_dataset_json(out, require_complete=False)
        if previous["config"] != config:
            raise DataError(f"{meta_path} was written with a different configuration "
                            f"({previous['config']}); use another --out folder or the same options")
        existing = int(previous["count"])
    os.makedirs(os.path.join(out, "samples"), exist_ok=True)
    todo = [i for i in range(num) if not os.path.exists(storage.sample_path(out, i))]
    count = max(num, existing)
    storage.write_json(meta_path, _meta(config, count, complete=False))
    tasks = [(out, seed, split, i, options) for i in todo]
    bar = tqdm(total=len(tasks), desc=f"synth {split}", unit="sample", disable=not progress or not tasks)
    if workers == 1 or len(tasks) < 2:
        for task in tasks:
            _work(task)
            bar.update()
    else:
        with multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_work, tasks, chunksize=4):
                bar.update()
    bar.close()
    missing = [i for i in range(count) if not os.path.exists(storage.sample_path(out, i))]
    storage.write_json(meta_path, _meta(config, count, complete=not missing))
    if missing:
        raise DataError(f"{out}: {len(missing)} samples are missing (e.g. {missing[0]}); rerun to finish")
    if preview and count:
        samples = [storage.load_sample(storage.sample_path(out, i)) for i in range(min(PREVIEW_COUNT, count))]
        from .preview import save_preview

        save_preview(os.path.join(out, "preview.png"), samples, CLASSES, SCENES)
    if pack and (tasks or not storage.Pack.exists(out)):
        storage.write_pack(out, count)
    return len(tasks), count


def _standalone(argv=None) -> int:
    """``python -m mtlkit.data.synthetic.cli ...`` (the same as ``mtlkit data synth``)."""
    parser = argparse.ArgumentParser(prog="mtlkit data synth", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(_standalone())
