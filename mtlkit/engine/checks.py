"""Checks done before a run writes anything: the run directory, a resumed
run's config against its checkpoint's, the data's classes against the model's.

Every failure is a :class:`mtlkit.errors.MtlkitError` (``ConfigError`` /
``DataError``) whose one line names the path, key or class at fault.
"""

from __future__ import annotations

import os
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import yaml

from mtlkit.engine.runtime import dataset_attr
from mtlkit.errors import ConfigError, DataError
from mtlkit.options import flatten  # noqa: F401 - also imported from here

#: config keys a resumed run may change: how long it runs, how often it logs /
#: evaluates / checkpoints, how it reports, how fast it loads data, and the
#: evaluation settings. Any other difference is refused (the checkpoint's
#: optimiser, schedule, model and data would not match what config.yaml records).
RESUMABLE_CHANGES: Tuple[str, ...] = (
    "name", "description",
    "train.iters", "train.checkpoint_every", "train.eval_every", "train.eval_at_end",
    "train.log_every", "train.progress", "train.tensorboard", "train.plots", "train.num_threads",
    "train.device",
    "data.num_workers",
    "eval",
)


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES)


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
    """(key, old value, new value) for the keys that differ and may not change on resume."""
    a, b = flatten(old), flatten(new)
    missing = object()
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va == vb or _may_change(key):
            continue
        diffs.append((key, None if va is missing else va, None if vb is missing else vb))
    return diffs


def check_resume_config(ckpt: Mapping[str, Any], cfg: Mapping[str, Any], path: str) -> None:
    """Refuse to resume ``path`` with a config other than the one it was
    trained with (beyond :data:`RESUMABLE_CHANGES`), naming the keys."""
    text = (ckpt.get("meta") or {}).get("config")
    if not isinstance(text, str):
        return  # a checkpoint without its config: nothing to compare
    try:
        old = yaml.safe_load(text)
    except yaml.YAMLError:
        return
    if not isinstance(old, Mapping):
        return
    diffs = config_differences(old, cfg)
    if diffs:
        shown = "; ".join(f"{k}: {va!r} -> {vb!r}" for k, va, vb in diffs[:4])
        more = f" and {len(diffs) - 4} more" if len(diffs) > 4 else ""
        folder = os.path.dirname(os.path.abspath(path))
        raise ConfigError(
            f"--resume: the config differs from the one {path} was trained with: {shown}{more}; "
            f"resume with the run's own {os.path.join(folder, 'config.yaml')} (changing only "
            f"train.iters, the logging / checkpoint / evaluation settings or data.num_workers), "
            f"or start a new run in another --out")


def check_run_data(cfg: Mapping[str, Any], train_set: Any, val_set: Any, batch_size: int,
                   world_size: int = 1) -> None:
    """What the run's data must allow, checked before ``--out`` is written:
    samples in the training split (at least one global batch: a batch larger
    than the split never fills), samples in the validation split, and a
    validation split when ``train.eval_every`` asks for evaluations."""
    split = cfg["eval"]["split"]
    global_batch = batch_size * max(1, int(world_size))
    size = len(train_set)
    if size == 0:
        raise DataError("data.train holds no sample: nothing to train on")
    if size < global_batch:
        per = f" x {world_size} processes" if world_size > 1 else ""
        raise ConfigError(f"data.batch_size is {batch_size}{per} but data.train holds {size} sample(s): a batch "
                          f"never fills; lower data.batch_size to at most {size // max(1, int(world_size)) or 1} "
                          f"or give the split more samples")
    if val_set is not None and len(val_set) == 0:
        raise DataError(f"data.{split} (the split evaluated, eval.split) holds no sample: give it samples or "
                        f"remove it")
    every = int(cfg["train"]["eval_every"])
    if every and val_set is None:
        raise ConfigError(f"train.eval_every is {every} but there is no data.{split} to evaluate on "
                          f"(eval.split is '{split}'): add data.{split}, or set train.eval_every: 0")


def _classes_of(dataset: Any) -> Optional[List[str]]:
    classes = dataset_attr(dataset, "classes")
    return [str(c) for c in classes] if classes is not None else None


def _first_difference(a: Sequence[str], b: Sequence[str], a_name: str, b_name: str, first: int = 1,
                      what: str = "classes") -> str:
    """Where two name lists differ, in words (labels counted from ``first``)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"label {i + first} is '{x}' in the {a_name} and '{y}' in the {b_name}"
    return f"{len(a)} {what} in the {a_name}, {len(b)} in the {b_name}"


def _is_index_names(names: Sequence[str]) -> bool:
    """Names that are only the indices ("0", "1", ...): data labelled by index, without names."""
    return list(names) == [str(i) for i in range(len(names))]


def check_label_names(model: Any, datasets: Sequence[Tuple[str, Any]],
                      checkpoint_names: Optional[Mapping[str, Sequence[str]]] = None) -> None:
    """The label names of the data agree with those of each task that names
    the dataset attribute listing them (:attr:`mtlkit.task.Task.label_names_attr`,
    e.g. the scene task's ``"scenes"``): no more labels than the task's
    ``num_classes``, and label ``i`` the same name in the data as in the task's
    ``names`` option and in the checkpoint (``checkpoint_names``: attribute ->
    the names of the data the checkpoint was trained on). A scene index means
    a name: without this check, index 0 of one set's sorted names becomes
    another set's "bathroom" silently."""
    for task_name, task in (getattr(model, "tasks", None) or {}).items():
        attr = getattr(task, "label_names_attr", None)
        if not attr:
            continue
        options = getattr(task, "options", None) or {}
        where = f"model.tasks.{task_name}"
        number = options.get("num_classes")
        names = options.get("names")
        for split, dataset in datasets:
            data_names = dataset_attr(dataset, attr)
            if data_names is None:
                continue
            data_names = [str(n) for n in data_names]
            if isinstance(number, int) and len(data_names) > number:
                raise ConfigError(f"{where}.num_classes is {number} but the data of split '{split}' has "
                                  f"{len(data_names)} {attr} ({', '.join(data_names[:5])}"
                                  f"{', ...' if len(data_names) > 5 else ''})")
            if _is_index_names(data_names):
                continue  # labelled by index: nothing to compare
            if names is not None:
                model_names = [str(n) for n in names]
                if model_names[:len(data_names)] != data_names:
                    raise ConfigError(
                        f"the {attr} of the data of split '{split}' do not match {where}.names "
                        f"({_first_difference(model_names, data_names, 'model', 'data', first=0, what=attr)}); "
                        f"list them in the model's order in the dataset's '{attr}' option: {model_names}")
            trained = (checkpoint_names or {}).get(attr)
            if trained is not None and not _is_index_names([str(n) for n in trained]) \
                    and [str(n) for n in trained][:len(data_names)] != data_names:
                raise DataError(
                    f"the checkpoint was trained on other {attr} than the data of split '{split}' "
                    f"({_first_difference([str(n) for n in trained], data_names, 'checkpoint', 'data', first=0, what=attr)}); "
                    f"give the dataset the checkpoint's {attr} in that order: {list(trained)}")


def check_classes(model: Any, train_dataset: Any, val_dataset: Any = None,
                  checkpoint_classes: Optional[Sequence[str]] = None,
                  checkpoint_scenes: Optional[Sequence[str]] = None, split: str = "train") -> None:
    """The object classes of the data agree with the primary task's: as many as
    ``num_classes``, the same names in the same order as the task's
    ``class_names`` (when set), the validation split's and the checkpoint's.
    The other tasks' label names (scenes) are checked by :func:`check_label_names`."""
    check_label_names(model, [(split, train_dataset)] + ([("val", val_dataset)] if val_dataset is not None else []),
                      {"scenes": checkpoint_scenes} if checkpoint_scenes is not None else None)
    primary = getattr(model, "primary", None)
    task = getattr(model, "tasks", {}).get(primary) if primary else None
    num_classes = getattr(task, "num_classes", None)
    names = (getattr(task, "options", None) or {}).get("class_names")
    where = f"model.tasks.{primary}"
    datasets = [(split, train_dataset)] + ([("val", val_dataset)] if val_dataset is not None else [])
    seen: Optional[Tuple[str, List[str]]] = None
    for label, dataset in datasets:
        classes = _classes_of(dataset)
        if classes is None:
            continue
        if isinstance(num_classes, int) and len(classes) != num_classes:
            raise ConfigError(f"{where}.num_classes is {num_classes} but the data of split '{label}' has "
                              f"{len(classes)} classes ({', '.join(classes[:5])}"
                              f"{', ...' if len(classes) > 5 else ''}): set num_classes: {len(classes)}")
        if names is not None and [str(n) for n in names] != classes:
            raise ConfigError(f"{where}.class_names do not match the classes of the data of split "
                              f"'{label}' ({_first_difference([str(n) for n in names], classes, 'model', 'data')}); "
                              f"list them in the data's order: {classes}")
        if seen is not None and seen[1] != classes:
            raise DataError(f"the classes of split '{label}' differ from those of split '{seen[0]}' "
                            f"({_first_difference(seen[1], classes, f'split {seen[0]}', f'split {label}')})")
        seen = seen or (label, classes)
        if checkpoint_classes is not None and [str(c) for c in checkpoint_classes] != classes:
            raise DataError(f"the checkpoint was trained on other classes than the data of split "
                            f"'{label}' ({_first_difference([str(c) for c in checkpoint_classes], classes, 'checkpoint', 'data')})")
