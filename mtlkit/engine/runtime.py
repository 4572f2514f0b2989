"""What the trainer and the evaluator both need, in one place.

* config: :func:`run_config` (read + override + validate + resolve, once),
  :func:`flag_overrides` (command-line flags as overrides), :func:`load_run_config`
  (read + validate), :func:`resolve_config` (complete ``train`` / ``eval``
  sections), :func:`with_defaults`;
* process: :func:`apply_num_threads`, :func:`select_device`,
  :func:`device_session` (device + torch.distributed group from the
  environment), :func:`seed_everything`;
* data: :func:`move_to` (a batch to the device), :func:`eval_loader_settings`
  (``eval.batch_size`` / ``eval.num_workers`` with their ``data.*`` fallbacks),
  :func:`dataset_attr` (``classes`` / ``scenes`` through dataset wrappers).

The AMP dtype choice is :func:`mtlkit.engine.precision.amp_dtype_for`. This
module imports neither the trainer nor the evaluator (both import it).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import random
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from mtlkit.engine import dist
from mtlkit.errors import ConfigError

ConfigSource = Union[str, "os.PathLike[str]", Mapping[str, Any]]


# -- config -------------------------------------------------------------------
def with_defaults(defaults: Mapping[str, Any], section: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``section`` merged over ``defaults`` (nested dicts merged key by key)."""
    out = copy.deepcopy(dict(defaults))
    for key, value in (section or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and out[key]:
            out[key] = with_defaults(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_run_config(cfg: ConfigSource, overrides: List[str] = ()) -> Dict[str, Any]:
    """A config path or dict with ``overrides`` applied, validated once
    (:func:`mtlkit.config.load_config`)."""
    from mtlkit.config import load_config

    return load_config(cfg, list(overrides))


def run_config(cfg: ConfigSource, overrides: List[str] = ()) -> Dict[str, Any]:
    """The one resolved config of a run: ``cfg`` (a path or a dict) with
    ``overrides`` applied, validated, and its ``train`` / ``eval`` sections
    completed (:func:`resolve_config`). Command-line flags are overrides
    too (:func:`flag_overrides`), so every value is checked by the same pass."""
    return resolve_config(load_run_config(cfg, overrides))


def flag_overrides(section: str, **values: Any) -> List[str]:
    """``section.key=value`` overrides of the values that are not None, the
    value written as JSON (which YAML reads back as the same value):
    ``flag_overrides("train", iters=5, seed=None)`` -> ``["train.iters=5"]``."""
    return [f"{section}.{key}={json.dumps(value.item() if hasattr(value, 'item') else value)}"
            for key, value in values.items() if value is not None]


def resolve_config(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """The config with complete ``train`` and ``eval`` sections: the engine's
    defaults, plus the post-processing options the primary task declares
    (:func:`mtlkit.config.section_schema`)."""
    from mtlkit.config import section_schema

    cfg = copy.deepcopy(dict(cfg))
    for section in ("train", "eval"):
        cfg[section] = with_defaults(section_schema(section, cfg.get("model")).defaults, cfg.get(section))
    return cfg


def default_out_dir(config_path: Optional[str]) -> str:
    """``runs/<config stem>-<timestamp>``."""
    stem = os.path.splitext(os.path.basename(config_path))[0] if config_path else "run"
    return os.path.join("runs", f"{stem}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")


# -- process ------------------------------------------------------------------
def apply_num_threads(n: int) -> None:
    """``train.num_threads``: set torch's intra-op threads (0 keeps the default).

    Oversubscribed OpenMP pools are pathological: with 2 threads on 2 cores
    shared with a rendering data worker, a small model's step was measured
    15x slower than with 1 thread."""
    if int(n) > 0:
        torch.set_num_threads(int(n))


def select_device(name: str) -> torch.device:
    """``train.device`` (auto | cpu | cuda) -> a device."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@contextlib.contextmanager
def device_session(train_cfg: Mapping[str, Any]) -> Iterator[torch.device]:
    """Threads and device of a resolved ``train`` section, and the
    torch.distributed group when launched by ``torchrun`` (created here, shut
    down on exit); yields the device (this rank's GPU under DDP on CUDA)."""
    apply_num_threads(train_cfg["num_threads"])
    device = select_device(train_cfg["device"])
    created = dist.init_from_env(device.type)
    try:
        if dist.world_size() > 1 and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank())
        yield device
    finally:
        if created:
            dist.shutdown()


def seed_everything(seed: int) -> None:
    """Python, numpy and torch RNGs from one seed."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


# -- data ---------------------------------------------------------------------
def move_to(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Tensors (also inside lists / dicts) moved to ``device``; ``meta`` and
    non-tensors kept as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: (v if k == "meta" else move_to(v, device, non_blocking)) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device, non_blocking) for v in batch)
    return batch


def eval_loader_settings(cfg: Mapping[str, Any]) -> Tuple[int, int]:
    """(batch size, workers) of evaluation: ``eval.batch_size`` /
    ``eval.num_workers``, else ``data.batch_size`` (8) / ``data.num_workers`` (0)."""
    ec, data = cfg["eval"], cfg.get("data") or {}
    batch_size = int(ec["batch_size"] or data.get("batch_size", 8))
    workers = int(ec["num_workers"] if ec["num_workers"] is not None else data.get("num_workers", 0))
    return batch_size, workers


def dataset_attr(dataset: Any, name: str) -> Optional[Any]:
    """``dataset.<name>`` looked up through wrappers (``.dataset``)."""
    for _ in range(5):
        if dataset is None:
            return None
        value = getattr(dataset, name, None)
        if value is not None:
            return list(value)
        dataset = getattr(dataset, "dataset", None)
    return None
