"""The ``mtlkit`` command line (also ``python -m mtlkit``).

Each command lives in its own module of :mod:`mtlkit.commands` exposing
``add_arguments(parser)`` and ``main(args) -> int``; this file only wires them together and turns errors a
user can cause (:class:`mtlkit.errors.MtlkitError`) into one line on stderr
and exit status 2 (:func:`mtlkit.errors.run_guarded`). ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from mtlkit.errors import MtlkitError, run_guarded  # noqa: F401 - run_guarded is also imported from here
from mtlkit.version import __version__

#: command -> (module, one-line help)
COMMANDS = {
    "train": ("mtlkit.commands.train", "train a model from a config"),
    "eval": ("mtlkit.commands.evaluate", "evaluate a checkpoint on a dataset"),
    "detect": ("mtlkit.commands.detect", "run a checkpoint on images and draw predictions"),
    "adapt": ("mtlkit.commands.adapt", "adapt a trained model to a target domain at test time"),
    "ablate": ("mtlkit.commands.ablate", "reproduce the paper's ablation on a dataset"),
    "pretrain": ("mtlkit.commands.pretrain", "pre-train a backbone on RGB-only synthetic labels (scene, crops)"),
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
    """The argument parser; with ``only`` set, import just that command's
    module (``""``: none, for the list of commands)."""
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
        # only the command asked for is imported (none for `mtlkit --help`): the
        # commands import the engine and torch at module level
        parser = build_parser(only=_requested_command(argv) or "")
        args = parser.parse_args(argv)
        if getattr(args, "command", None) is None:
            parser.print_help()
            return 0
        return int(args._module.main(args) or 0)

    return run_guarded(command, debug="--debug" in argv)


if __name__ == "__main__":
    raise SystemExit(main())
