"""Atomic file writes: a crash never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it
    over ``path`` (atomic on POSIX), on error remove it and leave ``path`` as it was.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (binary).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def check_out_dir(path: PathLike, what: str = "--out") -> None:
    """Refuse an output folder that cannot be one, before anything is written:
    an existing file, a folder that cannot be written, or a path below a file."""
    from mtlkit.errors import MtlkitError

    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise MtlkitError(f"{what} {path} is an existing file, expected a folder")
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise MtlkitError(f"{what} {path}: the folder is not writable (permission denied)")
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise MtlkitError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MtlkitError(f"{what} {path}: cannot create it, {parent} is not writable (permission denied)")


def make_out_dir(path: PathLike, what: str = "--out") -> str:
    """``os.makedirs(path, exist_ok=True)`` with one clear line on failure."""
    from mtlkit.errors import MtlkitError

    path = os.fspath(path)
    check_out_dir(path, what)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise MtlkitError(f"{what} {path}: cannot create the folder ({exc.strerror or exc})") from None
    return path


def plain(value, json_safe: bool = False):
    """A copy of ``value`` made of plain dicts (str keys) and lists, as YAML and
    JSON writers want: mappings -> dict, tuples -> lists. ``json_safe`` also
    turns 0-d tensors / numpy scalars into Python numbers and non-finite floats
    into strings ("nan", "inf"), which JSON cannot hold."""
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return {str(k): plain(v, json_safe) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, json_safe) for v in value]
    if json_safe:
        import math

        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
    return value
