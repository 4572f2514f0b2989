"""What the trainer and the evaluator both need, in one place.

* config: the run's one resolved config comes from
  :func:`mtlkit.config.run_config` (re-exported here with
  :func:`~mtlkit.config.flag_overrides`, :func:`~mtlkit.resolved.resolve_config`,
  :func:`~mtlkit.options.with_defaults` and ``load_run_config``, the old name
  of :func:`mtlkit.config.load_config`); :func:`default_out_dir`;
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
import datetime
import os
import random
from typing import Any, Iterator, Mapping, Optional, Tuple

import numpy as np
import torch

from mtlkit.config import ConfigSource, flag_overrides, run_config  # noqa: F401 - re-exported
from mtlkit.config import load_config as load_run_config  # noqa: F401 - its old name here
from mtlkit.engine import dist
from mtlkit.errors import ConfigError
from mtlkit.options import with_defaults  # noqa: F401 - re-exported
from mtlkit.resolved import ResolvedConfig, resolve_config  # noqa: F401 - re-exported


# -- config -------------------------------------------------------------------

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


def eval_loader_settings(cfg: ResolvedConfig) -> Tuple[int, int]:
    """(batch size, workers) of evaluation: ``eval.batch_size`` /
    ``eval.num_workers``, else ``data.batch_size`` / ``data.num_workers``."""
    ec, data = cfg["eval"], cfg.data_spec
    batch_size = int(ec["batch_size"] or data.batch_size)
    workers = int(ec["num_workers"] if ec["num_workers"] is not None else data.num_workers)
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
