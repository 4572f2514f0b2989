"""Checkpoints: everything needed to resume a run exactly, loadable with
``torch.load(path, weights_only=True)``.

Layout of ``last.pt`` (every value a tensor or a plain Python type)::

    {"format": 1, "iteration": int (optimiser steps done),
     "model": state_dict, "optimizer": state_dict, "scheduler": dict,
     "scaler": dict | None, "ema": dict | None,
     "rng": [one per rank: {"python": [version, [ints], gauss], "numpy": {...},
              "torch": uint8 tensor, "cuda": [uint8 tensors]}],
     "data": {"epoch", "batch", "seed", "batch_size", "world_size"},
     "evaluated": bool (the evaluation of this iteration is done), "last_eval": {task: {..}},
     "meta": {"classes": [...], "scenes": [...], "tasks": [...], "config": yaml str,
              "mtlkit": version}}

No per-worker data RNG is stored: augmentation draws from
``(seed, epoch, index)``, so the data position is all a resume needs.

Written atomically (temp file + fsync + rename): a run killed at any moment
leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import os
import random
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch

from mtlkit.errors import DataError
from mtlkit.utils.io import atomic_write

FORMAT = 1


def rng_state() -> Dict[str, Any]:
    """The global RNG states (python, numpy, torch, CUDA) as plain types / tensors."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "python": [int(version), [int(x) for x in internal], gauss],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), int(n["pos"]),
                         int(n["has_gauss"]), float(n["cached"])))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(state: Mapping[str, Any], path: str) -> None:
    """``torch.save`` ``state`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        torch.save(dict(state, format=FORMAT), handle)


def load_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; clear errors for a missing
    or unreadable file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
        raise DataError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise DataError(f"{path} is not an mtlkit checkpoint (no 'model' entry)")
    return ckpt


def model_state(ckpt: Mapping[str, Any], use_ema: Optional[bool] = None) -> Dict[str, torch.Tensor]:
    """The weights to evaluate: the EMA weights when the checkpoint has them
    (and ``use_ema`` is not ``False``), else the raw model weights."""
    ema = ckpt.get("ema")
    if ema and use_ema is not False and ema.get("weights"):
        return dict(ema["weights"])
    return dict(ckpt["model"])


def strip_ddp_prefix(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
