"""``mtlkit plugins``: every registered name, its kind and where it comes from."""

from __future__ import annotations

import argparse
import json

from mtlkit.registry import KINDS, get_registry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=sorted(KINDS), help="list only this kind")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    registry = get_registry()
    entries = [e for e in registry.entries() if args.kind in (None, e.kind)]
    if args.json:
        print(json.dumps({
            "plugins": [
                {"kind": e.kind, "name": e.name, "distribution": e.origin.distribution,
                 "version": e.origin.version, "plugin": e.origin.plugin}
                for e in entries
            ],
            "failed": [vars(f) for f in registry.failures],
        }, indent=2))
        return 0
    rows = [("KIND", "NAME", "DISTRIBUTION", "PLUGIN")] + [
        (e.kind, e.name, f"{e.origin.distribution} {e.origin.version}".strip(), e.origin.plugin)
        for e in entries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if not entries:
        print("(no plugins registered)")
    for failure in registry.failures:
        print(f"failed: plugin '{failure.plugin}' from {failure.distribution}: {failure.error}")
    return 0
