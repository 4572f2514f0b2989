"""Which implementation of the ops runs: the native extension or the PyTorch reference.

``MTLKIT_OPS=torch`` forces the reference, ``MTLKIT_OPS=native`` requires the
extension (an error on first use when it is missing); unset (or ``auto``) means
"native when ``mtlkit._C`` imports, else the reference" with a one-time warning
saying why. Any other value is an error naming the variable: a misspelt
``MTLKIT_OPS=torc`` must not run the native ops without a word.
"""

from __future__ import annotations

import os
import warnings

import torch

from mtlkit.ops import _native
from mtlkit.ops._checks import OpsValueError

_OPS = ("box_iou", "nms", "batched_nms", "ssd_match", "ssd_decode", "ssd_postprocess")

#: accepted values of MTLKIT_OPS ("" = unset)
_CHOICES = ("", "auto", "native", "torch")

_state: dict = {}


def _import_extension() -> str | None:
    """Import ``mtlkit._C`` and register its Python-side pieces; return the error or None."""
    try:
        # optional: the native extension, absent when it was not built (registers torch.ops.mtlkit.*)
        import mtlkit._C  # noqa: F401
    except Exception as exc:  # ImportError, OSError (undefined symbol), ...
        return f"{type(exc).__name__}: {exc}"
    missing = [op for op in _OPS if not hasattr(torch.ops.mtlkit, op)]
    if missing:
        return f"mtlkit._C does not define {', '.join(missing)} (stale build? reinstall)"
    _native.register_python_kernels()
    return None


def _resolve() -> dict:
    if _state:
        return _state
    env = os.environ.get("MTLKIT_OPS", "").strip().lower()
    if env not in _CHOICES:
        raise OpsValueError(
            f"MTLKIT_OPS: expected one of {', '.join(_CHOICES[1:])} (or unset), "
            f"got {os.environ['MTLKIT_OPS']!r}"
        )
    if env == "torch":
        _state.update(active="torch", error="MTLKIT_OPS=torch")
        return _state
    error = _import_extension()
    if error is None:
        _state.update(active="native", error=None)
    elif env == "native":
        _state.update(active="native", error=error)  # reported on first use
    else:
        warnings.warn(
            f"mtlkit.ops: the native extension mtlkit._C is unavailable ({error}); "
            "using the pure-PyTorch reference ops (slower, same results)",
            RuntimeWarning,
            stacklevel=3,
        )
        _state.update(active="torch", error=error)
    return _state


def backend() -> str:
    """The active backend: ``"native"`` or ``"torch"``."""
    return _resolve()["active"]


def native_error() -> str | None:
    """Why the native extension is not in use (None when it is): the import
    error, or ``"MTLKIT_OPS=torch"``."""
    return _resolve()["error"]


def choose(requested: str | None) -> str:
    """Validate a ``backend=`` argument; None means the active backend."""
    state = _resolve()
    if requested is None:
        requested = state["active"]
    if requested not in ("native", "torch"):
        raise OpsValueError(f"backend: expected 'native', 'torch' or None, got {requested!r}")
    if requested == "native" and not hasattr(torch.ops.mtlkit, "nms"):
        error = state["error"] or _import_extension()
        if error is not None:
            raise RuntimeError(f"mtlkit.ops backend 'native' requested but mtlkit._C is unavailable: {error}")
    return requested


_warned_devices: set = set()


def native_supports(op: str, device: torch.device) -> bool:
    """Whether ``torch.ops.mtlkit.<op>`` has a kernel for ``device`` (warns once when not)."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device.type)
    ok = key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"mtlkit::{op}", key)
    if not ok and device.type not in _warned_devices:
        _warned_devices.add(device.type)
        warnings.warn(
            f"mtlkit._C has no {device.type} kernels (built without them); "
            f"using the PyTorch reference ops on {device.type}",
            RuntimeWarning,
            stacklevel=3,
        )
    return ok
