"""Numeric precision and memory layout of the training step.

``train.amp`` turns on autocast: on CUDA in ``train.amp_dtype`` (float16 with
a GradScaler, or bfloat16), on CPU always in bfloat16 (CPUs with AVX512-BF16
or AMX run bf16 convolutions about twice as fast as float32; float16 autocast
on CPU is not faster). ``train.channels_last`` stores the model's 4-D weights
and the input batch as NHWC, the layout oneDNN's convolutions prefer.
Evaluation on CPU stays in float32 (see :mod:`mtlkit.engine.evaluator`).
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Mapping, Optional

import torch


def amp_dtype_for(train_cfg: Mapping, device: torch.device,
                  note: Optional[Callable[[str], None]] = None) -> Optional[torch.dtype]:
    """The autocast dtype of the ``train`` section on ``device`` (None: no autocast)."""
    if not train_cfg["amp"]:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if train_cfg["amp_dtype"] == "bfloat16" else torch.float16
    if device.type == "cpu":
        if train_cfg["amp_dtype"] != "bfloat16" and note is not None:
            note(f"train.amp_dtype={train_cfg['amp_dtype']} is CUDA-only: autocast on CPU uses bfloat16")
        return torch.bfloat16
    if note is not None:
        note(f"train.amp is ignored on device type {device.type!r}")
    return None


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    """``torch.autocast`` on ``device`` in ``dtype``, or a no-op when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def to_memory_format(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(B, C, H, W) images in NHWC storage when ``channels_last``, else unchanged."""
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images
