"""Input validation shared by the reference and native paths of ``mtlkit.ops``.

Every check raises :class:`OpsValueError` / :class:`OpsTypeError`, which are both
``mtlkit.errors.MtlkitError`` (user-input errors) and the builtin ``ValueError`` /
``TypeError``, with a message naming the argument and what was expected.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from mtlkit.errors import MtlkitError

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class OpsValueError(MtlkitError, ValueError):
    """An op argument has the wrong shape, length or value."""


class OpsTypeError(MtlkitError, TypeError):
    """An op argument has the wrong type, dtype or device."""


def tensor(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise OpsTypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def float_tensor(name: str, x) -> torch.Tensor:
    """Check ``x`` is a floating tensor; half/bfloat16 are upcast to float32."""
    tensor(name, x)
    if x.dtype not in _FLOAT_DTYPES:
        raise OpsTypeError(f"{name}: expected a floating point tensor, got dtype {x.dtype}")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x


def int_tensor(name: str, x) -> torch.Tensor:
    tensor(name, x)
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise OpsTypeError(f"{name}: expected an integer tensor, got dtype {x.dtype}")
    return x


def boxes(name: str, x, *, leading: int | None = None) -> torch.Tensor:
    """A floating tensor of shape (..., 4); ``leading`` fixes the number of leading dims."""
    x = float_tensor(name, x)
    if x.dim() == 0 or x.shape[-1] != 4 or (leading is not None and x.dim() != leading + 1):
        want = "(N, 4)" if leading in (None, 1) else "(" + ", ".join(["*"] * leading) + ", 4)"
        raise OpsValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    return x


def vector(name: str, x, length: int, length_name: str) -> torch.Tensor:
    if x.dim() != 1 or x.shape[0] != length:
        raise OpsValueError(
            f"{name}: expected shape ({length},) to match {length_name}, got {tuple(x.shape)}"
        )
    return x


def same_device(**tensors: torch.Tensor) -> torch.device:
    devices = {n: t.device for n, t in tensors.items()}
    first = next(iter(devices.values()))
    if any(d != first for d in devices.values()):
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise OpsValueError(f"all tensors must be on the same device, got {listed}")
    return first


def common_float(*xs: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32."""
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def threshold(name: str, value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise OpsValueError(f"{name}: expected a number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OpsTypeError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise OpsValueError(f"{name}: expected a number, got NaN")
    return value


def count(name: str, value, allow_none: bool = True) -> int:
    """A positive int (or None/<=0 meaning 'no limit', returned as -1)."""
    if value is None and allow_none:
        return -1
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpsTypeError(f"{name}: expected an int or None, got {type(value).__name__}")
    return value if value > 0 else -1


def variances(value: Sequence[float]) -> tuple[float, float]:
    try:
        v0, v1 = (float(v) for v in value)
    except (TypeError, ValueError):
        raise OpsValueError(f"variances: expected two numbers, got {value!r}") from None
    if not (v0 > 0 and v1 > 0) or math.isinf(v0) or math.isinf(v1):
        raise OpsValueError(f"variances: expected two positive finite numbers, got {value!r}")
    return v0, v1


def unit_threshold(name: str, value) -> float:
    """A number in [0, 1] (an IoU threshold): below 0 every pair would
    suppress / match, above 1 none; NaN is refused by :func:`threshold`."""
    value = threshold(name, value)
    if not 0.0 <= value <= 1.0:
        raise OpsValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return value


#: class labels beyond this cannot index anything (int32 range)
MAX_LABEL = 2**31 - 1


def labels_range(name: str, labels: Sequence[torch.Tensor], num_classes: int | None) -> None:
    """Ground-truth labels in 1..num_classes (0 is background), one sync for all images."""
    present = [l.reshape(-1) for l in labels if l.numel()]
    if not present or present[0].device.type == "meta":
        return
    flat = torch.cat([l.to(torch.int64) for l in present])
    lo, hi = (int(v) for v in torch.stack([flat.min(), flat.max()]).tolist())
    top = MAX_LABEL if num_classes is None else int(num_classes)
    if lo < 1 or hi > top:
        want = f"1..{num_classes}" if num_classes is not None else "positive class labels (0 is background)"
        raise OpsValueError(f"{name}: expected labels in {want}, got values from {lo} to {hi}")


def finite(name: str, x: torch.Tensor) -> None:
    """Refuse NaN / inf values (one sync)."""
    if x.numel() and x.device.type != "meta" and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise OpsValueError(f"{name}: holds {bad} NaN or inf value(s); expected finite numbers "
                            f"(a diverged model?)")


def not_meta(op: str, x: torch.Tensor) -> None:
    """Ops whose output size depends on the values cannot run on the meta device."""
    if x.device.type == "meta":
        raise OpsValueError(f"{op}: meta tensors are not supported (the number of boxes it returns depends "
                            f"on the values, which meta tensors do not have)")
