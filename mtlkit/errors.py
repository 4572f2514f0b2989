"""Errors a user can cause, :func:`did_you_mean` for their messages, and
:func:`run_guarded`, which turns them into one line on stderr and an exit
status (the CLI's and every worker process's entry point use it, so a user's
error is never a traceback)."""

from __future__ import annotations

import difflib
import sys
import traceback
from typing import Callable, Iterable


class MtlkitError(Exception):
    """Base of every error caused by user input (config, data, files, arguments)."""


class ConfigError(MtlkitError):
    """An invalid configuration: unknown key or name, wrong type, bad file."""


class DataError(MtlkitError):
    """Invalid or missing data files: the message names the file and what was expected."""


class TrainingDiverged(MtlkitError):
    """A task's loss became NaN or infinite (the message names the task), or
    the weights did although the loss was finite; nothing bad is saved."""


class RunExists(MtlkitError):
    """The output folder already holds a run and ``resume`` was not asked."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ``" (did you mean 'x'?)"`` suffix, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def run_guarded(command: Callable[[], int], debug: bool = False) -> int:
    """Run ``command`` and turn what it raises into one line on stderr and an
    exit status: 2 for a user's error (:class:`MtlkitError`, a path that
    cannot be read or written), 130 for Ctrl-C, 1 for a bug. ``debug`` adds
    the traceback."""
    try:
        return int(command() or 0)
    except MtlkitError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # The environment, not a bug: a path that cannot be read or written
        # (permissions, a file where a folder is expected, a full disk).
        if debug:
            traceback.print_exc()
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
        print(f"error: {where + ': ' if where else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line, traceback with --debug
        if debug:
            traceback.print_exc()
        print(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback; "
              "please report it)", file=sys.stderr)
        return 1
