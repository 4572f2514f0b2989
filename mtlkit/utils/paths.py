"""What a path is, in words, for messages that must not say "not found" of a
path that exists (a folder, ``/dev/null``, a named pipe)."""

from __future__ import annotations

import os
import stat
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

#: a stat mode test and what to call a path that passes it, in the order they are tried
_KINDS = (
    (stat.S_ISREG, "file"),
    (stat.S_ISDIR, "folder"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "named pipe (FIFO)"),
    (stat.S_ISSOCK, "socket"),
)


def kind_of(path: PathLike) -> str:
    """``"file"``, ``"folder"``, ``"missing"``, ``"broken link"``, ``"character
    device"``, ``"block device"``, ``"named pipe (FIFO)"``, ``"socket"``, or
    ``"unreadable"`` (``stat`` itself failed, e.g. permission denied on a parent)."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "broken link" if os.path.islink(path) else "missing"
    except NotADirectoryError:
        return "missing"
    except OSError:
        return "unreadable"
    for is_kind, kind in _KINDS:
        if is_kind(mode):
            return kind
    return "special file"


def not_a_file(path: PathLike, expected: str) -> Optional[str]:
    """``None`` when ``path`` is a regular file (or a link to one), else the
    reason in words: ``"PATH does not exist"``, ``"PATH is a folder, expected
    <expected>"``, ``"PATH is a character device (such as /dev/null), expected
    <expected>"``... A pipe or device is refused before it is opened: reading
    one blocks or yields nothing."""
    path = os.fspath(path)
    kind = kind_of(path)
    if kind == "file":
        return None
    if kind == "missing":
        return f"{path} does not exist (expected {expected})"
    if kind == "broken link":
        return f"{path} is a symbolic link to a missing file (expected {expected})"
    if kind == "unreadable":
        return f"{path} cannot be examined (permission denied on a folder above it?); expected {expected}"
    article = "an" if kind[0] in "aeiou" else "a"
    example = " such as /dev/null" if kind == "character device" else ""
    return f"{path} is {article} {kind}{example}, expected {expected}"
