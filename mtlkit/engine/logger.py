"""Run logging: ``metrics.jsonl`` (one JSON object per line), TensorBoard
when installed, and a tqdm progress bar. Only rank 0 writes."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, Optional

from tqdm import tqdm

from mtlkit.engine import dist
from mtlkit.options import flatten
from mtlkit.utils.io import atomic_write, plain, with_path


def write_json(path: str, data: Any, indent: Optional[int] = 2) -> None:
    """Write ``data`` as JSON (indented unless ``indent`` is None), atomically."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(plain(data, json_safe=True), handle, indent=indent)
        handle.write("\n")


class RunLogger:
    """Appends records to ``OUT/metrics.jsonl`` and mirrors scalars to
    TensorBoard (``OUT/tb``) when ``torch.utils.tensorboard`` is importable."""

    def __init__(self, out_dir: str, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self._file = open(self.path, "a", encoding="utf-8") if enabled else None
        self._tb = None
        #: TensorBoard was asked for but the package is not installed
        self.tensorboard_missing = False
        if enabled and tensorboard:
            try:
                # optional: the tensorboard package (pip install 'mtlkit[tensorboard]')
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.tensorboard_missing = True
            else:
                self._tb = SummaryWriter(os.path.join(out_dir, "tb"))

    @staticmethod
    def holds_records(out_dir: str) -> bool:
        """Whether ``OUT/metrics.jsonl`` starts with a record of a run (a JSON
        object with an ``event``): the log of an mtlkit run, not a user's file."""
        try:
            with open(os.path.join(out_dir, "metrics.jsonl"), encoding="utf-8") as handle:
                record = json.loads(handle.readline())
        except (OSError, ValueError):
            return False
        return isinstance(record, dict) and "event" in record

    @staticmethod
    def truncate(out_dir: str, after_iter: int) -> None:
        """Drop records of iterations > ``after_iter`` (a resumed run redoes them)."""
        path = os.path.join(out_dir, "metrics.jsonl")
        if not os.path.isfile(path):
            return
        kept = []
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if int(record.get("iter", 0)) <= after_iter:
                    kept.append(json.dumps(record))
        with atomic_write(path, "w", encoding="utf-8") as handle:
            handle.write("".join(k + "\n" for k in kept))

    def log(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            self._file.write(json.dumps(plain(record, json_safe=True)) + "\n")
            self._file.flush()
        except OSError as exc:  # a full disk: say which file
            raise with_path(exc, self.path) from exc
        if self._tb is not None:
            step = int(record.get("iter", 0))
            prefix = record.get("event", "log")
            for key, value in flatten(record, sep="/").items():
                if key not in ("iter", "event") and isinstance(value, (int, float)) \
                        and not isinstance(value, bool):
                    self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def progress_bar(total: int, initial: int, enabled: bool):
    """A tqdm bar on stderr, or ``None`` when disabled."""
    if not enabled:
        return None

    return tqdm(total=total, initial=initial, dynamic_ncols=True, unit="it", desc="train",
                mininterval=0.5)


def note(message: str, bar: Any = None) -> None:
    """``mtlkit: message`` on stderr, on rank 0 only; through ``bar`` (a tqdm
    bar) when one is shown, so that the bar is redrawn below the line."""
    if not dist.is_main():
        return
    if bar is not None:
        bar.write(f"mtlkit: {message}", file=sys.stderr)
    else:
        print(f"mtlkit: {message}", file=sys.stderr, flush=True)


def fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
        return f"{value:.2e}"
    return f"{value:.4g}"
