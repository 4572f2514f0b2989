"""``mtlkit eval CONFIG --checkpoint PATH [--out DIR] [--split S] [--measured TASK ...] [-o key=value ...]``:
evaluate a checkpoint (``--measured depth normals``: with the data's sensor
maps as the model's measured inputs; default none); prints a table, writes ``metrics.json``,
``detections.json`` (COCO results) and ``per_class_ap.png`` into ``--out``
(default: ``<checkpoint folder>/eval_<split>``). A training run's folder as
``--out`` is refused (its ``metrics.json`` would be replaced)."""

from __future__ import annotations

import argparse
import os
import sys

from mtlkit.commands._common import add_config_arguments, add_measured_argument, measured_names
from mtlkit.config import flag_overrides, run_config
from mtlkit.engine import dist
from mtlkit.engine.evaluator import evaluate
from mtlkit.metrics import summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint (OUT/last.pt of a run)")
    parser.add_argument("--out", help="output folder (default: <checkpoint folder>/eval_<split>)")
    parser.add_argument("--split", choices=["train", "val", "test"],
                        help="data split to evaluate (default: eval.split, i.e. val)")
    parser.add_argument("--per-class", action="store_true", help="print per-class AP rows too")
    parser.add_argument("--raw-weights", action="store_true",
                        help="evaluate the raw weights even when the checkpoint has EMA weights")
    add_measured_argument(parser)


def main(args: argparse.Namespace) -> int:
    cfg = run_config(args.config, list(args.overrides) + flag_overrides("eval", split=args.split))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)),
                                   f"eval_{cfg['eval']['split']}")
    metrics = evaluate(cfg, args.checkpoint, out_dir=out, use_ema=False if args.raw_weights else None,
                       measured=measured_names(args.measured))
    if dist.is_main():
        print(summary(metrics, per_class=args.per_class))
        print(f"results written to {out}", file=sys.stderr)
    return 0
