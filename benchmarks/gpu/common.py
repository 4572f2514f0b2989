"""What every stage of the GPU check shares: result rows written as they come,
device timing, peak memory and the count of host synchronisations.

A stage appends :class:`Row` s to a :class:`Results` file; the file is
rewritten atomically after every row, so a stage killed at its time limit
still leaves everything it measured.
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import tempfile
import time
import traceback
import warnings
from typing import Any, Callable, Dict, List, Optional

import torch

#: files whose frames name where a synchronisation happened (innermost first)
SOURCE_MARKERS = (os.sep + "mtlkit" + os.sep, os.sep + "plugins" + os.sep)


def write_json_atomic(path: str, payload: Any) -> None:
    """``payload`` as JSON at ``path`` (temp file + rename: never half written)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Results:
    """The rows of one stage, saved to ``path`` after each :meth:`add`.

    A row: ``item`` (what was measured), ``result`` (the figure, as text),
    ``reference`` (what it is compared with, as text), ``ok`` (True / False /
    None when there is no pass mark) and ``data`` (the numbers, for the JSON).
    """

    def __init__(self, stage: str, path: Optional[str]):
        self.stage, self.path = stage, path
        self.rows: List[Dict[str, Any]] = []
        self.started = time.time()

    def add(self, item: str, result: str, reference: str = "", ok: Optional[bool] = None,
            **data: Any) -> Dict[str, Any]:
        row = {"stage": self.stage, "item": item, "result": result, "reference": reference,
               "ok": ok, "data": data}
        self.rows.append(row)
        self.save()
        print(f"[{self.stage}] {item}: {result}" + (f" (vs {reference})" if reference else "")
              + ("" if ok is None else ("  OK" if ok else "  FAIL")), flush=True)
        return row

    def error(self, item: str, exc: BaseException) -> None:
        """A failed measurement: one row with the error's last line."""
        last = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]
        self.add(item, f"error: {last[:300]}", ok=False)
        traceback.print_exc()

    def save(self) -> None:
        if self.path:
            write_json_atomic(self.path, {"stage": self.stage, "rows": self.rows,
                                          "seconds": time.time() - self.started})


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, warmup: int, reps: int) -> Dict[str, float]:
    """Median and minimum seconds of ``fn()`` over ``reps`` calls after
    ``warmup`` untimed ones. CUDA: each call between device events (the
    queue drained first, so a call's time is its own); CPU: wall clock."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(max(1, reps)):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "reps": len(times)}


def time_loop(fn: Callable[[int], Any], device: torch.device, iterations: int) -> float:
    """Seconds for ``fn(0) ... fn(iterations - 1)`` back to back (the queue
    drained before and after: the throughput of a loop that never waits)."""
    synchronize(device)
    t0 = time.perf_counter()
    for i in range(iterations):
        fn(i)
    synchronize(device)
    return time.perf_counter() - t0


class PeakMemory:
    """``with PeakMemory(device) as m: ...`` then ``m.gib``: the peak of
    allocated device memory inside the block (None on the CPU)."""

    def __init__(self, device: torch.device):
        self.device, self.gib = device, None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.gib = torch.cuda.max_memory_allocated(self.device) / 2**30


def _where(stack: List[traceback.FrameSummary]) -> str:
    """The innermost mtlkit frame of a stack, as ``path:line (function)``."""
    for frame in reversed(stack):
        if any(m in frame.filename for m in SOURCE_MARKERS):
            parts = frame.filename.split(os.sep)
            short = os.sep.join(parts[-3:])
            return f"{short}:{frame.lineno} ({frame.name})"
    frame = stack[-1]
    return f"{os.path.basename(frame.filename)}:{frame.lineno} ({frame.name})"


def count_syncs(fn: Callable[[], Any], device: torch.device) -> Optional[Dict[str, Any]]:
    """Host synchronisations made by ``fn()``, counted with
    ``torch.cuda.set_sync_debug_mode("warn")``: ``{"count": n, "where":
    {location: n}}`` with each location the innermost mtlkit frame. None on
    the CPU (there is nothing to wait for)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    where: collections.Counter = collections.Counter()
    previous = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if "synchroniz" in str(message):
            where[_where(traceback.extract_stack()[:-1])] += 1
        else:
            previous(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = previous
    synchronize(device)
    return {"count": sum(where.values()), "where": dict(where.most_common())}


#: tensor methods / functions that wait for the device when their input is on a GPU
_SYNCING = {"__bool__", "__int__", "__float__", "__index__", "item", "tolist", "cpu", "numpy", "nonzero",
            "masked_select", "argwhere", "unique", "repeat_interleave"}


def census_syncs(fn: Callable[[], Any]) -> Dict[str, Any]:
    """Calls in ``fn()`` that would synchronise the host with a GPU holding the
    tensors: ``.item()``, ``.tolist()``, ``bool()`` / ``int()`` / ``float()`` of
    a tensor, ``.cpu()``, ``nonzero``, boolean-mask indexing, ... Counted on any
    device with a ``TorchFunctionMode`` (so the CPU dry run predicts the GPU
    count); calls inside C++ ops (NMS's kept count) are not seen. Same shape as
    :func:`count_syncs`."""
    from torch.overrides import TorchFunctionMode

    where: collections.Counter = collections.Counter()

    class Census(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            name = getattr(func, "__name__", "")
            index = args[1] if name == "__getitem__" and len(args) > 1 else None
            if name in _SYNCING or (isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)):
                where[_where(traceback.extract_stack()[:-1])] += 1
            return func(*args, **(kwargs or {}))

    with Census():
        fn()
    return {"count": sum(where.values()), "where": dict(where.most_common())}


def fmt_seconds(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"
