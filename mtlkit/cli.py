"""The ``mtlkit`` command line (also ``python -m mtlkit``).

Each command lives in its own module of :mod:`mtlkit.commands` exposing
``add_arguments(parser)`` and ``main(args) -> int``; this file only wires them together and turns errors a
user can cause (:class:`mtlkit.errors.MtlkitError`) into one line on stderr
and exit status 2. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import Callable, List, Optional

from mtlkit import __version__
from mtlkit.errors import MtlkitError

#: command -> (module, one-line help)
COMMANDS = {
    "train": ("mtlkit.commands.train", "train a model from a config"),
    "eval": ("mtlkit.commands.evaluate", "evaluate a checkpoint on a dataset"),
    "detect": ("mtlkit.commands.detect", "run a checkpoint on images and draw predictions"),
    "ablate": ("mtlkit.commands.ablate", "reproduce the paper's ablation on a dataset"),
    "pretrain": ("mtlkit.pretrain", "pre-train a backbone on RGB-only synthetic labels (scene, crops)"),
    "bench": ("mtlkit.commands.bench", "run the benchmark suites"),
    "plugins": ("mtlkit.commands.plugins", "list registered plugins and their distributions"),
    "data": ("mtlkit.commands.data", "prepare datasets (synthetic rooms, NYUv2)"),
}


class _Unavailable:
    """Stands in for a command whose module cannot be imported."""

    def __init__(self, name: str, error: BaseException):
        self.name, self.error = name, error

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def main(self, args: argparse.Namespace) -> int:
        raise MtlkitError(f"command '{self.name}' is unavailable: "
                          f"{type(self.error).__name__}: {self.error}")


def _command_module(name: str):
    module_name = COMMANDS[name][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return _Unavailable(name, exc)
        raise


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only`` set, import just that command's module."""
    parser = argparse.ArgumentParser(
        prog="mtlkit",
        description="Multi-task learning for visual detection (ROCK, SSD) with plugins.",
    )
    parser.add_argument("--version", action="version", version=f"mtlkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                    help="show tracebacks on errors")
        if only is None or only == name:
            module = _command_module(name)
            module.add_arguments(command_parser)
            command_parser.set_defaults(_module=module)
    return parser


def _requested_command(argv: List[str]) -> Optional[str]:
    for arg in argv:
        if arg in COMMANDS:
            return arg
        if not arg.startswith("-"):
            return None
    return None


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def command() -> int:
        parser = build_parser(only=_requested_command(argv))
        args = parser.parse_args(argv)
        if getattr(args, "command", None) is None:
            parser.print_help()
            return 0
        return int(args._module.main(args) or 0)

    return run_guarded(command, debug="--debug" in argv)


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


if __name__ == "__main__":
    raise SystemExit(main())
