"""Evaluation: run a model over a dataset, update every task's metric, merge
the metrics across DDP ranks and compute them.

:func:`evaluate_model` is the loop (used by the trainer and ``mtlkit eval``);
:func:`detections_to_coco` turns detection predictions into COCO results
(``detections.json``), boxes mapped back to each image's original size.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from mtlkit.engine import dist
from mtlkit.engine.data import eval_loader
from mtlkit.engine.precision import amp_dtype_for, autocast


def move_to(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Tensors (also inside lists / dicts) moved to ``device``; the rest kept."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: (v if k == "meta" else move_to(v, device, non_blocking)) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device, non_blocking) for v in batch)
    return batch


def is_detection_prediction(pred: Any) -> bool:
    """A list of per-image dicts with ``boxes``/``scores``/``labels``."""
    return isinstance(pred, list) and (len(pred) == 0 or (isinstance(pred[0], Mapping)
                                                          and "boxes" in pred[0]))


def scale_boxes(boxes: torch.Tensor, from_size: Tuple[int, int], to_size: Tuple[int, int]) -> torch.Tensor:
    """Boxes (K, 4) xyxy in pixels of an image of ``from_size`` (H, W) mapped
    to ``to_size`` (H, W)."""
    sy = float(to_size[0]) / float(from_size[0])
    sx = float(to_size[1]) / float(from_size[1])
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def detections_to_coco(preds: List[Mapping[str, torch.Tensor]], metas: List[Mapping[str, Any]],
                       image_size: Tuple[int, int]) -> List[Dict[str, Any]]:
    """COCO results (``image_id``, ``category_id`` = label 1..C, ``bbox``
    [x, y, w, h] in original-image pixels, ``score``) for one batch."""
    out: List[Dict[str, Any]] = []
    for i, (pred, meta) in enumerate(zip(preds, metas)):
        image_id = meta.get("id", i) if isinstance(meta, Mapping) else i
        orig = meta.get("orig_size") if isinstance(meta, Mapping) else None
        boxes = pred["boxes"].detach().float().cpu()
        if orig is not None:
            boxes = scale_boxes(boxes, image_size, tuple(int(s) for s in orig))
        for box, score, label in zip(boxes.tolist(), pred["scores"].detach().float().cpu().tolist(),
                                     pred["labels"].detach().cpu().tolist()):
            x0, y0, x1, y1 = box
            out.append({"image_id": int(image_id), "category_id": int(label),
                        "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
                        "score": round(float(score), 5)})
    return out


def _eval_autocast(device: torch.device, amp_dtype: Optional[torch.dtype]):
    """Evaluation autocasts on CUDA only: on CPU the reported figures are float32's."""
    return autocast(device, amp_dtype if device.type == "cuda" else None)


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset, batch_size: int, collate_fn, device: torch.device,
                   num_workers: int = 0, export_detections: bool = False,
                   amp_dtype: Optional[torch.dtype] = None) -> Tuple[Dict[str, Dict[str, float]],
                                                                    Dict[str, Any],
                                                                    List[Dict[str, Any]]]:
    """Evaluate ``model`` (a ``MultiTaskModel``, not DDP-wrapped) on ``dataset``.

    Under DDP each rank evaluates its share (:func:`mtlkit.engine.data.eval_loader`)
    and the metric objects are gathered with ``all_gather_object`` and merged.

    :returns: ``(values, metrics, detections)``: ``values`` task -> metric
        name -> float; ``metrics`` task -> the merged metric object (for
        per-class results); ``detections`` the COCO results of every rank
        (``None`` unless ``export_detections`` and the primary task detects).
    """
    was_training = model.training
    model.eval()
    metrics: Dict[str, Any] = {}
    for name, task in model.tasks.items():
        metric = task.new_metric()
        if metric is not None:
            metrics[name] = metric
    detections: Optional[List[Dict[str, Any]]] = [] if export_detections else None
    saw_detection = False
    loader = eval_loader(dataset, batch_size, collate_fn, num_workers, dist.world_size(), dist.rank(),
                         pin_memory=device.type == "cuda")
    try:
        for batch in loader:
            batch = move_to(batch, device, non_blocking=True)
            images = batch["image"]
            image_size = (int(images.shape[-2]), int(images.shape[-1]))
            with _eval_autocast(device, amp_dtype):
                outputs = model(images)
            preds = model.postprocess(outputs, image_size)
            for name, metric in metrics.items():
                if name in preds:
                    metric.update(preds[name], batch)
            if export_detections:
                primary = preds.get(getattr(model, "primary", None))
                if is_detection_prediction(primary):
                    saw_detection = True
                    detections.extend(detections_to_coco(primary, batch.get("meta") or [], image_size))
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
            parts = dist.all_gather_object((saw_detection, detections))
            saw_detection = any(p[0] for p in parts)
            detections = [d for p in parts for d in p[1]]
            detections.sort(key=lambda d: (d["image_id"], -d["score"]))
    if not saw_detection:
        detections = None
    values = {name: {k: float(v) for k, v in metric.compute().items() if _is_number(v)}
              for name, metric in metrics.items()}
    return values, metrics, detections


def _cpu_metric(metric: Any) -> Any:
    """Metrics hold CPU data by contract; move tensor attributes just in case."""
    for key, value in list(vars(metric).items()) if hasattr(metric, "__dict__") else []:
        if isinstance(value, torch.Tensor) and value.device.type != "cpu":
            setattr(metric, key, value.cpu())
    return metric


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) or (
        isinstance(v, torch.Tensor) and v.numel() == 1)


def per_class_ap(metric: Any, class_names: Optional[List[str]] = None) -> Dict[str, float]:
    """Per-class AP of a detection metric, by class name, when it offers one:
    a ``per_class()`` method (name or label -> AP), a ``per_class`` attribute /
    ``per_class_ap`` key, or compute() keys ``AP/<class>``."""
    result: Any = None
    for attr in ("per_class_ap", "per_class"):
        candidate = getattr(metric, attr, None)
        if candidate is not None:
            result = candidate() if callable(candidate) else candidate
            break
    if result is None:
        values = metric.compute()
        result = values.get("per_class_ap") or values.get("per_class") or {
            k.split("/", 1)[1]: v for k, v in values.items() if isinstance(k, str) and k.startswith("AP/")}
    if isinstance(result, Mapping):
        out = {}
        for k, v in result.items():
            if isinstance(k, int) and class_names and 1 <= k <= len(class_names):
                k = class_names[k - 1]
            out[str(k)] = float(v)
        return out
    if isinstance(result, (list, tuple)) or isinstance(result, torch.Tensor):
        vals = [float(v) for v in result]
        names = class_names if class_names and len(class_names) == len(vals) else \
            [str(i + 1) for i in range(len(vals))]
        return dict(zip(names, vals))
    return {}


def build_eval_model(cfg: Mapping[str, Any], checkpoint: Optional[str], device: torch.device,
                     use_ema: Optional[bool] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """The config's model with a checkpoint's weights (EMA ones when present),
    in eval mode on ``device``; returns ``(model, checkpoint meta)``."""
    from mtlkit import build_model
    from mtlkit.engine.checkpoint import (check_finite_state, load_checkpoint, load_model_state,
                                          model_state, strip_ddp_prefix)

    model = build_model(cfg)
    meta: Dict[str, Any] = {}
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        state = strip_ddp_prefix(model_state(ckpt, use_ema))
        check_finite_state(state, f"the weights of checkpoint {checkpoint}")
        load_model_state(model, state, checkpoint)
        meta = dict(ckpt.get("meta") or {})
        meta["iteration"] = int(ckpt.get("iteration", 0))
    return model.to(device).eval(), meta


def evaluate(cfg: Any, checkpoint: Optional[str], out_dir: Optional[str] = None,
             overrides: List[str] = (), split: Optional[str] = None, model: Optional[nn.Module] = None,
             dataset: Any = None, collate_fn=None, plots: bool = True,
             use_ema: Optional[bool] = None) -> Dict[str, Dict[str, float]]:
    """Evaluate a checkpoint on the config's ``data.<eval.split>``.

    :param cfg: config path or dict (``overrides`` applied, validated).
    :param checkpoint: a ``last.pt`` (``None``: the model as built, for tests).
    :param out_dir: where ``metrics.json``, ``detections.json`` and
        ``per_class_ap.png`` go (nothing is written when ``None``).
    :param use_ema: ``False`` evaluates the raw weights of a checkpoint that
        also holds EMA weights (default: the EMA weights when present).
    :returns: task -> metric name -> value.
    """
    from mtlkit.engine.trainer import (dataset_attr, load_run_config, resolve_config,
                                       select_device, write_eval_outputs, apply_num_threads)
    from mtlkit.errors import ConfigError

    cfg = resolve_config(load_run_config(cfg, overrides))
    ec, data = cfg["eval"], cfg.get("data") or {}
    split = split or ec["split"]
    apply_num_threads(cfg["train"]["num_threads"])
    device = select_device(cfg["train"]["device"])
    created = dist.init_from_env(device.type)
    try:
        if dist.world_size() > 1 and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank())
        if dataset is None:
            if data.get(split) is None:
                raise ConfigError(f"data.{split} is missing: nothing to evaluate on")
            from mtlkit.data import build_split

            dataset = build_split(data, split, train=False, seed=int(cfg["train"]["seed"]))
        if collate_fn is None:
            from mtlkit.data import collate as collate_fn
        meta: Dict[str, Any] = {}
        if out_dir is not None:
            from mtlkit.utils.io import check_out_dir

            check_out_dir(out_dir)
        if model is None:
            model, meta = build_eval_model(cfg, checkpoint, device, use_ema)
            from mtlkit.engine.checks import check_classes

            check_classes(model, dataset, None, meta.get("classes"), split=split)
        else:
            model = model.to(device).eval()
        amp = amp_dtype_for(cfg["train"], device)
        values, metrics, detections = evaluate_model(
            model, dataset, int(ec["batch_size"] or data.get("batch_size", 8)), collate_fn, device,
            int(ec["num_workers"] if ec["num_workers"] is not None else data.get("num_workers", 0)),
            export_detections=out_dir is not None and bool(ec["export_detections"]), amp_dtype=amp)
        if out_dir is not None and dist.is_main():
            classes = dataset_attr(dataset, "classes") or meta.get("classes")
            write_eval_outputs(out_dir, values, metrics, detections, classes,
                               iteration=meta.get("iteration"), plots=plots,
                               primary=getattr(model, "primary", None), checkpoint=checkpoint)
        return values
    finally:
        if created:
            dist.shutdown()
