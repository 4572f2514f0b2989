"""One mtlkit process at a time in an output folder.

Two commands writing into the same ``--out`` at once interleave their logs
and race on their files. :class:`RunLock` makes the second one stop at once
with a line naming the holder::

    error: --out runs/a is in use by another mtlkit process: pid 4242 on host gpu1,
    `mtlkit train configs/x.yaml --out runs/a`, since 2024-05-01 10:32:07; wait for it
    to finish or choose another --out

The lock is ``OUT/.mtlkit.lock``, an ``flock`` held on that file for as long
as the holder runs, and the file holds the holder's description as one JSON
line. The kernel releases an ``flock`` when its process ends, however it ends:
after a SIGKILL the file stays but the lock does not, so the next run takes it
over (a stale lock recovers by itself). Where ``flock`` is not available
(``fcntl`` missing, a file system refusing it), the file itself is the lock
(created exclusively) and a holder that no longer runs on this host is stale.

The lock is re-entrant within a process (a command holding it may call code
that takes it again), released on exit, and leaves nothing behind: its file
is removed, and so is ``OUT`` when the lock created it and it stayed empty.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from mtlkit.errors import MtlkitError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: the lock's file name inside the folder
LOCK_NAME = ".mtlkit.lock"


class RunLocked(MtlkitError):
    """The folder is in use by another mtlkit process (the message names it)."""


#: realpath of a folder -> [lock, depth] for the locks this process holds
_HELD: Dict[str, List[Any]] = {}
_HELD_GUARD = threading.Lock()


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and os.path.basename(argv[0]) in ("__main__.py", "-m"):
        argv[0] = "mtlkit"
    elif argv:
        argv[0] = os.path.basename(argv[0])
    return " ".join(shlex.quote(a) for a in argv)[:300]


def describe_holder(info: Optional[Dict[str, Any]]) -> str:
    """``pid 4242 on host gpu1, `mtlkit train ...`, since 2024-05-01 10:32:07``."""
    if not info:
        return "holder unknown (it is starting or stopping)"
    parts = [f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"]
    if info.get("command"):
        parts.append(f"`{info['command']}`")
    if info.get("started"):
        parts.append(f"since {info['started']}")
    return ", ".join(parts)


def _read_info(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            info = json.loads(handle.read() or "null")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _pid_running(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, TypeError):
        return True
    return True


class RunLock:
    """The lock of folder ``out_dir`` (see the module docstring).

    :param command: how the holder is described to a refused process
        (default: this process's command line).
    :param what: the option naming the folder in messages (``--out``).
    :param enabled: ``False`` makes the lock a no-op (e.g. the non-main
        ranks of a distributed run, whose rank 0 holds it).

    Use as a context manager, or :meth:`acquire` / :meth:`release`.
    :meth:`acquire` creates the folder when it does not exist.
    """

    def __init__(self, out_dir: "str | os.PathLike[str]", command: Optional[str] = None,
                 what: str = "--out", enabled: bool = True):
        self.out_dir = os.fspath(out_dir)
        self.path = os.path.join(self.out_dir, LOCK_NAME)
        self.command = command
        self.what = what
        self.enabled = enabled
        self._fd: Optional[int] = None
        self._created: List[str] = []
        self._key: Optional[str] = None
        self.held = False

    # -- acquire / release -----------------------------------------------------
    def acquire(self) -> "RunLock":
        if not self.enabled or self.held:
            return self
        self._created = self._make_folders()
        key = os.path.realpath(self.out_dir)
        with _HELD_GUARD:
            if key in _HELD:  # this process holds it already: nest
                _HELD[key][1] += 1
                self._key, self.held = key, True
                return self
        try:
            if fcntl is not None:
                self._lock_flock()
            else:  # pragma: no cover - exercised where fcntl is missing
                self._lock_exclusive_file()
        except BaseException:
            self._remove_created_folders()
            raise
        with _HELD_GUARD:
            _HELD[key] = [self, 1]
        self._key, self.held = key, True
        return self

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        with _HELD_GUARD:
            entry = _HELD.get(self._key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] > 0:
                    return
                del _HELD[self._key]
                owner = entry[0]
            else:
                owner = self
        owner._unlock()
        owner._remove_created_folders()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- internals ------------------------------------------------------------------
    def _info(self) -> Dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "command": self.command or _command_line(),
                "started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")}

    def _refuse(self, info: Optional[Dict[str, Any]]) -> RunLocked:
        return RunLocked(f"{self.what} {self.out_dir} is in use by another mtlkit process: "
                         f"{describe_holder(info)}; wait for it to finish or choose another {self.what}")

    def _make_folders(self) -> List[str]:
        """Create the folder (and missing parents); return those created, deepest first."""
        missing, folder = [], os.path.abspath(self.out_dir)
        while not os.path.isdir(folder):
            missing.append(folder)
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent
        try:
            os.makedirs(self.out_dir, exist_ok=True)
        except OSError as exc:
            raise MtlkitError(f"{self.what} {self.out_dir}: cannot create the folder "
                              f"({exc.strerror or exc})") from None
        return missing

    def _remove_created_folders(self) -> None:
        for folder in self._created:  # deepest first; only if still empty
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        self._created = []

    def _lock_flock(self) -> None:
        for _ in range(20):  # the file may be replaced between open and lock: retry
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refuse(_read_info(self.path)) from None
            except OSError:  # a file system without flock: the file is the lock
                empty = os.fstat(fd).st_size == 0
                os.close(fd)
                if empty:  # the file opening just created, not a holder's
                    with contextlib.suppress(OSError):
                        os.unlink(self.path)
                self._lock_exclusive_file()
                return
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released and removed by its holder meanwhile: lock the new file
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(self._info()) + "\n").encode("utf-8"))
            self._fd = fd
            return
        raise self._refuse(_read_info(self.path))

    def _lock_exclusive_file(self) -> None:
        info = self._info()
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read_info(self.path)
                if holder is None:  # a holder killed before it wrote who it is
                    try:
                        stale = time.time() - os.stat(self.path).st_mtime > 60
                    except FileNotFoundError:
                        continue
                else:
                    stale = holder.get("host") == info["host"] and not _pid_running(holder.get("pid"))
                if not stale:
                    raise self._refuse(holder) from None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)  # its holder was killed
                continue
            os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
            self._fd = fd
            return
        raise self._refuse(_read_info(self.path))

    def _unlock(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # Remove the file while still holding the lock: a process that opened
        # it meanwhile sees another inode when it gets the lock, and retries.
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(fd)


def holder(out_dir: "str | os.PathLike[str]") -> Optional[Dict[str, Any]]:
    """The description the process holding ``out_dir``'s lock wrote, or None
    when nobody holds it."""
    path = os.path.join(os.fspath(out_dir), LOCK_NAME)
    if not os.path.exists(path):
        return None
    if fcntl is None:  # pragma: no cover
        return _read_info(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_info(path) or {}
    except OSError:
        return _read_info(path)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
