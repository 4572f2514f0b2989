"""``mtlkit adapt``: a trained model carried into a target domain, in the
training loop (:class:`AdaptTrainer`, a :class:`~mtlkit.engine.trainer.Trainer`
running an adaptation step of :mod:`.steps` with the hooks of :mod:`.hooks`).

Modes: ``offline`` adapts on the target's *train* images (unlabelled), then
scores the adapted model on its *test* images; ``online`` streams the test
images once, in order: each batch is adapted on, then predicted with the
weights after that step, never seen again. ``adapt.json`` holds the target
test scores ``before`` and ``after``; ``last.pt`` the adapted model (written
atomically; ``mtlkit eval CONFIG --checkpoint OUT/last.pt`` reads it);
``curves.png`` the objective against the iteration; ``--resume`` continues
a stopped run exactly, as ``mtlkit train`` does.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from mtlkit.data.builders import build_split
from mtlkit.data.render_once import shared_split
from mtlkit.engine import dist
from mtlkit.engine.data import ShardedBatches
from mtlkit.engine.evaluator import build_eval_model
from mtlkit.engine.runtime import run_config
from mtlkit.engine.trainer import RUN_OUTPUTS, Trainer
from mtlkit.errors import ConfigError
from mtlkit.utils.io import check_out_dir
from mtlkit.utils.outdir import check_claim

from .hooks import StreamOnce, TargetScores
from .steps import STEPS, AdaBNStep
from .targets import parse_target, target_data, with_data_seed

METHODS = tuple(STEPS)
#: what an adaptation writes into ``--out`` besides a training run's files
ADAPT_JSON, DATA_DIR = "adapt.json", "data"
MODES = ("offline", "online")
#: the parameters each gradient method moves when ``--params`` is not given
DEFAULT_PARAMS = {"aux": "all_but_head", "tent": "bn"}
#: the learning rate of each gradient method when ``--lr`` is not given
DEFAULT_LR = {"aux": 1e-4, "tent": 1e-4}


class AdaptTrainer(Trainer):
    """The trainer on target data: the datasets given (no validation set);
    online, the test stream in order, each image once."""

    command = "adapt"
    outputs = RUN_OUTPUTS + (ADAPT_JSON, DATA_DIR)

    def __init__(self, *args: Any, online: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.online = online

    def build_datasets(self) -> Tuple[Any, Any]:
        return self._train_dataset, None

    def build_sampler(self, dataset_size: int, batch_size: int) -> ShardedBatches:
        if self.online:
            return StreamOnce(dataset_size, batch_size)
        return super().build_sampler(dataset_size, batch_size)


def check_options(method: str, mode: str, params: Optional[str], steps: Optional[int], lr: Optional[float],
                  batch: Optional[int]) -> None:
    """One line per bad option (:class:`ConfigError`)."""
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if method == "adabn" and params is not None:
        raise ConfigError("--params does not apply to --method adabn: it moves BatchNorm statistics only")
    if method == "adabn" and lr is not None:
        raise ConfigError("--lr does not apply to --method adabn: it takes no gradient step")
    if mode == "online" and steps is not None:
        raise ConfigError("--steps does not apply to --mode online: it takes one step per test batch, "
                          "over the test set once")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ConfigError(f"--steps must be an integer >= 0, got {steps!r}")
    if lr is not None and not (isinstance(lr, (int, float)) and lr > 0 and lr == lr and lr != float("inf")):
        raise ConfigError(f"--lr must be a number > 0, got {lr!r}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ConfigError(f"--batch must be an integer >= 1, got {batch!r}")


def render_target(cfg: Mapping[str, Any], data_dir: str, workers: int, progress: bool) -> Dict[str, Any]:
    """The ``data`` section of a validated config with each generated split
    rendered once into ``data_dir`` (:mod:`mtlkit.data.render_once`) and read
    back from there; other splits as they are."""
    data = copy.deepcopy(dict(cfg["data"]))
    for split in ("train", "test"):
        found = shared_split(data.get(split), data_dir)
        if found is None:
            continue
        found.plan.write(found.folder, found.plan.size, workers, progress)
        data[split] = found.read_spec
    return data


def adapt_config(config: Any, target: Optional[str], *, steps: int, lr: Optional[float], batch: Optional[int],
                 seed: int, data_seed: int, progress: bool, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """The adaptation run's config as a plain dict: the model of ``config``,
    the target's train and test splits as its data (no validation split), and
    a ``train`` section of ``steps`` iterations at a constant ``lr``, no EMA,
    no evaluation of its own, checkpoint at the end."""
    source = copy.deepcopy(dict(run_config(config, overrides)))
    data = source["data"]
    if target is not None:
        overlay = {split: spec for split, spec in parse_target(target).items() if split in ("train", "test")}
        data = target_data(with_data_seed(data, data_seed), overlay, data_seed)
    for split in ("train", "test"):
        if not isinstance(data.get(split), Mapping):
            raise ConfigError(f"the target has no data.{split} split (offline adaptation reads its train "
                              "images, every mode scores its test images)")
    data.pop("val", None)
    if batch is not None:
        data["batch_size"] = int(batch)
    source["data"] = data
    train = source["train"]
    train.update({"iters": int(steps), "seed": int(seed), "accumulate": 1, "eval_every": 0,
                  "eval_at_end": False, "progress": bool(progress)})
    train["ema"] = {**train["ema"], "enabled": False}
    train["schedule"] = {**train["schedule"], "name": "constant", "warmup_iters": 0}
    if lr is not None:
        train["optimizer"] = {**train["optimizer"], "lr": float(lr)}
    return source


def adapt(config: Any, checkpoint: Optional[str], target: Optional[str], out: str, *, method: str = "aux",
          mode: str = "offline", params: Optional[str] = None, steps: Optional[int] = None,
          lr: Optional[float] = None, batch: Optional[int] = None, seed: int = 0, data_seed: int = 0,
          data_dir: Optional[str] = None, workers: int = 1, resume: bool = False, progress: bool = True,
          overrides: Sequence[str] = (), train_dataset: Any = None, test_dataset: Any = None,
          before: Optional[Mapping[str, float]] = None, hooks: Sequence[Any] = (),
          log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Adapt ``checkpoint`` (a model of ``config``) to ``target`` and write
    ``out`` (module docstring); returns ``adapt.json``'s record.

    :param target: a target file or inline YAML (:func:`.targets.parse_target`);
        None: the config's own train / test splits are the target.
    :param method: ``aux`` (the sensor tasks' losses), ``tent`` (entropy of the
        class posteriors) or ``adabn`` (BatchNorm statistics only).
    :param params: what moves (:data:`.params.PARAMS`); default
        :data:`DEFAULT_PARAMS` of the method.
    :param steps: offline iterations (default one pass over the target's
        train images: ``len // batch``); online: one per test batch.
    :param lr: the optimiser's learning rate (default :data:`DEFAULT_LR`);
        the optimiser is the config's ``train.optimizer``, constant rate.
    :param batch: images per iteration (default ``data.batch_size``).
    :param data_seed: the source's data seed the target's seeds are offset by.
    :param data_dir: where generated target splits are rendered once (default ``OUT/data``).
    :param train_dataset, test_dataset: prebuilt target datasets (tests).
    :param hooks: extra trainer hooks (:class:`mtlkit.engine.hooks.HookBase`), run after the adaptation's.
    :param before: the model's target test scores when already known (several
        methods from one checkpoint: scored once); default scored here.
    """
    check_options(method, mode, params, steps, lr, batch)
    if dist.world_size() > 1:
        raise ConfigError("mtlkit adapt runs in one process (the online stream is one ordered pass)")
    params = DEFAULT_PARAMS.get(method) if params is None else params
    lr = DEFAULT_LR.get(method) if lr is None and method != "adabn" else lr
    online = mode == "online"
    plain = adapt_config(config, target, steps=steps or 0, lr=lr, batch=batch, seed=seed,
                         data_seed=data_seed, progress=progress, overrides=overrides)
    cfg = run_config(plain)
    # before anything is rendered into --out: refuse a folder whose files another command wrote
    check_out_dir(out)
    if os.path.isdir(out):
        check_claim(out, AdaptTrainer.outputs, AdaptTrainer.command)
    if train_dataset is None or test_dataset is None:
        plain["data"] = render_target(cfg, data_dir or os.path.join(out, DATA_DIR), workers, progress)
        cfg = run_config(plain)
    test_set = test_dataset if test_dataset is not None else build_split(cfg, "test", train=False, seed=seed)
    if online:
        adapt_set = test_set
    else:
        adapt_set = (train_dataset if train_dataset is not None
                     else build_split(cfg, "train", train=False, seed=seed))
    batch_size = cfg.data_spec.batch_size
    if online:
        iters = -(-len(test_set) // batch_size)
    else:
        iters = steps if steps is not None else len(adapt_set) // batch_size
        if iters == 0 and steps is None:
            raise ConfigError(f"the target's train split has {len(adapt_set)} images, fewer than one batch "
                              f"of {batch_size}")
    plain["train"]["iters"] = int(iters)
    cfg = run_config(plain)
    model, _ = build_eval_model(cfg, checkpoint, torch.device("cpu"))
    step = STEPS[method]() if method == "adabn" else STEPS[method](params, cumulative_stats=online)
    info = {"config": config if isinstance(config, str) else None, "checkpoint": checkpoint,
            "target": target, "method": method, "mode": mode,
            "params": None if isinstance(step, AdaBNStep) else params, "steps": int(iters), "lr": lr,
            "batch": int(batch_size), "seed": int(seed), "data_seed": int(data_seed),
            "target_data": {k: cfg["data"][k] for k in ("train", "test")}}
    hook = TargetScores(test_set, online, info, log=log)
    if before is not None:
        hook.before = dict(before)
    started = time.perf_counter()
    trainer = AdaptTrainer(cfg, out, resume=resume, model=model, train_dataset=adapt_set, step=step,
                           hooks=[hook, *hooks], online=online)
    trainer.run()
    with open(os.path.join(out, ADAPT_JSON)) as handle:
        record = json.load(handle)
    record["wall_seconds"] = round(time.perf_counter() - started, 2)
    return record


def describe(record: Mapping[str, Any]) -> List[str]:
    """Lines of a finished run for the terminal."""
    before, after = record["before"], record["after"]
    rows = [f"{'':10} {'before':>8} {'after':>8} {'gain':>8}"]
    for key in [k for k in after if k in before]:
        scale = 100.0 if key in ("AP", "AP50", "AP75") else 1.0
        rows.append(f"{key:<28} {scale * before[key]:8.2f} {scale * after[key]:8.2f} "
                    f"{scale * (after[key] - before[key]):+8.2f}")
    return rows
