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

import contextlib
import os
import random
import warnings
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch

from mtlkit.errors import DataError
from mtlkit.utils.io import atomic_write, remove_stale_temps
from mtlkit.utils.paths import kind_of, not_a_file

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


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without changing the global RNG states (evaluation during
    training: what training draws next stays the same)."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def save_checkpoint(state: Mapping[str, Any], path: str) -> None:
    """``torch.save`` ``state`` to ``path`` atomically; first remove the
    temporary files of ``path`` a killed writer left (a SIGKILL mid-write
    leaves ``.last.pt.<host>.<pid>.<random>.tmp``)."""
    remove_stale_temps(path)
    with atomic_write(path, "wb") as handle:
        torch.save(dict(state, format=FORMAT), handle)


def load_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; one clear line for a
    missing, empty, foreign or unreadable file (a folder, a pipe or a device
    is named as such, never opened), and for an ``iteration`` that is not a
    number of steps. Temporary files a killed writer left beside it are
    removed (:func:`mtlkit.utils.io.remove_stale_temps`)."""
    path = os.fspath(path)
    kind = kind_of(path)
    if kind == "folder":
        raise DataError(f"checkpoint {path} is a directory, expected a file such as OUT/last.pt")
    if kind == "missing":
        raise DataError(f"checkpoint not found: {path}")
    reason = not_a_file(path, "a checkpoint file such as OUT/last.pt")
    if reason is not None:
        raise DataError(f"checkpoint {reason}")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path} is not a checkpoint: the file is empty (0 bytes)")
    remove_stale_temps(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickle protocols
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
        raise DataError(f"cannot read checkpoint {path}: not a checkpoint ({_load_reason(exc)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), Mapping):
        raise DataError(f"{path} is not an mtlkit checkpoint (no 'model' state dict)")
    if "iteration" in ckpt:
        ckpt["iteration"] = _iteration(ckpt["iteration"], path)
    return ckpt


def _iteration(value: Any, path: str) -> int:
    """The checkpoint's ``iteration`` as an int >= 0 (a 0-d integer tensor is accepted)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(f"checkpoint {path}: 'iteration' is {value!r}, expected a number of optimiser steps "
                        f">= 0 (a damaged or hand-edited checkpoint)")
    return value


#: what a checkpoint needs to continue a run exactly (a weights-only file has only "model")
RESUME_KEYS = ("iteration", "optimizer", "rng", "data")


def check_resumable(ckpt: Mapping[str, Any], path: str) -> None:
    """Refuse to resume from a checkpoint lacking the states a resume
    restores (a weights-only file, e.g. ``mtlkit pretrain``'s, which
    ``mtlkit eval`` accepts): one line naming what is missing."""
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise DataError(f"checkpoint {path} holds weights only (no {', '.join(repr(k) for k in missing)}): it "
                        f"can be evaluated but not resumed; start a new run (weights for initialisation "
                        f"go in model.backbone.weights)")
    if not isinstance(ckpt.get("data"), Mapping) or not all(
            isinstance(ckpt["data"].get(k), int) for k in ("epoch", "batch", "batch_size", "world_size")):
        raise DataError(f"checkpoint {path}: its 'data' position is damaged (expected epoch, batch, batch_size, "
                        f"world_size as integers)")


def _load_reason(exc: BaseException) -> str:
    """What ``torch.load(weights_only=True)`` found wrong, without its advice
    to load with ``weights_only=False`` (which would run the file's code) and
    the rest of its boilerplate."""
    text = str(exc)
    sentences = [p.strip().rstrip(".") for line in text.replace("WeightsUnpickler error:", "\n").splitlines()
                 for p in line.split(". ")]
    detail = next((p for p in sentences if p and not _boilerplate(p)), "")
    if "weights only load failed" in text.lower() or "WeightsUnpickler" in text:
        if "global" in detail.lower():
            return (f"it holds other objects than tensors and plain Python types, refused unloaded: "
                    f"{detail}")
        return f"not a PyTorch file of tensors and plain Python types: {detail or 'unreadable'}"
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


#: sentences of torch's load errors that explain torch, not the file (and the
#: advice to run the file's code: never shown)
_BOILERPLATE = ("weights only load failed", "weights_only", "please file an issue", "check the documentation",
                "if you are seeing this error", "this can happen if", "arbitrary code execution",
                "internal miniz error", "only if you got the file", "in pytorch 2.6")


def _boilerplate(sentence: str) -> bool:
    low = sentence.lower()
    return any(b in low for b in _BOILERPLATE)


def _first_line(exc: BaseException) -> str:
    """``Type: message`` on one line: torch's multi-line messages joined (a
    load_state_dict error's detail is on its second line)."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    if len(text) > 400:
        text = text[:400] + " ..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def non_finite(state: Mapping[str, Any]) -> Dict[str, str]:
    """The floating tensors of a state dict holding NaN or inf: name -> "NaN" / "inf" / "NaN, inf"."""
    bad: Dict[str, str] = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() \
                and value.device.type != "meta" and not bool(torch.isfinite(value).all()):
            kinds = [k for k, hit in (("NaN", bool(torch.isnan(value).any())),
                                      ("inf", bool(torch.isinf(value).any()))) if hit]
            bad[str(name)] = ", ".join(kinds)
    return bad


def describe_names(names: Sequence[str], limit: int = 3) -> str:
    """'a, b, c and 4 more' (the first ``limit`` names, then how many others)."""
    names = list(names)
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_finite_state(state: Mapping[str, Any], what: str) -> None:
    """Refuse weights holding NaN / inf: ``what`` names them in the message."""
    bad = non_finite(state)
    if bad:
        total = sum(1 for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point())
        raise DataError(f"{what} hold non-finite values (NaN or inf) in {len(bad)} of {total} tensors "
                        f"({describe_names(sorted(bad))}): not usable weights")


def check_finite_optimizer(optimizer_state: Any, path: str) -> None:
    """Refuse to resume from an optimiser state holding NaN / inf (momentum,
    Adam's moments): the first step would make every weight NaN, and the run
    would then call this checkpoint "the last good one"."""
    if not isinstance(optimizer_state, Mapping) or not isinstance(optimizer_state.get("state"), Mapping):
        return
    tensors = {f"optimizer.state.{param}.{key}": value
               for param, slots in optimizer_state["state"].items() if isinstance(slots, Mapping)
               for key, value in slots.items()}
    bad = non_finite(tensors)
    if bad:
        raise DataError(f"checkpoint {path}: the optimiser state holds non-finite values (NaN or inf) in "
                        f"{len(bad)} of {len(tensors)} tensors ({describe_names(sorted(bad))}): the run "
                        f"diverged before this checkpoint was saved; it cannot be resumed (start a new "
                        f"run, with a lower train.optimizer.lr or train.clip_grad_norm)")


def load_model_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str) -> None:
    """``model.load_state_dict(state)`` with one line naming the missing /
    unexpected keys and the shape mismatches (a few, and how many more)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k, v in state.items() if k in own and isinstance(v, torch.Tensor)
                  and tuple(v.shape) != tuple(own[k].shape)]
    not_tensors = [k for k in state if k in own and not isinstance(state[k], torch.Tensor)]
    if not_tensors:
        first = not_tensors[0]
        raise DataError(f"checkpoint {path}: {len(not_tensors)} weight(s) are not tensors "
                        f"({describe_names(not_tensors)}; '{first}' is {type(state[first]).__name__})")
    # load_state_dict casts quietly: integer weights would load as whole numbers (metrics 0)
    wrong_kind = [k for k, v in state.items() if k in own and own[k].is_floating_point()
                  and not v.is_floating_point()]
    if wrong_kind:
        first = wrong_kind[0]
        raise DataError(f"checkpoint {path}: {len(wrong_kind)} weight(s) of another type than the model's "
                        f"({describe_names(wrong_kind)}: e.g. '{first}' is {state[first].dtype} in the "
                        f"checkpoint, {own[first].dtype} in the model): not usable weights")
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {describe_names(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {describe_names(unexpected)}")
        if mismatched:
            first = mismatched[0]
            parts.append(f"{len(mismatched)} of another shape: {describe_names(mismatched)} (e.g. '{first}' "
                         f"{tuple(state[first].shape)} in the checkpoint, {tuple(own[first].shape)} in the model)")
        raise DataError(f"checkpoint {path} does not fit the config's model (was it trained with another "
                        f"config?): " + "; ".join(parts))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"checkpoint {path} does not fit the config's model: {_first_line(exc)}") from None


def model_state(ckpt: Mapping[str, Any], use_ema: Optional[bool] = None) -> Dict[str, torch.Tensor]:
    """The weights to evaluate: the EMA weights when the checkpoint has them
    (and ``use_ema`` is not ``False``), else the raw model weights."""
    ema = ckpt.get("ema")
    if ema and use_ema is not False and ema.get("weights"):
        return dict(ema["weights"])
    return dict(ckpt["model"])


def strip_ddp_prefix(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
