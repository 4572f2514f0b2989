"""The training loop: iteration-based, DDP-aware, exactly resumable.

One iteration = ``train.accumulate`` batches of ``data.batch_size`` images
per process, one optimiser step. Around it: the lr schedule (a function of
the iteration), AMP on CUDA, gradient clipping, EMA, a NaN/inf guard naming
the diverging task, periodic evaluation on the validation split, atomic
checkpoints (``OUT/last.pt``) and SIGINT/SIGTERM handling (save, then stop).

Exact resume: data order is a pure function of (seed, epoch), augmentation of
(seed, epoch, index), the lr of the iteration, and the checkpoint holds every
state (model, optimiser, scaler, EMA, all RNGs, data position), so on CPU a
run killed at any moment and resumed ends with the same weights, bit for bit,
as an uninterrupted one. Evaluation runs with the RNG states saved and
restored, so evaluating does not change what training does.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from mtlkit.engine import dist
from mtlkit.engine.checkpoint import (
    check_finite_state,
    describe_names,
    load_checkpoint,
    load_model_state,
    non_finite,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mtlkit.engine.checks import check_classes, check_resume_config
from mtlkit.engine.data import ShardedBatches, TrainStream
from mtlkit.engine.ema import ModelEMA
from mtlkit.engine.evaluator import evaluate_model, write_eval_outputs
from mtlkit.engine.precision import amp_dtype_for, autocast, to_memory_format
from mtlkit.engine.logger import RunLogger, fmt, progress_bar
from mtlkit.engine.optim import LRSchedule, build_optimizer
from mtlkit.engine.runtime import (  # noqa: F401 - resolve_config & co. are also imported from here
    apply_num_threads,
    dataset_attr,
    default_out_dir,
    device_session,
    eval_loader_settings,
    load_run_config,
    move_to,
    resolve_config,
    seed_everything,
    select_device,
    with_defaults,
)
from mtlkit.errors import ConfigError, MtlkitError
from mtlkit.utils.io import check_out_dir, make_out_dir, plain

CHECKPOINT_NAME = "last.pt"


class TrainingDiverged(MtlkitError):
    """A task's loss became NaN or infinite; the message names the task."""


class RunExists(MtlkitError):
    """The output folder already holds a run and ``resume`` was not asked."""


def weighting_hook(core: nn.Module, hook: str, *args: Any) -> None:
    """Call an optional hook of the model's loss weighting
    (:class:`mtlkit.weighting.LossWeighting`); models whose weighting is a
    plain callable have none."""
    method = getattr(getattr(core, "weighting", None), hook, None)
    if callable(method):
        method(*args)


@contextlib.contextmanager
def preserved_rng():
    """Run a block without changing the global RNG states."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class _StopRequest:
    """SIGINT / SIGTERM set a flag the loop checks after each iteration; a
    second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:  # noqa: ANN001
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------
class Trainer:
    """Trains the model of a config; :meth:`run` returns the final metrics.

    :param cfg: a validated config dict (see :func:`mtlkit.engine.train`).
    :param out_dir: the run directory.
    :param model: a prebuilt ``MultiTaskModel`` (default ``mtlkit.build_model(cfg)``).
    :param train_dataset, val_dataset: prebuilt datasets (default from
        ``data.train`` / ``data.<eval.split>`` with their transforms).
    :param collate_fn: default :func:`mtlkit.data.collate`.
    """

    def __init__(self, cfg: Mapping[str, Any], out_dir: str, *, resume: bool = False,
                 model: Optional[nn.Module] = None, train_dataset: Any = None,
                 val_dataset: Any = None, collate_fn: Optional[Callable] = None):
        self.cfg = resolve_config(cfg)
        self.tc = self.cfg["train"]
        self.out_dir = os.fspath(out_dir)
        self.resume = resume
        self._model, self._train_dataset, self._val_dataset = model, train_dataset, val_dataset
        self._collate = collate_fn
        self.checkpoint_path = os.path.join(self.out_dir, CHECKPOINT_NAME)
        self.last_eval: Dict[str, Dict[str, float]] = {}
        self.last_eval_iter = -1
        self.last_saved_iter = -1
        self._ctx: Dict[str, Any] = {}  # what the run holds (filled by _setup and _open)
        self._bar = None

    # -- building ------------------------------------------------------------
    def _collate_fn(self) -> Callable:
        if self._collate is None:
            from mtlkit.data import collate

            self._collate = collate
        return self._collate

    def _datasets(self) -> None:
        data = self.cfg.get("data") or {}
        split = self.cfg["eval"]["split"]
        if self._train_dataset is None:
            from mtlkit.data import build_split

            self._train_dataset = build_split(data, "train", train=True, seed=int(self.tc["seed"]),
                                              validated=True)
        if self._val_dataset is None and data.get(split) is not None:
            from mtlkit.data import build_split

            self._val_dataset = build_split(data, split, train=False, seed=int(self.tc["seed"]),
                                            validated=True)

    def _build_model(self) -> nn.Module:
        if self._model is not None:
            return self._model
        from mtlkit import build_model

        return build_model(self.cfg, validated=True)  # validated when the config was loaded

    def _amp(self, device: torch.device) -> Optional[torch.dtype]:
        return amp_dtype_for(self.tc, device, self._note)

    def _note(self, message: str) -> None:
        if not dist.is_main():
            return
        bar = self._bar
        if bar is not None:
            bar.write(f"mtlkit: {message}", file=sys.stderr)
        else:
            print(f"mtlkit: {message}", file=sys.stderr, flush=True)

    # -- running ---------------------------------------------------------------
    def run(self) -> Dict[str, Dict[str, float]]:
        """Train to ``train.iters``; returns the last evaluation's metrics
        (task -> metric -> value; empty without a validation split)."""
        with device_session(self.tc) as device:
            return self._run(device)

    def _run(self, device: torch.device) -> Dict[str, Dict[str, float]]:
        """Setup, restore, the iterations (:meth:`_step`, then logging,
        evaluation and checkpoints), the final evaluation."""
        ckpt = self._setup(device)
        start_iter, epoch, batch_pos = self._restore(ckpt)
        self._open(epoch, batch_pos, start_iter)
        c, tc, iters = self._ctx, self.tc, int(self.tc["iters"])
        stream, logger, schedule = c["stream"], c["logger"], c["schedule"]
        state = _Window()
        stopped: Optional[str] = None
        try:
            with _StopRequest() as stop:
                c["model"].train()
                epoch_seen = stream.state()["epoch"]
                for it in range(start_iter, iters):
                    lr = schedule.step(it)
                    t0 = time.perf_counter()
                    task_losses, total, weights, stop_flag = self._step(it, stop)
                    done = it + 1
                    weighting_hook(c["core"], "on_iteration_end", done)
                    if stream.state()["epoch"] != epoch_seen:
                        weighting_hook(c["core"], "on_epoch_end", epoch_seen)
                        epoch_seen = stream.state()["epoch"]

                    state.add(task_losses, total, c["batch_size"] * c["accumulate"] * c["world"],
                              time.perf_counter() - t0, weights)
                    bar = self._bar
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(" ".join(
                            [f"{n}={fmt(v)}" for n, v in task_losses.items()]
                            + [f"lr={fmt(lr)}", f"img/s={state.rate():.1f}"]), refresh=False)
                    if done % max(1, int(tc["log_every"])) == 0 or done == iters:
                        logger.log(state.record(done, lr, stream.state()))
                        state.reset()
                    if tc["eval_every"] and done % int(tc["eval_every"]) == 0 and done < iters:
                        self._evaluate(done, final=False)
                    if tc["checkpoint_every"] and done % int(tc["checkpoint_every"]) == 0:
                        self._save(done)
                    if stop_flag:
                        stopped = stop.requested or "a signal on another process"
                        if self.last_saved_iter != done:
                            self._save(done)
                        break
                else:
                    done = max(iters, start_iter)
                    if start_iter > iters:
                        self._note(f"the run is already at iteration {start_iter} > train.iters {iters}: "
                                   "nothing to train")
                    elif self.last_saved_iter != done:
                        self._save(done)
            if stopped is not None:
                self._close_bar()
                self._note(f"stopped by {stopped} at iteration {done}; checkpoint saved to "
                           f"{self.checkpoint_path} (continue with --resume)")
                raise KeyboardInterrupt(f"stopped at iteration {done}")
            self._close_bar()
            self._evaluate_at_end(done)
            self._finish()
            return self.last_eval
        finally:
            self._close_bar()
            stream.close()
            logger.close()

    # -- the phases of a run -------------------------------------------------------
    def _setup(self, device: torch.device) -> Optional[Dict[str, Any]]:
        """Check the run directory, build data, model, optimiser, schedule,
        AMP scaler, EMA and sampler (into ``self._ctx``), then write ``--out``;
        returns the checkpoint to resume from (or None)."""
        tc, cfg = self.tc, self.cfg
        world, seed = dist.world_size(), int(tc["seed"])
        if tc["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        ckpt = self._check_run_dir()

        seed_everything(seed)
        self._datasets()
        channels_last = bool(tc["channels_last"])
        model = self._build_model().to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        core = model
        # Everything is checked (config, data, model, checkpoint): only now is --out written.
        self._start_run_dir(core, ckpt)
        if world > 1 and tc["sync_bn"]:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            core = model
        optimizer = build_optimizer(core, tc["optimizer"])
        schedule = LRSchedule(optimizer, int(tc["iters"]), tc["schedule"])
        amp_dtype = self._amp(device)
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        ema = ModelEMA(core, tc["ema"]["decay"], tc["ema"]["warmup"]) if tc["ema"]["enabled"] else None

        batch_size = int((cfg.get("data") or {}).get("batch_size", 8))
        sampler = ShardedBatches(len(self._train_dataset), batch_size, world, dist.rank(), seed)
        self._ctx = dict(core=core, model=model, optimizer=optimizer, schedule=schedule, scaler=scaler,
                         ema=ema, sampler=sampler, device=device, amp_dtype=amp_dtype,
                         channels_last=channels_last, batch_size=batch_size,
                         accumulate=max(1, int(tc["accumulate"])), world=world,
                         task_names=list(core.tasks), stream=None, logger=None)
        return ckpt

    def _restore(self, ckpt: Optional[Mapping[str, Any]]) -> "tuple[int, int, int]":
        """Load every state of ``ckpt`` (model, optimiser, schedule, scaler,
        EMA, RNGs, evaluation records); returns (iteration, epoch, batch) to
        continue from, (0, 0, 0) without a checkpoint."""
        if ckpt is None:
            return 0, 0, 0
        c = self._ctx
        load_model_state(c["core"], ckpt["model"], self.checkpoint_path)
        c["optimizer"].load_state_dict(ckpt["optimizer"])
        c["schedule"].load_state_dict(ckpt.get("scheduler") or {})
        if c["scaler"] is not None and ckpt.get("scaler"):
            c["scaler"].load_state_dict(ckpt["scaler"])
        if c["ema"] is not None and ckpt.get("ema"):
            c["ema"].load_state_dict(ckpt["ema"])
        start_iter = int(ckpt["iteration"])
        data_state = ckpt["data"]
        epoch, batch_pos = int(data_state["epoch"]), int(data_state["batch"])
        old_global = int(data_state["batch_size"]) * int(data_state["world_size"])
        global_batch = c["sampler"].global_batch
        if old_global != global_batch:
            self._note(f"global batch changed from {old_global} to {global_batch}: "
                       "the data order cannot continue exactly")
            batch_pos = batch_pos * old_global // global_batch
        world, rank = dist.world_size(), dist.rank()
        rngs = ckpt["rng"]
        rngs = rngs if isinstance(rngs, list) else [rngs]
        set_rng_state(rngs[rank] if len(rngs) == world else rngs[0])
        self.last_saved_iter = start_iter
        self.last_eval_iter = start_iter if ckpt.get("evaluated") else -1
        self.last_eval = ckpt.get("last_eval") or {}
        if dist.is_main():
            RunLogger.truncate(self.out_dir, start_iter)
            self._note(f"resumed from {self.checkpoint_path} at iteration {start_iter}")
        return start_iter, epoch, batch_pos

    def _open(self, epoch: int, batch_pos: int, start_iter: int) -> None:
        """Wrap the model in DDP (after the restore: DDP broadcasts rank 0's
        weights), open the data stream at (epoch, batch), the logger and the bar."""
        c, tc, device = self._ctx, self.tc, self._ctx["device"]
        if c["world"] > 1:
            ddp_kwargs = {"find_unused_parameters": bool(tc["find_unused_parameters"])}
            if device.type == "cuda":
                ddp_kwargs["device_ids"] = [device.index]
            c["model"] = nn.parallel.DistributedDataParallel(c["core"], **ddp_kwargs)
        main = dist.is_main()
        c["stream"] = TrainStream(self._train_dataset, c["sampler"], self._collate_fn(),
                                  int((self.cfg.get("data") or {}).get("num_workers", 0)),
                                  pin_memory=device.type == "cuda", epoch=epoch, batch=batch_pos)
        c["logger"] = RunLogger(self.out_dir, enabled=main, tensorboard=bool(tc["tensorboard"]))
        if c["logger"].tensorboard_missing:
            self._note("TensorBoard is off: the tensorboard package is not installed "
                       "(pip install 'mtlkit[tensorboard]', or train.tensorboard: false); "
                       "metrics go to metrics.jsonl")
        self._bar = progress_bar(int(tc["iters"]), start_iter, bool(tc["progress"]) and main)

    def _step(self, it: int, stop: _StopRequest) -> "tuple[Dict[str, float], float, Any, bool]":
        """One iteration: ``accumulate`` forward/backward passes, one reduction
        (losses for the log and the NaN guard, the stop flag), clipping, the
        optimiser step and the EMA. Returns (task losses, total loss, the
        weighting's weights, whether any process was asked to stop)."""
        c, tc = self._ctx, self.tc
        model, core, device, scaler = c["model"], c["core"], c["device"], c["scaler"]
        optimizer, accumulate, world = c["optimizer"], c["accumulate"], c["world"]
        task_names, channels_last, amp_dtype = c["task_names"], c["channels_last"], c["amp_dtype"]
        optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(len(task_names) + 1, dtype=torch.float64)
        for micro in range(accumulate):
            batch = move_to(c["stream"].next(), device, non_blocking=True)
            sync = (contextlib.nullcontext() if micro == accumulate - 1 or world == 1
                    else model.no_sync())
            with sync:
                with autocast(device, amp_dtype):
                    outputs = model(to_memory_format(batch["image"], channels_last))
                    losses = core.losses(outputs, batch)
                    total, weights = core.weighting(losses)
                loss = total / accumulate
                (scaler.scale(loss) if scaler is not None else loss).backward()
            sums += torch.stack([losses[n].detach().float() for n in task_names]
                                + [total.detach().float()]).cpu().double()
        # One reduction per iteration: the losses (for logging and the
        # NaN guard, which every rank must agree on) and the stop flag.
        vec = torch.cat([sums / accumulate,
                         torch.tensor([1.0 if stop.requested else 0.0], dtype=torch.float64)])
        if world > 1:
            vec = dist.all_reduce_mean(vec.to(device)).cpu()
        values = vec.tolist()
        task_losses = dict(zip(task_names, values[:-2]))
        self._check_finite(task_losses, values[-2], it + 1)

        if scaler is not None:
            scaler.unscale_(optimizer)
        # Gradient-based weightings (GradNorm, PCGrad, ...) act on the
        # unscaled gradients of the last micro-batch's losses.
        weighting_hook(core, "after_backward", core, losses)
        if float(tc["clip_grad_norm"]) > 0:
            torch.nn.utils.clip_grad_norm_(core.parameters(), float(tc["clip_grad_norm"]))
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if c["ema"] is not None:
            c["ema"].update(core)
        return task_losses, values[-2], weights, values[-1] > 0

    def _evaluate_at_end(self, done: int) -> None:
        """The final evaluation (unless the last iteration was just evaluated),
        recorded in the checkpoint when the checkpoint is of that iteration."""
        if self.tc["eval_at_end"] and self._val_dataset is not None and self.last_eval_iter != done:
            self._evaluate(done, final=True)
            if self.last_saved_iter == done:
                self._save(done)  # record that the final evaluation is done

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None

    # -- pieces ------------------------------------------------------------------
    def _check_finite(self, task_losses: Mapping[str, float], total: float, iteration: int) -> None:
        bad = [n for n, v in task_losses.items() if not math.isfinite(v)]
        if not bad and math.isfinite(total):
            return
        desc = ", ".join(f"{n}={v:.4g}" for n, v in task_losses.items())
        what = (f"the loss of task '{bad[0]}' is {task_losses[bad[0]]}" if bad
                else f"the total loss is {total} (task losses are finite: check the weighting)")
        kept = (f"the last good checkpoint is {self.checkpoint_path} (iteration {self.last_saved_iter})"
                if self.last_saved_iter >= 0 else "no checkpoint was written")
        self._ctx["logger"].log({"event": "diverged", "iter": iteration, "task": bad[0] if bad else None,
                                 "losses": dict(task_losses)})
        raise TrainingDiverged(f"training diverged at iteration {iteration}: {what} "
                               f"(losses: {desc}); stopped without saving, {kept}. Lower "
                               "train.optimizer.lr, add warm-up or train.clip_grad_norm.")

    def _state(self, iteration: int) -> Dict[str, Any]:
        c = self._ctx
        import yaml

        return {
            "iteration": int(iteration),
            "model": c["core"].state_dict(),
            "optimizer": c["optimizer"].state_dict(),
            "scheduler": c["schedule"].state_dict(),
            "scaler": c["scaler"].state_dict() if c["scaler"] is not None else None,
            "ema": c["ema"].state_dict() if c["ema"] is not None else None,
            "rng": dist.all_gather_object(rng_state()),
            "data": {**c["stream"].state(), "seed": int(self.tc["seed"]),
                     "batch_size": int(c["batch_size"]), "world_size": dist.world_size()},
            "evaluated": self.last_eval_iter == iteration,
            "last_eval": self.last_eval,
            "meta": {
                "classes": dataset_attr(self._train_dataset, "classes"),
                "scenes": dataset_attr(self._train_dataset, "scenes"),
                "tasks": list(c["core"].tasks),
                "config": yaml.safe_dump(plain(self.cfg), sort_keys=False),
                "mtlkit": _version(),
            },
        }

    def _check_run_dir(self) -> Optional[Dict[str, Any]]:
        """Before anything is written: ``--out`` usable, an existing run only
        with ``resume`` and the same config; returns the checkpoint to resume."""
        check_out_dir(self.out_dir)
        metrics_path = os.path.join(self.out_dir, "metrics.jsonl")
        if os.path.isfile(self.checkpoint_path):
            if not self.resume:
                raise RunExists(f"{self.out_dir} already holds a run ({CHECKPOINT_NAME}); pass --resume "
                                "to continue it, or choose another --out")
            ckpt = load_checkpoint(self.checkpoint_path)
            check_finite_state(ckpt["model"], f"the weights of {self.checkpoint_path}")
            check_resume_config(ckpt, self.cfg, self.checkpoint_path)
            return ckpt
        if os.path.isfile(metrics_path) and not self.resume:
            raise RunExists(f"{self.out_dir} holds the metrics.jsonl of a run stopped before its first "
                            f"checkpoint; pass --resume to start it over, or choose another --out")
        if self.resume:
            self._note(f"--resume: no checkpoint in {self.out_dir}, starting from scratch")
        return None

    def _start_run_dir(self, core: nn.Module, ckpt: Optional[Mapping[str, Any]]) -> None:
        """Check the data's classes against the model's (and the checkpoint's),
        then create ``--out`` and write ``config.yaml``."""
        check_classes(core, self._train_dataset, self._val_dataset,
                      (ckpt.get("meta") or {}).get("classes") if ckpt is not None else None)
        if not dist.is_main():
            return
        make_out_dir(self.out_dir)
        if ckpt is None:
            # a run killed before its first checkpoint: start its records over
            RunLogger.truncate(self.out_dir, 0)
        from mtlkit.config import save_config

        save_config(self.cfg, os.path.join(self.out_dir, "config.yaml"))

    def _save(self, iteration: int) -> None:
        bad = non_finite(self._ctx["core"].state_dict())
        if self._ctx["ema"] is not None:
            bad.update({f"ema.{k}": v for k, v in non_finite(self._ctx["ema"].state).items()})
        if bad:
            self._ctx["logger"].log({"event": "diverged", "iter": iteration, "non_finite": sorted(bad)})
            kept = (f"the last good checkpoint is {self.checkpoint_path} (iteration {self.last_saved_iter})"
                    if self.last_saved_iter >= 0 else "no checkpoint was written")
            raise TrainingDiverged(
                f"training diverged at iteration {iteration}: the weights hold NaN or inf in {len(bad)} "
                f"tensor(s) ({describe_names(sorted(bad))}) although the loss was finite; not saved, "
                f"{kept}. Lower train.optimizer.lr, add warm-up or train.clip_grad_norm.")
        state = self._state(iteration)  # collective (RNG gather): every rank
        if dist.is_main():
            save_checkpoint(state, self.checkpoint_path)
        dist.barrier()
        self.last_saved_iter = iteration

    def _eval_model(self) -> nn.Module:
        c = self._ctx
        if c["ema"] is None or not self.tc["ema"]["evaluate"]:
            return c["core"]
        model = copy.deepcopy(c["core"])
        model.load_state_dict(c["ema"].state)
        return model

    def _evaluate(self, iteration: int, final: bool) -> None:
        c = self._ctx
        batch_size, workers = eval_loader_settings(self.cfg)
        with preserved_rng():
            values, metrics, detections = evaluate_model(
                self._eval_model(), self._val_dataset, batch_size, self._collate_fn(), c["device"],
                workers, export_detections=final and bool(self.cfg["eval"]["export_detections"]),
                amp_dtype=c["amp_dtype"])
        self.last_eval, self.last_eval_iter = values, iteration
        c["logger"].log({"event": "eval", "iter": iteration, "metrics": values})
        if final and dist.is_main():
            write_eval_outputs(self.out_dir, values, metrics, detections,
                               dataset_attr(self._val_dataset, "classes"), iteration=iteration,
                               plots=bool(self.tc["plots"]),
                               primary=c["core"].tasks.get(getattr(c["core"], "primary", None)))
        summary = "  ".join(f"{t}: " + ", ".join(f"{k}={fmt(v)}" for k, v in list(m.items())[:3])
                            for t, m in values.items())
        self._note(f"eval @ {iteration}: {summary}")

    def _finish(self) -> None:
        if not dist.is_main() or not self.tc["plots"]:
            return
        from mtlkit import viz

        path = os.path.join(self.out_dir, "metrics.jsonl")
        if os.path.isfile(path):
            self._ctx["logger"].close()
            viz.plot_training_curves(path, os.path.join(self.out_dir, "curves.png"))


class _Window:
    """Running means over a logging window."""

    def __init__(self) -> None:
        self.reset()
        self._rate = 0.0

    def reset(self) -> None:
        self.n, self.images, self.seconds = 0, 0, 0.0
        self.losses: Dict[str, float] = {}
        self.total = 0.0
        self.weights: Dict[str, float] = {}

    def add(self, losses: Mapping[str, float], total: float, images: int, seconds: float,
            weights: Mapping[str, Any]) -> None:
        self.n += 1
        self.images += images
        self.seconds += seconds
        self.total += total
        for k, v in losses.items():
            self.losses[k] = self.losses.get(k, 0.0) + v
        self.weights = {k: float(v) for k, v in (weights or {}).items()}
        self._rate = images / seconds if seconds > 0 else 0.0

    def rate(self) -> float:
        return self._rate

    def record(self, iteration: int, lr: float, data_state: Mapping[str, int]) -> Dict[str, Any]:
        n = max(1, self.n)
        return {"event": "train", "iter": iteration, "loss": self.total / n,
                "losses": {k: v / n for k, v in self.losses.items()}, "weights": self.weights,
                "lr": lr, "images_per_s": self.images / self.seconds if self.seconds > 0 else None,
                "images": self.images, "seconds": self.seconds,
                "epoch": data_state["epoch"], "time": time.time()}


def _version() -> str:
    from mtlkit import __version__

    return __version__


# ----------------------------------------------------------------------------
# the Python API
# ----------------------------------------------------------------------------
def train(cfg: Union[str, "os.PathLike[str]", Mapping[str, Any]], out_dir: Optional[str] = None,
          iters: Optional[int] = None, resume: bool = False, checkpoint_every: Optional[int] = None,
          seed: Optional[int] = None, overrides: List[str] = (), progress: Optional[bool] = None,
          model: Optional[nn.Module] = None, train_dataset: Any = None, val_dataset: Any = None,
          collate_fn: Optional[Callable] = None) -> Dict[str, Dict[str, float]]:
    """Train a model and return its final validation metrics (task -> metric
    name -> value; empty when the config has no validation split).

    :param cfg: a config path or dict (validated; ``overrides`` applied).
    :param out_dir: the run directory (default ``runs/<config stem>-<time>``).
    :param iters, checkpoint_every, seed, progress: override ``train.*``.
    :param resume: continue from ``out_dir/last.pt`` exactly.
    :param model, train_dataset, val_dataset, collate_fn: prebuilt parts
        (default: built from the config).
    :raises TrainingDiverged: when a loss becomes NaN/inf.
    :raises KeyboardInterrupt: after SIGINT/SIGTERM (a checkpoint is saved first).
    """
    config_path = None if isinstance(cfg, Mapping) else os.fspath(cfg)
    cfg = load_run_config(cfg, overrides)
    cfg = resolve_config(cfg)
    for key, value in (("iters", iters), ("checkpoint_every", checkpoint_every), ("seed", seed),
                       ("progress", progress)):
        if value is not None:
            cfg["train"][key] = value
    if int(cfg["train"]["iters"]) < 0:
        raise ConfigError(f"train.iters must be >= 0, got {cfg['train']['iters']}")
    out_dir = out_dir or default_out_dir(config_path)
    return Trainer(cfg, out_dir, resume=resume, model=model, train_dataset=train_dataset,
                   val_dataset=val_dataset, collate_fn=collate_fn).run()
