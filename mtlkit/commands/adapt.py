"""``mtlkit adapt CONFIG --checkpoint CKPT --target TARGET --out DIR``: carry a
trained model into a target domain at test time (docs/adapt.md).

    mtlkit adapt configs/synthetic/rock.yaml --checkpoint runs/rock/last.pt \\
        --target configs/synthetic/targets/dusk.yaml --out runs/rock-dusk

``--method aux`` (default) minimises the auxiliary losses of what the sensor
measures with each target image (depth, normals), without any annotation;
``tent`` the entropy of the detector's class posteriors; ``adabn`` re-estimates
BatchNorm statistics only. ``--mode offline`` adapts on the target's train
images then scores its test images; ``online`` adapts on each test batch,
then predicts it. Writes ``DIR/adapt.json`` (target test scores before and
after), ``DIR/last.pt`` (the adapted model), ``DIR/curves.png``,
``DIR/metrics.jsonl``; ``--resume`` continues a stopped run.
"""

from __future__ import annotations

import argparse
import sys

from mtlkit.adaptation.params import PARAMS
from mtlkit.adaptation.run import METHODS, MODES, adapt, describe
from mtlkit.commands._common import add_config_arguments
from mtlkit.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", required=True, help="the trained model (a last.pt)")
    parser.add_argument("--target", required=True,
                        help="the target domain: a target file (configs/synthetic/targets/dusk.yaml) or inline "
                             "YAML ('{domain: dusk, seed: 10000}', '{train: {...}, test: {...}}')")
    parser.add_argument("--out", required=True, help="the adaptation's run directory")
    parser.add_argument("--method", default="aux", help=f"{' | '.join(METHODS)} (default aux)")
    parser.add_argument("--mode", default="offline", help=f"{' | '.join(MODES)} (default offline)")
    parser.add_argument("--params", help=f"what moves: {' | '.join(PARAMS)} (default: all_but_head for aux, "
                                         "bn for tent; adabn: statistics only)")
    parser.add_argument("--steps", type=int, help="offline iterations (default one pass over the target's "
                                                  "train images)")
    parser.add_argument("--lr", type=float, help="learning rate (default 1e-4)")
    parser.add_argument("--batch", type=int, help="images per iteration (default data.batch_size)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the adaptation's data order (default 0)")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="the source's data seed; the target file's seeds are offset by it (default 0)")
    parser.add_argument("--data-dir", help="where generated target splits are rendered once (default OUT/data)")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    if args.data_seed < 0:
        raise ConfigError(f"--data-seed must be >= 0, got {args.data_seed}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    record = adapt(args.config, args.checkpoint, args.target, args.out, method=args.method, mode=args.mode,
                   params=args.params, steps=args.steps, lr=args.lr, batch=args.batch, seed=args.seed,
                   data_seed=args.data_seed, data_dir=args.data_dir, workers=args.workers, resume=args.resume,
                   progress=not args.no_progress, overrides=args.overrides,
                   log=lambda message: print(message, file=sys.stderr))
    print("\n".join(describe(record)))
    print(f"run directory: {args.out}", file=sys.stderr)
    return 0
