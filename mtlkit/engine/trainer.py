"""The training loop: iteration-based, DDP-aware, exactly resumable, with hooks.

One iteration = one call of the step (:class:`mtlkit.engine.step.TrainStep`:
``train.accumulate`` batches of ``data.batch_size`` images per process, one
optimiser step). The :class:`Trainer` builds the run into a
:class:`~mtlkit.engine.state.RunState` (model, optimiser, lr schedule, AMP
scaler, EMA, data stream, logger), restores it from ``OUT/last.pt``, then runs
the loop, calling its hooks (:mod:`mtlkit.engine.hooks`) around every
iteration: logging, periodic evaluation and checkpoints, the EMA, the loss
weighting's callbacks and SIGINT/SIGTERM handling (save, then stop) are hooks.
The trainer itself keeps the invariants every run relies on: a run ends with
a checkpoint, a stopped run saves before it stops, nothing non-finite is
saved.

Exact resume: data order is a pure function of (seed, epoch), augmentation of
(seed, epoch, index), the lr of the iteration, and the checkpoint holds every
state (model, optimiser, scaler, EMA, all RNGs, data position, the step's and
the hooks' own state), so on CPU a run killed at any moment and resumed ends
with the same weights, bit for bit, as an uninterrupted one. Evaluation runs
with the RNG states saved and restored, so evaluating does not change what
training does.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import yaml
from torch import nn

from mtlkit.config import save_config
from mtlkit.data.builders import build_split
from mtlkit.data.collate import collate
from mtlkit.engine import dist
from mtlkit.engine.checkpoint import (
    check_finite_optimizer,
    check_finite_state,
    check_resumable,
    describe_names,
    load_checkpoint,
    load_model_state,
    non_finite,
    rng_state,
    save_checkpoint as write_checkpoint,
    set_rng_state,
)
from mtlkit.engine.checks import check_classes, check_resume_config, check_run_data
from mtlkit.engine.data import ShardedBatches, TrainStream
from mtlkit.engine.ema import ModelEMA
from mtlkit.engine.gradient_step import GradientStep
from mtlkit.engine.hooks import (
    EMAUpdate,
    EvalHook,
    HookBase,
    PeriodicCheckpoint,
    StopOnSignal,
    TrainingCurves,
    TrainLog,
    WeightingCallbacks,
)
from mtlkit.engine.logger import RunLogger, note
from mtlkit.engine.optim import LRSchedule, build_optimizer
from mtlkit.engine.precision import amp_dtype_for
from mtlkit.engine.runtime import (  # noqa: F401 - resolve_config & co. are also imported from here
    ResolvedConfig,
    dataset_attr,
    default_out_dir,
    device_session,
    flag_overrides,
    resolve_config,
    run_config,
    seed_everything,
    with_defaults,
)
from mtlkit.engine.state import FAILED, FINISHED, RUNNING, STOPPED, RunState
from mtlkit.engine.step import TrainStep
from mtlkit.errors import RunExists, TrainingDiverged  # noqa: F401 - also imported from here
from mtlkit.gradient_weighting import GradientWeighting
from mtlkit.models.compose import build_model
from mtlkit.models.measured import check_sensor_data
from mtlkit.utils.io import check_out_dir, make_out_dir, plain
from mtlkit.utils.outdir import adopt, check_claim, claim, written
from mtlkit.utils.runlock import RunLock
from mtlkit.version import __version__

CHECKPOINT_NAME = "last.pt"
#: what a training run writes into its ``--out``: claimed before the first
#: write (:func:`mtlkit.utils.outdir.claim`), so that a file of these names the
#: run did not write (a hand-written ``config.yaml`` beside which ``--out``
#: points) is never replaced
RUN_OUTPUTS = ("config.yaml", "metrics.jsonl", CHECKPOINT_NAME, "metrics.json", "detections.json",
               "curves.png", "per_class_ap.png", "tb")


class Trainer:
    """Trains a model on a resolved config; :meth:`run` returns the final metrics.

    :param cfg: the resolved config (:func:`mtlkit.config.run_config`;
        :func:`train` makes it from a path or dict and the overrides; a path
        or dict given here is resolved first).
    :param out_dir: the run directory.
    :param resume: continue from ``out_dir/last.pt``.
    :param model: a prebuilt model (default :meth:`build_model`: ``mtlkit.build_model(cfg)``).
    :param train_dataset, val_dataset: prebuilt datasets (default from
        ``data.train`` / ``data.<eval.split>`` with their transforms).
    :param collate_fn: default :func:`mtlkit.data.collate`.
    :param step: what one iteration does (default :meth:`default_step`:
        :class:`~mtlkit.engine.step.TrainStep`, the supervised multi-task step).
    :param hooks: hooks run after the default ones (:meth:`default_hooks`).

    A subclass may replace :meth:`build_model`, :meth:`build_datasets`,
    :meth:`default_step`, :meth:`default_hooks` and :meth:`build_sampler`.
    While it runs, :attr:`state` is the
    :class:`~mtlkit.engine.state.RunState` and :attr:`hooks` the hooks in
    call order.
    """

    #: the command whose outputs the run folder records (:mod:`mtlkit.utils.outdir`)
    command: str = "train"
    #: the names the run writes into ``--out`` (claimed before the first write)
    outputs: Tuple[str, ...] = RUN_OUTPUTS

    def __init__(self, cfg: Union[ResolvedConfig, Mapping[str, Any]], out_dir: str, *, resume: bool = False,
                 model: Optional[nn.Module] = None, train_dataset: Any = None,
                 val_dataset: Any = None, collate_fn: Optional[Callable] = None,
                 step: Optional[TrainStep] = None, hooks: Sequence[HookBase] = ()):
        self.cfg: ResolvedConfig = run_config(cfg)
        self.tc = self.cfg["train"]
        self.out_dir = os.fspath(out_dir)
        self.resume = resume
        self.checkpoint_path = os.path.join(self.out_dir, CHECKPOINT_NAME)
        #: what one iteration does: the ``step`` given, else :meth:`default_step` of the built model
        self.step: Optional[TrainStep] = step
        self.hooks: List[HookBase] = []
        self.state: Optional[RunState] = None
        self._model, self._train_dataset, self._val_dataset = model, train_dataset, val_dataset
        self._collate = collate_fn
        self._extra_hooks = list(hooks)

    # -- what a subclass may replace ----------------------------------------------------
    def build_model(self) -> nn.Module:
        """The model to train (the one given to the constructor, else the config's)."""
        if self._model is not None:
            return self._model
        return build_model(self.cfg)

    def build_datasets(self) -> Tuple[Any, Any]:
        """(training set, validation set or None): the ones given to the
        constructor, else ``data.train`` and ``data.<eval.split>``."""
        split, seed = self.cfg["eval"]["split"], int(self.tc["seed"])
        train_set, val_set = self._train_dataset, self._val_dataset
        if train_set is None:
            train_set = build_split(self.cfg, "train", train=True, seed=seed)
        if val_set is None and split in self.cfg.data_spec.splits:
            val_set = build_split(self.cfg, split, train=False, seed=seed)
        return train_set, val_set

    def default_step(self, model: nn.Module) -> TrainStep:
        """The step of a run given none, chosen once the model is built:
        :class:`~mtlkit.engine.gradient_step.GradientStep` when the model's
        weighting is a gradient-level one, else
        :class:`~mtlkit.engine.step.TrainStep`."""
        if isinstance(getattr(model, "weighting", None), GradientWeighting):
            return GradientStep()
        return TrainStep()

    def build_sampler(self, dataset_size: int, batch_size: int) -> ShardedBatches:
        """The order of the training batches: by default shuffled per epoch
        and sharded over the processes (:class:`~mtlkit.engine.data.ShardedBatches`);
        a subclass may stream the data in order instead (test-time adaptation)."""
        return ShardedBatches(dataset_size, batch_size, dist.world_size(), dist.rank(), int(self.tc["seed"]))

    def default_hooks(self) -> List[HookBase]:
        """The hooks of every run, in call order (see :mod:`mtlkit.engine.hooks`)."""
        tc = self.tc
        hooks: List[HookBase] = [StopOnSignal()]
        if tc["ema"]["enabled"]:
            hooks.append(EMAUpdate())
        hooks += [WeightingCallbacks(), TrainLog(tc["log_every"], bool(tc["progress"])),
                  EvalHook(tc["eval_every"], bool(tc["eval_at_end"])),
                  PeriodicCheckpoint(tc["checkpoint_every"])]
        if tc["plots"]:
            hooks.append(TrainingCurves())
        return hooks

    def register_hooks(self, hooks: Sequence[HookBase]) -> None:
        """Append ``hooks`` (each gets ``hook.trainer = self``)."""
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    # -- running -------------------------------------------------------------------------
    def run(self) -> Dict[str, Dict[str, float]]:
        """Train to ``train.iters``; returns the last evaluation's metrics
        (task -> metric -> value; empty without a validation split).

        ``--out`` is locked while the run builds and trains (one process per
        run folder: :class:`~mtlkit.utils.runlock.RunLock`, held by rank 0)."""
        check_out_dir(self.out_dir)  # before the lock creates the folder (``--out /``, a file)
        with device_session(self.tc) as device, RunLock(self.out_dir, enabled=dist.is_main()):
            ckpt = self._build(device)
            self.register_hooks(self.default_hooks() + self._extra_hooks)
            epoch, batch = self._restore(ckpt)
            self._open(epoch, batch)
            return self._loop()

    def _call(self, point: str) -> None:
        for hook in self.hooks:
            getattr(hook, point)()

    def _loop(self) -> Dict[str, Dict[str, float]]:
        """The iterations between the hooks; the final checkpoint; after_train."""
        state = self.state
        try:
            try:
                self._call("before_train")
                state.model.train()
                for it in range(state.start_iter, state.iters):
                    state.iter = it
                    state.lr = state.schedule.step(it) if state.schedule is not None else None
                    self._call("before_step")
                    state.result = self.step(state)
                    state.iter = it + 1
                    self._call("after_step")
                    if state.stop:
                        if state.last_saved_iter != state.iter:
                            self.save_checkpoint()
                        state.outcome = STOPPED
                        break
                else:
                    state.iter = max(state.iters, state.start_iter)
                    if state.start_iter > state.iters:
                        state.note(f"the run is already at iteration {state.start_iter} > train.iters "
                                   f"{state.iters}: nothing to train")
                    elif state.last_saved_iter != state.iter:
                        self.save_checkpoint()
                    state.outcome = FINISHED
            except BaseException:
                state.outcome = FAILED
                self._call("after_train")  # hooks only clean up (restore signal handlers, close the bar)
                raise
            self._call("after_train")
        finally:
            state.stream.close()
            state.logger.close()
        if state.outcome == STOPPED:
            state.note(f"stopped by {state.stop_requested or 'a signal on another process'} at iteration "
                       f"{state.iter}; checkpoint saved to {self.checkpoint_path} (continue with --resume)")
            raise KeyboardInterrupt(f"stopped at iteration {state.iter}")
        return state.last_eval

    # -- the phases of a run ---------------------------------------------------------------
    def _build(self, device: torch.device) -> Optional[Dict[str, Any]]:
        """Check the run directory, build data, model (then :meth:`TrainStep.setup`),
        optimiser, schedule, AMP scaler, EMA and sampler into :attr:`state`,
        then write ``--out``; returns the checkpoint to resume from (or None)."""
        tc, cfg = self.tc, self.cfg
        world, seed = dist.world_size(), int(tc["seed"])
        if tc["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        ckpt = self._check_run_dir()

        seed_everything(seed)
        train_set, val_set = self.build_datasets()
        check_run_data(cfg, train_set, val_set, cfg.data_spec.batch_size, world)
        channels_last = bool(tc["channels_last"])
        model = self.build_model().to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if world > 1 and tc["sync_bn"]:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if self._collate is None:
            self._collate = collate
        batch_size = cfg.data_spec.batch_size
        state = self.state = RunState(
            cfg=cfg, out_dir=self.out_dir, checkpoint_path=self.checkpoint_path, device=device,
            model=model, core=model, train_dataset=train_set, val_dataset=val_set, collate_fn=self._collate,
            batch_size=batch_size, accumulate=max(1, int(tc["accumulate"])), world_size=world,
            iters=int(tc["iters"]), channels_last=channels_last)
        if self.step is None:
            self.step = self.default_step(model)
        self.step.setup(state)
        state.loss_names = list(self.step.loss_names(state))
        if self.step.uses_optimizer:
            state.optimizer = build_optimizer(model, tc["optimizer"])
            state.schedule = LRSchedule(state.optimizer, state.iters, tc["schedule"])
        state.sampler = self.build_sampler(len(train_set), batch_size)
        # Everything is checked (config, data, model, checkpoint): only now is --out written.
        self._start_run_dir(model, ckpt)
        state.amp_dtype = amp_dtype_for(tc, device, state.note)
        state.scaler = torch.amp.GradScaler("cuda") if state.amp_dtype == torch.float16 else None
        if tc["ema"]["enabled"]:
            state.ema = ModelEMA(model, tc["ema"]["decay"], tc["ema"]["warmup"])
        return ckpt

    def _restore(self, ckpt: Optional[Mapping[str, Any]]) -> Tuple[int, int]:
        """Load every state of ``ckpt`` (model, optimiser, schedule, scaler,
        EMA, RNGs, evaluation records, the step's and the hooks' own); returns
        the (epoch, batch) the data continues from, (0, 0) without a checkpoint."""
        state = self.state
        if ckpt is None:
            return 0, 0
        load_model_state(state.core, ckpt["model"], self.checkpoint_path)
        if state.optimizer is not None and ckpt.get("optimizer"):
            state.optimizer.load_state_dict(ckpt["optimizer"])
        if state.schedule is not None:
            state.schedule.load_state_dict(ckpt.get("scheduler") or {})
        if state.scaler is not None and ckpt.get("scaler"):
            state.scaler.load_state_dict(ckpt["scaler"])
        if state.ema is not None and ckpt.get("ema"):
            state.ema.load_state_dict(ckpt["ema"])
        if ckpt.get("step") is not None:
            self.step.load_state_dict(ckpt["step"])
        saved_hooks = ckpt.get("hooks") or {}
        for hook in self.hooks:
            if saved_hooks.get(hook.key) is not None:
                hook.load_state_dict(saved_hooks[hook.key])
        state.start_iter = state.iter = int(ckpt["iteration"])
        data_state = ckpt["data"]
        epoch, batch_pos = int(data_state["epoch"]), int(data_state["batch"])
        old_global = int(data_state["batch_size"]) * int(data_state["world_size"])
        global_batch = state.sampler.global_batch
        if old_global != global_batch:
            state.note(f"global batch changed from {old_global} to {global_batch}: "
                       "the data order cannot continue exactly")
            batch_pos = batch_pos * old_global // global_batch
        world, rank = dist.world_size(), dist.rank()
        rngs = ckpt["rng"]
        rngs = rngs if isinstance(rngs, list) else [rngs]
        set_rng_state(rngs[rank] if len(rngs) == world else rngs[0])
        state.last_saved_iter = state.start_iter
        state.last_eval_iter = state.start_iter if ckpt.get("evaluated") else -1
        state.last_eval = ckpt.get("last_eval") or {}
        if dist.is_main():
            RunLogger.truncate(self.out_dir, state.start_iter)
            state.note(f"resumed from {self.checkpoint_path} at iteration {state.start_iter}")
        return epoch, batch_pos

    def _open(self, epoch: int, batch: int) -> None:
        """Wrap the model in DDP (after the restore: DDP broadcasts rank 0's
        weights), open the data stream at (epoch, batch) and the logger."""
        state, tc, device = self.state, self.tc, self.state.device
        if state.world_size > 1:
            ddp_kwargs = {"find_unused_parameters": bool(tc["find_unused_parameters"])}
            if device.type == "cuda":
                ddp_kwargs["device_ids"] = [device.index]
            state.model = nn.parallel.DistributedDataParallel(state.core, **ddp_kwargs)
        state.stream = TrainStream(state.train_dataset, state.sampler, state.collate_fn,
                                   self.cfg.data_spec.num_workers,
                                   pin_memory=device.type == "cuda", epoch=epoch, batch=batch)
        state.logger = RunLogger(self.out_dir, enabled=dist.is_main(), tensorboard=bool(tc["tensorboard"]))
        if state.logger.tensorboard_missing:
            state.note("TensorBoard is off: the tensorboard package is not installed "
                       "(pip install 'mtlkit[tensorboard]', or train.tensorboard: false); "
                       "metrics go to metrics.jsonl")
        state.outcome = RUNNING

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint_state(self, iteration: int) -> Dict[str, Any]:
        """The checkpoint of ``iteration`` (layout: :mod:`mtlkit.engine.checkpoint`).
        Collective under DDP (every rank's RNG state is gathered)."""
        state = self.state
        core = state.core
        ckpt: Dict[str, Any] = {
            "iteration": int(iteration),
            "model": core.state_dict(),
            "optimizer": state.optimizer.state_dict() if state.optimizer is not None else None,
            "scheduler": state.schedule.state_dict() if state.schedule is not None else None,
            "scaler": state.scaler.state_dict() if state.scaler is not None else None,
            "ema": state.ema.state_dict() if state.ema is not None else None,
            "rng": dist.all_gather_object(rng_state()),
            "data": {**state.stream.state(), "seed": int(self.tc["seed"]),
                     "batch_size": int(state.batch_size), "world_size": dist.world_size()},
            "evaluated": state.last_eval_iter == iteration,
            "last_eval": state.last_eval,
            "meta": {
                "classes": dataset_attr(state.train_dataset, "classes"),
                "scenes": dataset_attr(state.train_dataset, "scenes"),
                "tasks": list(getattr(core, "tasks", None) or state.loss_names),
                "config": yaml.safe_dump(plain(self.cfg), sort_keys=False),
                "mtlkit": __version__,
            },
        }
        step_state = self.step.state_dict()
        if step_state is not None:
            ckpt["step"] = step_state
        hook_states = {h.key: s for h in self.hooks if (s := h.state_dict()) is not None}
        if hook_states:
            ckpt["hooks"] = hook_states
        return ckpt

    def save_checkpoint(self, iteration: Optional[int] = None) -> None:
        """Write ``OUT/last.pt`` of ``iteration`` (default: the steps done),
        atomically, unless the weights hold NaN / inf (then
        :class:`~mtlkit.errors.TrainingDiverged`, naming them). Every rank calls it."""
        state = self.state
        iteration = state.iter if iteration is None else int(iteration)
        bad = non_finite(state.core.state_dict())
        if state.ema is not None:
            bad.update({f"ema.{k}": v for k, v in non_finite(state.ema.state).items()})
        if bad:
            state.logger.log({"event": "diverged", "iter": iteration, "non_finite": sorted(bad)})
            kept = (f"the last good checkpoint is {self.checkpoint_path} (iteration {state.last_saved_iter})"
                    if state.last_saved_iter >= 0 else "no checkpoint was written")
            raise TrainingDiverged(
                f"training diverged at iteration {iteration}: the weights hold NaN or inf in {len(bad)} "
                f"tensor(s) ({describe_names(sorted(bad))}) although the loss was finite; not saved, "
                f"{kept}. Lower train.optimizer.lr, add warm-up or train.clip_grad_norm.")
        ckpt = self.checkpoint_state(iteration)  # collective (RNG gather): every rank
        if dist.is_main():
            write_checkpoint(ckpt, self.checkpoint_path)
        dist.barrier()
        state.last_saved_iter = iteration

    # -- the run directory --------------------------------------------------------------------
    def _check_run_dir(self) -> Optional[Dict[str, Any]]:
        """Before anything is written: ``--out`` usable, none of
        :attr:`outputs` there that a training run did not write, an
        existing run only with ``resume``, the same config and a checkpoint
        that can continue it; returns the checkpoint to resume."""
        check_out_dir(self.out_dir)
        metrics_path = os.path.join(self.out_dir, "metrics.jsonl")
        ckpt = None
        if os.path.isfile(self.checkpoint_path):
            if not self.resume:
                raise RunExists(f"{self.out_dir} already holds a run ({CHECKPOINT_NAME}); pass --resume "
                                "to continue it, or choose another --out")
            ckpt = load_checkpoint(self.checkpoint_path)
            check_resumable(ckpt, self.checkpoint_path)
            check_finite_state(ckpt["model"], f"the weights of {self.checkpoint_path}")
            check_finite_optimizer(ckpt.get("optimizer"), self.checkpoint_path)
            check_resume_config(ckpt, self.cfg, self.checkpoint_path)
        elif os.path.isfile(metrics_path) and not self.resume:
            raise RunExists(f"{self.out_dir} holds the metrics.jsonl of a run stopped before its first "
                            f"checkpoint; pass --resume to start it over, or choose another --out")
        elif self.resume:
            note(f"--resume: no checkpoint in {self.out_dir}, starting from scratch")
        self._check_outputs(ckpt)
        return ckpt

    def _check_outputs(self, ckpt: Optional[Mapping[str, Any]]) -> None:
        """Refuse when ``--out`` holds a file of :attr:`outputs` that no
        training run wrote (the record ``OUT/.mtlkit-outputs.json`` says which
        did). A run folder from before mtlkit kept that record is adopted when
        it is resumed and is one: its ``last.pt`` loaded as a checkpoint, or
        its ``metrics.jsonl`` holds mtlkit's records."""
        if os.path.isdir(self.out_dir) and not self._legacy_run(ckpt):
            check_claim(self.out_dir, self.outputs, self.command)

    def _legacy_run(self, ckpt: Optional[Mapping[str, Any]]) -> bool:
        """A run folder written before mtlkit recorded its outputs, resumed."""
        if not self.resume or written(self.out_dir):
            return False
        if ckpt is not None:
            return True
        return RunLogger.holds_records(self.out_dir)

    def _start_run_dir(self, core: nn.Module, ckpt: Optional[Mapping[str, Any]]) -> None:
        """Check the data's classes against the model's (and the checkpoint's),
        then claim :attr:`outputs` in ``--out`` and write ``config.yaml``."""
        state = self.state
        meta = (ckpt.get("meta") or {}) if ckpt is not None else {}
        check_classes(core, state.train_dataset, state.val_dataset, meta.get("classes"), meta.get("scenes"))
        check_sensor_data(core, state.train_dataset, "train")
        if not dist.is_main():
            return
        make_out_dir(self.out_dir)
        if self._legacy_run(ckpt):
            adopt(self.out_dir, self.outputs, self.command)
        else:
            claim(self.out_dir, self.outputs, self.command)
        if ckpt is None:
            # a run killed before its first checkpoint: start its records over
            RunLogger.truncate(self.out_dir, 0)
        save_config(self.cfg, os.path.join(self.out_dir, "config.yaml"))


# ----------------------------------------------------------------------------
# the Python API
# ----------------------------------------------------------------------------
def train(cfg: Union[str, "os.PathLike[str]", Mapping[str, Any]], out_dir: Optional[str] = None,
          iters: Optional[int] = None, resume: bool = False, checkpoint_every: Optional[int] = None,
          seed: Optional[int] = None, overrides: Sequence[str] = (), progress: Optional[bool] = None,
          model: Optional[nn.Module] = None, train_dataset: Any = None, val_dataset: Any = None,
          collate_fn: Optional[Callable] = None, step: Optional[TrainStep] = None,
          hooks: Sequence[HookBase] = ()) -> Dict[str, Dict[str, float]]:
    """Train a model and return its final validation metrics (task -> metric
    name -> value; empty when the config has no validation split).

    :param cfg: a config path or dict.
    :param out_dir: the run directory (default ``runs/<config stem>-<time>``).
    :param iters, checkpoint_every, seed, progress: ``train.*`` values; like
        ``overrides`` (``key=value`` strings) they are applied before the
        config is validated and resolved, once.
    :param resume: continue from ``out_dir/last.pt`` exactly.
    :param model, train_dataset, val_dataset, collate_fn: prebuilt parts
        (default: built from the config).
    :param step, hooks: see :class:`Trainer`.
    :raises TrainingDiverged: when a loss becomes NaN/inf.
    :raises KeyboardInterrupt: after SIGINT/SIGTERM (a checkpoint is saved first).
    """
    config_path = None if isinstance(cfg, Mapping) else os.fspath(cfg)
    flags = flag_overrides("train", iters=iters, checkpoint_every=checkpoint_every, seed=seed,
                           progress=progress)
    resolved = run_config(cfg, list(overrides) + flags)
    out_dir = out_dir or default_out_dir(config_path)
    return Trainer(resolved, out_dir, resume=resume, model=model, train_dataset=train_dataset,
                   val_dataset=val_dataset, collate_fn=collate_fn, step=step, hooks=hooks).run()
