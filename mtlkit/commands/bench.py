"""``mtlkit bench``: run the pytest-benchmark suites of a source checkout.

Benchmarks live in ``benchmarks/`` beside the package (they are not
installed); each suite measures mtlkit against a baseline in the same run and
prints the ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from mtlkit.errors import MtlkitError, did_you_mean

_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUITES_DIR = os.path.join(_SOURCE_ROOT, "benchmarks")


def available_suites() -> list:
    if not os.path.isdir(SUITES_DIR):
        return []
    return sorted(f[len("test_"):-3] for f in os.listdir(SUITES_DIR)
                  if f.startswith("test_") and f.endswith(".py"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help="suites to run (default: all); e.g. ops, overhead, eval, data")
    parser.add_argument("--json", metavar="PATH", help="also save pytest-benchmark's JSON here")
    parser.add_argument("-k", metavar="EXPR", help="pytest -k expression to select benchmarks")


def main(args: argparse.Namespace) -> int:
    known = available_suites()
    if not known:
        raise MtlkitError(f"no benchmark suites found in {SUITES_DIR}: "
                          "`mtlkit bench` needs a source checkout of mtlkit")
    for suite in args.suites:
        if suite not in known:
            raise MtlkitError(f"unknown benchmark suite '{suite}'{did_you_mean(suite, known)}; "
                              f"available: {', '.join(known)}")
    files = [os.path.join(SUITES_DIR, f"test_{s}.py") for s in (args.suites or known)]
    command = [sys.executable, "-m", "pytest", *files, "-o", "addopts=", "-p", "no:cacheprovider",
               "-q", "-s", "--benchmark-columns=min,mean,median,stddev,rounds"]
    if args.json:
        # relative to where the user is, not to the checkout pytest runs in
        path = os.path.abspath(args.json)
        folder = os.path.dirname(path)
        if os.path.isdir(path):
            raise MtlkitError(f"--json {args.json}: is a folder, expected a file name")
        if not os.path.isdir(folder):
            raise MtlkitError(f"--json {args.json}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise MtlkitError(f"--json {args.json}: the folder {folder} is not writable")
        command.append(f"--benchmark-json={path}")
    if args.k:
        command += ["-k", args.k]
    rc = subprocess.call(command, cwd=os.path.dirname(SUITES_DIR))
    if rc == NO_TESTS_COLLECTED:
        chosen = ", ".join(args.suites or known)
        raise MtlkitError(f"no benchmark matches -k {args.k!r} in suite(s) {chosen}" if args.k
                          else f"no benchmark found in suite(s) {chosen}")
    return rc


#: pytest's exit status when nothing was selected
NO_TESTS_COLLECTED = 5
