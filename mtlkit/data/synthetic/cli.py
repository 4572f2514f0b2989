"""``mtlkit data synth``: write a synthetic set to disk (resumable).

    mtlkit data synth --out data/synth-train -n 400 --seed 0 --split train --size 240 320 --workers 2

Writes ``OUT/samples/NNNNNN.npz`` (one per sample), ``OUT/dataset.json``
(classes, scenes, generation config, count) and ``OUT/preview.png``. Samples
already on disk are skipped, so an interrupted run continues where it
stopped; rerunning with a larger ``-n`` extends the set. Load it with
``SyntheticRooms(root=OUT)`` (dataset type ``synthetic`` with option ``root``).
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, Optional

import yaml

from mtlkit.errors import ConfigError
from mtlkit.utils.yaml_io import yaml_load

from .appearance import DOMAINS
from .generate import SPLITS, make_options
from .writer import write_set  # noqa: F401 - also imported from here


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("-n", "--num", type=int, required=True, help="number of samples")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--split", default="train", choices=sorted(SPLITS), help="random stream (default train)")
    parser.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"),
                        help="image size (default 240 320)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--no-shadows", action="store_true", help="skip shadow rays")
    parser.add_argument("--kinect-holes", action="store_true", help="simulate Kinect depth holes in the labels")
    parser.add_argument("--sensor", default=None, metavar="PRESET",
                        help="add a simulated depth sensor's measurement (sensor_* arrays; preset: kinect)")
    parser.add_argument("--domain", default=None, metavar="NAME",
                        help=f"how the rooms look: {', '.join(DOMAINS)} (default source)")
    parser.add_argument("--appearance", action="append", default=[], metavar="KEY=VALUE",
                        help="an appearance option over the domain's, e.g. gamma=2.0 or white_balance=[1,1,0.9] "
                             "(repeatable; docs/synthetic.md lists them)")
    parser.add_argument("--no-preview", action="store_true", help="do not write preview.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    if args.num < 0:
        raise ConfigError(f"-n must be >= 0, got {args.num}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    options = make_options(tuple(args.size), shadows=not args.no_shadows, kinect_holes=args.kinect_holes,
                           sensor=args.sensor, domain=args.domain,
                           appearance=parse_appearance(args.appearance))
    new, count = write_set(args.out, args.num, args.seed, args.split, options, args.workers,
                           progress=not args.quiet, preview=not args.no_preview)
    if not args.quiet:
        print(f"wrote {new} new samples ({count} in all) to {args.out}")
    return 0


def parse_appearance(items) -> Optional[Dict[str, Any]]:
    """``["gamma=2.0", "white_balance=[1, 1, 0.9]"]`` -> ``{"gamma": 2.0, ...}`` (values
    read as YAML); None when empty."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--appearance expects KEY=VALUE (e.g. gamma=2.0), got {item!r}")
        try:
            out[key.strip()] = yaml_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--appearance {key.strip()}: not a YAML value ({str(exc).splitlines()[0]})") from None
    return out or None


def _standalone(argv=None) -> int:
    """``python -m mtlkit.data.synthetic.cli ...`` (the same as ``mtlkit data synth``)."""
    parser = argparse.ArgumentParser(prog="mtlkit data synth", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(_standalone())
