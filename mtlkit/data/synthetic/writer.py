"""Writing a synthetic set to disk: :func:`write_set` (resumable, packed on
request), used by ``mtlkit data synth`` (:mod:`.cli`) and by
:meth:`SyntheticRooms.render_once <mtlkit.data.synthetic.dataset.SyntheticRooms.render_once>`
(a split rendered once for every run of an ablation)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from typing import Tuple

from tqdm import tqdm

from mtlkit.data.render_once import RenderOnce
from mtlkit.errors import DataError

from . import storage
from .generate import GENERATOR_VERSION, RenderOptions, generate_sample
from .objects import CLASSES
from .preview import save_preview
from .scenes import SCENES

PREVIEW_COUNT = 8


def _config(seed: int, split: str, options: RenderOptions) -> dict:
    return {"seed": seed, "split": split, "generator_version": GENERATOR_VERSION, **options.to_dict()}


def _work(task: Tuple[str, int, str, int, RenderOptions]) -> int:
    out, seed, split, index, options = task
    storage.save_sample(storage.sample_path(out, index), generate_sample(seed, split, index, options))
    return index


def _meta(config: dict, count: int, complete: bool) -> dict:
    return {"format": storage.FORMAT, "version": storage.FORMAT_VERSION, "classes": list(CLASSES),
            "scenes": list(SCENES), "config": config, "count": count, "complete": complete}


#: what a set holds besides its dataset.json (never written over in a folder without one)
WRITTEN_NAMES = ("samples", "preview.png", storage.PACK_DIR)


def _refuse_foreign(out: str) -> None:
    """A folder without dataset.json holding what a set would write (an empty
    ``samples/`` aside: a render killed before its first write) is not a set
    this module wrote: refused, never written over."""
    for name in WRITTEN_NAMES:
        path = os.path.join(out, name)
        if not os.path.lexists(path):
            continue
        if name == "samples" and os.path.isdir(path) and not os.listdir(path):
            continue
        raise DataError(f"--out {out} already holds {name} but no dataset.json: it is not a set "
                        f"'mtlkit data synth' wrote, and would be overwritten; choose another --out")


def write_set(out: str, num: int, seed: int, split: str, options: RenderOptions, workers: int = 1,
              progress: bool = True, preview: bool = True, pack: bool = False) -> Tuple[int, int]:
    """Render samples 0..num-1 of (seed, split) into ``out`` (the layout of
    :mod:`.storage`), skipping those already there; with ``pack`` also stack
    them into ``out/pack/``. Returns (samples rendered now, samples in the set).

    :raises DataError: when ``out`` holds a set of other options, or files
        of a set without its ``dataset.json`` (not a set written here).
    """
    config = _config(seed, split, options)
    meta_path = os.path.join(out, "dataset.json")
    existing = 0
    if os.path.exists(meta_path):
        # a set written here before: its dataset.json says so (or this refuses a foreign one)
        previous = storage.read_dataset_json(out, require_complete=False)
        if previous["config"] != config:
            raise DataError(f"{meta_path} was written with a different configuration "
                            f"({previous['config']}); use another --out folder or the same options")
        existing = int(previous["count"])
    else:
        _refuse_foreign(out)
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

        save_preview(os.path.join(out, "preview.png"), samples, CLASSES, SCENES)
    if pack and (tasks or not storage.Pack.exists(out)):
        storage.write_pack(out, count)
    return len(tasks), count


def render_plan(seed: int, split: str, options: RenderOptions, size: int) -> RenderOnce:
    """Samples 0..size-1 of (seed, split, options) rendered once into a folder
    named by split, seed and a hash of the generation config, packed, and read
    back with ``{root: FOLDER, size: size}``."""
    config = _config(seed, split, options)
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def write(folder: str, count: int, workers: int, progress: bool) -> None:
        write_set(folder, count, seed, split, options, workers=workers, progress=progress,
                  preview=True, pack=True)

    return RenderOnce(key=f"{split}-seed{seed}-{key}", size=int(size), seed=int(seed), write=write,
                      read_options=lambda folder: {"root": folder, "size": int(size)})
