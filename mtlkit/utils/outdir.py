"""Which files of an output folder mtlkit wrote, so that it never replaces one
it did not write.

A command that writes into ``--out`` first *claims* the names it is about to
write (:func:`claim`): a name already there is refused unless the folder's
record ``OUT/.mtlkit-outputs.json`` says the same command wrote it (a rerun
replaces its own outputs). The record then gains the claimed names. The
user's own files — an input image, a hand-written ``config.yaml``, a training
run's ``metrics.json`` under ``eval --out`` — are never replaced: the command
stops before writing anything, with one line naming the file.

Claim while holding the folder's lock (:class:`mtlkit.utils.runlock.RunLock`),
after every other check and before the first write.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterable, Optional

from mtlkit.errors import MtlkitError
from mtlkit.utils.io import atomic_write

#: the record of what mtlkit wrote into a folder, by command
RECORD_NAME = ".mtlkit-outputs.json"
FORMAT = 1


class OutputExists(MtlkitError):
    """A file the command would write is already there and is not its own."""


def written(out_dir: "str | os.PathLike[str]") -> Dict[str, str]:
    """Name (relative to ``out_dir``) -> the command that wrote it, from the
    folder's record; empty without one."""
    path = os.path.join(os.fspath(out_dir), RECORD_NAME)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return {}
    outputs = record.get("outputs") if isinstance(record, dict) else None
    if not isinstance(outputs, dict):
        return {}
    return {str(k): str(v) for k, v in outputs.items()}


def conflicts(out_dir: "str | os.PathLike[str]", names: Iterable[str], command: str) -> Dict[str, Optional[str]]:
    """The names among ``names`` present in ``out_dir`` that ``command`` did
    not write there: name -> the command that did, or None (not mtlkit, or
    before mtlkit recorded its outputs)."""
    out_dir = os.fspath(out_dir)
    record = written(out_dir)
    found: Dict[str, Optional[str]] = {}
    for name in names:
        path = os.path.join(out_dir, name)
        if not os.path.lexists(path):
            continue
        by = record.get(name)
        if by != command:
            found[name] = by
    return found


def claim(out_dir: "str | os.PathLike[str]", names: Iterable[str], command: str,
          what: str = "--out", hint: str = "") -> None:
    """Refuse (:class:`OutputExists`) when a name of ``names`` is present in
    ``out_dir`` and is not an output of ``command``; else record them all as
    ``command``'s. ``hint`` ends the message (e.g. the default folder)."""
    out_dir = os.fspath(out_dir)
    names = list(dict.fromkeys(names))
    check_claim(out_dir, names, command, what, hint)
    _record(out_dir, names, command)


def check_claim(out_dir: "str | os.PathLike[str]", names: Iterable[str], command: str,
                what: str = "--out", hint: str = "") -> None:
    """What :func:`claim` refuses, without recording anything: for a command
    that checks early (before building anything) and claims just before it writes."""
    out_dir = os.fspath(out_dir)
    record_path = os.path.join(out_dir, RECORD_NAME)
    if os.path.lexists(record_path) and not os.path.isfile(record_path):
        raise OutputExists(f"{what} {out_dir}: {RECORD_NAME} is not a file mtlkit wrote; choose another {what}")
    found = conflicts(out_dir, names, command)
    if found:
        name, by = next(iter(found.items()))
        origin = (f"it was written by `mtlkit {by}`" if by else
                  "mtlkit did not write it (or wrote it before it kept a record of its outputs)")
        more = f" (and {len(found) - 1} more file(s))" if len(found) > 1 else ""
        raise OutputExists(f"{what} {out_dir} already holds {name}{more}, which `mtlkit {command}` would "
                           f"replace: {origin}; choose another {what}{hint}")


def adopt(out_dir: "str | os.PathLike[str]", names: Iterable[str], command: str) -> None:
    """Record ``names`` as ``command``'s without checking who wrote those
    present: for a folder the caller has recognised as ``command``'s own,
    written before mtlkit kept this record (e.g. a run resumed from its
    ``last.pt``)."""
    _record(os.fspath(out_dir), list(dict.fromkeys(names)), command)


def _record(out_dir: str, names: Iterable[str], command: str) -> None:
    record_path = os.path.join(out_dir, RECORD_NAME)
    record = written(out_dir)
    record.update({name: command for name in names})
    with atomic_write(record_path, "w", encoding="utf-8") as handle:
        json.dump({"format": FORMAT, "outputs": dict(sorted(record.items()))}, handle, indent=1)
        handle.write("\n")
