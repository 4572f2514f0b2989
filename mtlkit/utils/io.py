"""Atomic file writes: a crash never leaves a half-written file behind.

The temporary file of :func:`atomic_write` is ``.<name>.<host>.<pid>.<random>.tmp``
beside the target. A process killed mid-write (SIGKILL, power loss) leaves it
behind; :func:`remove_stale_temps` removes the ones of a target whose writer
is gone (its pid no longer runs on this host, or it is a day old).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import stat
import tempfile
import time
import zlib
from collections.abc import Mapping
from typing import IO, Iterator, List, Union

from mtlkit.errors import MtlkitError
from mtlkit.utils.paths import kind_of

PathLike = Union[str, "os.PathLike[str]"]

#: a temporary file older than this is stale whoever wrote it (seconds)
STALE_TEMP_AGE = 24 * 3600.0


def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def _temp_pattern(name: str) -> "re.Pattern[str]":
    # .<name>.<host>.<pid>.<random>.tmp, and the older .<name>.<random>.tmp
    return re.compile(r"^\." + re.escape(name) + r"\.(?:([0-9a-f]{8})\.(\d+)\.)?[A-Za-z0-9_]{8}\.tmp$")


def is_temp_of(name: str, target: str) -> bool:
    """Whether the file ``name`` is a temporary file of :func:`atomic_write`
    writing ``target`` (both names inside one folder)."""
    return _temp_pattern(target).match(name) is not None


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or not a pid we can ask about
    return True


def remove_stale_temps(path: PathLike) -> List[str]:
    """Remove the temporary files :func:`atomic_write` left beside ``path``
    when its writer was killed: those written on this host by a process that
    no longer runs, and any older than :data:`STALE_TEMP_AGE`. Files of any
    other name are never touched. Returns the removed paths (errors ignored:
    this is housekeeping)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    pattern = _temp_pattern(os.path.basename(path))
    removed: List[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    host, now = _host_tag(), time.time()
    for name in names:
        match = pattern.match(name)
        if match is None:
            continue
        full = os.path.join(folder, name)
        try:
            age = now - os.lstat(full).st_mtime
        except OSError:
            continue
        tag, pid = match.group(1), match.group(2)
        stale = age > STALE_TEMP_AGE or (tag == host and pid is not None and not _pid_running(int(pid)))
        if tag is None and age > 3600.0:  # written before temp names carried their writer
            stale = True
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(full)
                removed.append(full)
    return removed


def current_umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(path: str) -> int:
    """The permissions a plain ``open(path, "w")`` would leave: those of the
    file it replaces, else 0666 minus the umask (``mkstemp`` makes 0600)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def with_path(exc: OSError, path: str) -> OSError:
    """``exc`` naming ``path`` when it names no file (a full disk's ENOSPC
    comes from ``write`` / ``fsync``, which know no path)."""
    if exc.filename is not None or exc.errno is None:
        return exc
    named = OSError(exc.errno, exc.strerror or os.strerror(exc.errno), path)
    named.__cause__ = exc
    return named


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it
    over ``path`` (atomic on POSIX), on error remove it and leave ``path`` as it was.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (binary). The file gets the
    permissions a plain ``open`` would give it (the umask's, or those of the
    file replaced). An ``OSError`` without a path (a full disk) is raised
    naming ``path``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{_host_tag()}.{os.getpid()}.",
                               suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), _final_mode(path))
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise with_path(exc, path) from exc
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
    path = os.fspath(path)
    if not path or not path.strip():
        raise MtlkitError(f"{what} is empty, expected a folder")
    resolved = os.path.realpath(path)
    if os.path.dirname(resolved) == resolved:
        raise MtlkitError(f"{what} {path} is the root folder {resolved}: mtlkit writes its files into "
                          f"{what}, give it a folder of its own (e.g. {what} runs/name)")
    if os.path.exists(path) and not os.path.isdir(path):
        raise MtlkitError(f"{what} {path} is an existing {kind_of(path)}, expected a folder")
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise MtlkitError(f"{what} {path}: the folder is not writable (permission denied)")
        if _read_only_mount(path):
            raise MtlkitError(f"{what} {path}: the folder is on a read-only file system")
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise MtlkitError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MtlkitError(f"{what} {path}: cannot create it, {parent} is not writable (permission denied)")
    if _read_only_mount(parent):
        raise MtlkitError(f"{what} {path}: cannot create it, {parent} is on a read-only file system")


def _read_only_mount(path: str) -> bool:
    """Whether ``path`` is on a file system mounted read-only (which ``os.access`` does not tell root)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def make_out_dir(path: PathLike, what: str = "--out") -> str:
    """``os.makedirs(path, exist_ok=True)`` with one clear line on failure."""
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
    if isinstance(value, Mapping):
        return {str(k): plain(v, json_safe) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, json_safe) for v in value]
    if json_safe:
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
    return value
