"""``mtlkit train CONFIG [--out DIR] [--iters N] [--checkpoint-every N] [--seed S]
[--resume] [-o key=value ...]``: train a model; prints the final metrics.

The run directory (default ``runs/<config stem>-<timestamp>``) receives
``config.yaml``, ``metrics.jsonl``, ``last.pt``, ``metrics.json``,
``detections.json``, ``curves.png`` and ``per_class_ap.png``. Ctrl-C saves a
checkpoint and stops; ``--resume --out DIR`` continues exactly. Multi-process:
``torchrun --nproc_per_node N -m mtlkit train CONFIG ...``.
"""

from __future__ import annotations

import argparse
import os
import sys

from mtlkit.commands._common import add_config_arguments
from mtlkit.engine.trainer import default_out_dir, train
from mtlkit.errors import MtlkitError
from mtlkit.metrics import summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", help="run directory (default: runs/<config stem>-<timestamp>)")
    parser.add_argument("--iters", type=int, help="optimiser steps (overrides train.iters)")
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="write OUT/last.pt every N iterations (overrides train.checkpoint_every)")
    parser.add_argument("--eval-every", type=int, metavar="N",
                        help="evaluate on the validation split every N iterations")
    parser.add_argument("--seed", type=int, help="overrides train.seed")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    if args.resume and not args.out:
        raise MtlkitError("--resume needs --out DIR: the run directory to continue")
    out = args.out or default_out_dir(args.config)
    if not args.out and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MtlkitError("with torchrun, give --out so that every process writes the same run")
    overrides = list(args.overrides)
    if args.eval_every is not None:
        overrides.append(f"train.eval_every={args.eval_every}")
    metrics = train(args.config, out, iters=args.iters, resume=args.resume,
                    checkpoint_every=args.checkpoint_every, seed=args.seed, overrides=overrides,
                    progress=False if args.no_progress else None)
    if int(os.environ.get("RANK", "0")) == 0:  # the process group is closed by now: rank from torchrun
        if metrics:
            print(summary(metrics))
        print(f"run directory: {out}", file=sys.stderr)
    return 0
