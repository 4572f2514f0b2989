"""``mtlkit plugins``: every registered name, its kind and where it comes from;
``--times`` adds how long each plugin took to import and register (a slow or
blocking plugin import slows or blocks every command: see docs/plugins.md)."""

from __future__ import annotations

import argparse
import json

from mtlkit.registry import KINDS, get_registry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=sorted(KINDS), help="list only this kind")
    parser.add_argument("--json", action="store_true", help="machine-readable output (with the times)")
    parser.add_argument("--times", action="store_true",
                        help="also show each plugin's import and registration time")


def _table(rows) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def main(args: argparse.Namespace) -> int:
    registry = get_registry()
    entries = [e for e in registry.entries() if args.kind in (None, e.kind)]
    timings = sorted(registry.timings.values(), key=lambda t: -t.import_seconds)
    if args.json:
        print(json.dumps({
            "plugins": [
                {"kind": e.kind, "name": e.name, "distribution": e.origin.distribution,
                 "version": e.origin.version, "plugin": e.origin.plugin}
                for e in entries
            ],
            "failed": [vars(f) for f in registry.failures],
            "times": [{"plugin": t.plugin, "distribution": t.distribution,
                       "import_seconds": round(t.import_seconds, 4),
                       "register_seconds": round(t.register_seconds, 4)} for t in timings],
        }, indent=2))
        return 0
    rows = [("KIND", "NAME", "DISTRIBUTION", "PLUGIN")] + [
        (e.kind, e.name, f"{e.origin.distribution} {e.origin.version}".strip(), e.origin.plugin)
        for e in entries
    ]
    _table(rows)
    if not entries:
        print("(no plugins registered)")
    for failure in registry.failures:
        print(f"failed: plugin '{failure.plugin}' from {failure.distribution}: {failure.error}")
    if args.times:
        print()
        _table([("PLUGIN", "DISTRIBUTION", "IMPORT", "REGISTER")] + [
            (t.plugin, t.distribution, f"{t.import_seconds:.3f} s", f"{t.register_seconds:.3f} s")
            for t in timings])
    return 0
