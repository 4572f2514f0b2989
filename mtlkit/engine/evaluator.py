"""Evaluation: run a model over a dataset, update every task's metric, merge
the metrics across DDP ranks and compute them.

:func:`evaluate_model` is the loop (used by the trainer and ``mtlkit eval``);
it knows no task: each task's metric accumulates its own predictions, and the
primary task turns its predictions into the run's results file
(:meth:`mtlkit.task.Task.results`, ``detections.json``) and its per-class
figures (:meth:`mtlkit.task.Task.per_class`, ``per_class_ap``).
:func:`write_eval_outputs` writes them.

A task none of whose samples carries a label (data without that modality:
COCO images without depth) has no figures: its entry is ``{}``, listed under
``"absent"`` in ``metrics.json`` and shown as such by the summary table.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from mtlkit import viz
from mtlkit.data.builders import build_split
from mtlkit.data.collate import collate
from mtlkit.engine import dist
from mtlkit.engine.checkpoint import (
    check_finite_state,
    load_checkpoint,
    load_model_state,
    model_state,
    strip_ddp_prefix,
)
from mtlkit.engine.checks import check_classes
from mtlkit.engine.data import eval_loader
from mtlkit.engine.logger import write_json
from mtlkit.engine.precision import amp_dtype_for, autocast
from mtlkit.engine.runtime import (
    ResolvedConfig,
    dataset_attr,
    device_session,
    eval_loader_settings,
    move_to,
    run_config,
)
from mtlkit.errors import ConfigError
from mtlkit.models.compose import build_model
from mtlkit.models.measured import check_sensor_data, measured_inputs
from mtlkit.utils.io import check_out_dir
from mtlkit.utils.outdir import OutputExists, claim, conflicts
from mtlkit.utils.runlock import RunLock


def _eval_autocast(device: torch.device, amp_dtype: Optional[torch.dtype]):
    """Evaluation autocasts on CUDA only: on CPU the reported figures are float32's."""
    return autocast(device, amp_dtype if device.type == "cuda" else None)


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset, batch_size: int, collate_fn, device: torch.device,
                   num_workers: int = 0, export_detections: bool = False,
                   amp_dtype: Optional[torch.dtype] = None,
                   measured: Optional[Sequence[str]] = None) -> Tuple[Dict[str, Dict[str, float]],
                                                                     Dict[str, Any],
                                                                     List[Dict[str, Any]]]:
    """Evaluate ``model`` (a ``MultiTaskModel``, not DDP-wrapped) on ``dataset``.

    ``measured``: the measured modalities the model reads from the data's
    sensor (:func:`mtlkit.models.measured.measured_inputs`): None every one
    its ``model.measured`` names (the trainer's evaluation), ``[]`` none (the
    model without its sensor). A requested modality the data lacks is a
    :class:`~mtlkit.errors.DataError`.

    Under DDP each rank evaluates its share (:func:`mtlkit.engine.data.eval_loader`)
    and the metric objects are gathered with ``all_gather_object`` and merged.

    :returns: ``(values, metrics, detections)``: ``values`` task -> metric
        name -> float; ``metrics`` task -> the merged metric object (for
        per-class results); ``detections`` the primary task's results
        (:meth:`mtlkit.task.Task.results`, e.g. COCO results) of every rank, or
        ``None`` unless ``export_detections`` and the primary task writes some.
    """
    check_sensor_data(model, dataset, "evaluation", measured)
    was_training = model.training
    model.eval()
    metrics: Dict[str, Any] = {}
    for name, task in model.tasks.items():
        metric = task.new_metric()
        if metric is not None:
            metrics[name] = metric
    primary = model.tasks.get(getattr(model, "primary", None))
    results_of = getattr(primary, "results", None)  # optional for tasks not derived from Task
    results: List[Dict[str, Any]] = []
    wrote = False  # whether the primary task writes results at all
    loader = eval_loader(dataset, batch_size, collate_fn, num_workers, dist.world_size(), dist.rank(),
                         pin_memory=device.type == "cuda")
    try:
        for batch in loader:
            batch = move_to(batch, device, non_blocking=True)
            images = batch["image"]
            image_size = (int(images.shape[-2]), int(images.shape[-1]))
            inputs = measured_inputs(model, batch, measured)
            with _eval_autocast(device, amp_dtype):
                outputs = model(images, **inputs)
            preds = model.postprocess(outputs, image_size)
            for name, metric in metrics.items():
                if name in preds:
                    metric.update(preds[name], batch)
            if export_detections and results_of is not None and model.primary in preds:
                part = results_of(preds[model.primary], batch.get("meta") or [], image_size)
                if part is not None:
                    wrote = True
                    results.extend(part)
    finally:
        model.train(was_training)

    if dist.world_size() > 1:
        gathered = dist.all_gather_object({k: _cpu_metric(m) for k, m in metrics.items()})
        merged = gathered[0]
        for other in gathered[1:]:
            for name, metric in merged.items():
                metric.merge(other[name])
        metrics = merged
        if export_detections:
            parts = dist.all_gather_object((wrote, results))
            wrote = any(p[0] for p in parts)
            results = [d for p in parts for d in p[1]]
            results.sort(key=lambda d: (d["image_id"], -d["score"]))
    values = {name: _present({k: float(v) for k, v in metric.compute().items() if _is_number(v)})
              for name, metric in metrics.items()}
    return values, metrics, (results if export_detections and wrote else None)


def _present(figures: Dict[str, float]) -> Dict[str, float]:
    """A task's figures, or ``{}`` when every one is NaN: no sample of the
    split carried its label (a dataset without that modality), so it has no
    metric — reported as absent, not as NaN."""
    if figures and all(math.isnan(v) for v in figures.values()):
        return {}
    return figures


def _cpu_metric(metric: Any) -> Any:
    """Metrics hold CPU data by contract; move tensor attributes just in case."""
    for key, value in list(vars(metric).items()) if hasattr(metric, "__dict__") else []:
        if isinstance(value, torch.Tensor) and value.device.type != "cpu":
            setattr(metric, key, value.cpu())
    return metric


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) or (
        isinstance(v, torch.Tensor) and v.numel() == 1)


def build_eval_model(cfg: ResolvedConfig, checkpoint: Optional[str], device: torch.device,
                     use_ema: Optional[bool] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """The resolved config's model with a checkpoint's weights (EMA ones when
    present), in eval mode on ``device``; returns ``(model, checkpoint meta)``."""
    model = build_model(cfg)
    meta: Dict[str, Any] = {}
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        state = strip_ddp_prefix(model_state(ckpt, use_ema))
        check_finite_state(state, f"the weights of checkpoint {checkpoint}")
        load_model_state(model, state, checkpoint)
        meta = dict(ckpt.get("meta") or {})
        meta["iteration"] = int(ckpt.get("iteration", 0))
    model = model.to(device).eval()
    if cfg["train"]["channels_last"]:
        # the layout the trainer evaluated in: the figures then match its final evaluation exactly
        model = model.to(memory_format=torch.channels_last)
    return model, meta


def evaluate(cfg: Any, checkpoint: Optional[str], out_dir: Optional[str] = None,
             overrides: List[str] = (), split: Optional[str] = None, model: Optional[nn.Module] = None,
             dataset: Any = None, collate_fn=None, plots: bool = True,
             use_ema: Optional[bool] = None,
             measured: Optional[Sequence[str]] = ()) -> Dict[str, Dict[str, float]]:
    """Evaluate a checkpoint on the config's ``data.<eval.split>``.

    :param cfg: the resolved config, or a config path or dict (``overrides``
        applied, validated and resolved once: :func:`mtlkit.config.run_config`).
    :param checkpoint: a ``last.pt`` (``None``: the model as built, for tests).
    :param out_dir: where ``metrics.json``, ``detections.json`` and
        ``per_class_ap.png`` go (nothing is written when ``None``). The folder
        is locked while the evaluation runs (one process at a time), and a
        file of those names there that an earlier evaluation did not write (a
        training run's ``metrics.json``) is never replaced: refused before the
        evaluation starts.
    :param use_ema: ``False`` evaluates the raw weights of a checkpoint that
        also holds EMA weights (default: the EMA weights when present).
    :param measured: the measured modalities to read from the data's sensor
        (default none: the model without its sensor; None: every one the
        model's ``model.measured`` names; see :func:`evaluate_model`).
    :returns: task -> metric name -> value.
    """
    cfg = run_config(cfg, overrides)
    split = split or cfg["eval"]["split"]
    if out_dir is not None:
        _check_eval_out(out_dir, checkpoint)
    with device_session(cfg["train"]) as device, contextlib.ExitStack() as stack:
        if out_dir is not None:
            stack.enter_context(RunLock(out_dir, enabled=dist.is_main()))
            _check_eval_out(out_dir, checkpoint)  # again, now that no other process writes there
        if dataset is None:
            if split not in cfg.data_spec.splits:
                raise ConfigError(f"data.{split} is missing: nothing to evaluate on")
            dataset = build_split(cfg, split, train=False, seed=int(cfg["train"]["seed"]))
        if collate_fn is None:
            collate_fn = collate
        meta: Dict[str, Any] = {}
        if model is None:
            model, meta = build_eval_model(cfg, checkpoint, device, use_ema)

            check_classes(model, dataset, None, meta.get("classes"), meta.get("scenes"), split=split)
        else:
            model = model.to(device).eval()
        amp = amp_dtype_for(cfg["train"], device)
        batch_size, workers = eval_loader_settings(cfg)
        values, metrics, detections = evaluate_model(
            model, dataset, batch_size, collate_fn, device, workers,
            export_detections=out_dir is not None and bool(cfg["eval"]["export_detections"]), amp_dtype=amp,
            measured=measured)
        if out_dir is not None and dist.is_main():
            claim(out_dir, EVAL_OUTPUTS, "eval")
            classes = dataset_attr(dataset, "classes") or meta.get("classes")
            write_eval_outputs(out_dir, values, metrics, detections, classes,
                               iteration=meta.get("iteration"), plots=plots,
                               primary=model.tasks.get(getattr(model, "primary", None)),
                               checkpoint=checkpoint)
        return values


#: what :func:`evaluate` writes into its ``out_dir``
EVAL_OUTPUTS = ("metrics.json", "detections.json", "per_class_ap.png")


def _check_eval_out(out_dir: str, checkpoint: Optional[str]) -> None:
    """``out_dir`` usable, and none of :data:`EVAL_OUTPUTS` there unless an
    earlier evaluation wrote it: a training run's ``metrics.json`` (or a
    user's file) is never replaced."""
    check_out_dir(out_dir)
    found = conflicts(out_dir, EVAL_OUTPUTS, "eval") if os.path.isdir(out_dir) else {}
    if found:
        name, by = next(iter(found.items()))
        origin = (f"written by `mtlkit {by}`" if by else
                  "not written by an earlier `mtlkit eval` (a training run's file, or the user's)")
        default = (f" (the default is {os.path.join(os.path.dirname(os.path.abspath(checkpoint)), 'eval_<split>')})"
                   if checkpoint else "")
        raise OutputExists(f"--out {out_dir} already holds {name}, {origin}: `mtlkit eval` would replace it; "
                           f"choose another --out{default}")


def write_eval_outputs(out_dir: str, values: Mapping[str, Mapping[str, float]], metrics: Mapping[str, Any],
                       detections: Optional[List[Dict[str, Any]]], class_names: Optional[List[str]],
                       iteration: Optional[int] = None, plots: bool = True,
                       primary: Any = None, checkpoint: Optional[str] = None) -> None:
    """``metrics.json``, ``detections.json`` and ``per_class_ap.png`` in ``out_dir``.

    ``primary`` is the primary :class:`~mtlkit.task.Task`: its per-class
    figures (:meth:`~mtlkit.task.Task.per_class`) are written and plotted."""
    os.makedirs(out_dir, exist_ok=True)
    record: Dict[str, Any] = {"metrics": values}
    absent = sorted(task for task, figures in values.items() if not figures)
    if absent:
        record["absent"] = absent  # tasks without any labelled sample in the split
    if iteration is not None:
        record["iteration"] = iteration
    if checkpoint is not None:
        record["checkpoint"] = os.path.abspath(checkpoint)
    per_class: Dict[str, float] = {}
    name = getattr(primary, "name", None)
    if callable(getattr(primary, "per_class", None)) and name in metrics:
        per_class = {str(k): float(v) for k, v in primary.per_class(metrics[name]).items()}
    if per_class:
        record["per_class_ap"] = per_class
    write_json(os.path.join(out_dir, "metrics.json"), record)
    if detections is not None:
        write_json(os.path.join(out_dir, "detections.json"), detections, indent=None)
    if plots and per_class:
        viz.plot_per_class_ap(per_class, os.path.join(out_dir, "per_class_ap.png"),
                              title=f"{name} per-class AP")
