"""``mtlkit data ...``: prepare datasets.

* ``mtlkit data synth ...`` — render synthetic rooms to disk (see
  :mod:`mtlkit.data.synthetic.cli`);
* ``mtlkit data nyuv2 --mat nyu_depth_v2_labeled.mat --splits splits.mat
  [--normals DIR] [--val-scenes FILE] --out DIR`` — build the NYUv2 cache
  (see :mod:`mtlkit.data.nyuv2`).

Both take the folder's lock (:mod:`mtlkit.utils.runlock`: a second process
writing into the same ``--out`` is refused) and never write over a file they
did not write: ``synth`` refuses a folder holding ``samples/``,
``preview.png`` or ``pack/`` without its ``dataset.json``; ``nyuv2`` refuses
an ``nyuv2_<split>.h5`` that is not an mtlkit cache.
"""

from __future__ import annotations

import argparse

from mtlkit.data.nyuv2 import prepare_nyuv2
from mtlkit.errors import MtlkitError
from mtlkit.utils.io import check_out_dir
from mtlkit.utils.runlock import RunLock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="{synth,nyuv2}")
    sub.required = True

    synth = sub.add_parser("synth", help="render synthetic rooms to disk")
    try:
        # optional: the renderer's trimesh + embreex (the other subcommands stay usable without)
        from mtlkit.data.synthetic import cli as synth_cli
    except Exception as exc:  # noqa: BLE001 - the other subcommands stay usable
        synth.set_defaults(_synth_error=f"{type(exc).__name__}: {exc}")
    else:
        synth_cli.add_arguments(synth)
        synth.set_defaults(_synth_main=synth_cli.main)

    nyu = sub.add_parser("nyuv2", help="prepare the NYUv2 cache from the official .mat files",
                         description="Prepare NYU Depth v2 (labeled) into one HDF5 cache per split.")
    nyu.add_argument("--mat", required=True, help="nyu_depth_v2_labeled.mat (MATLAB v7.3)")
    nyu.add_argument("--splits", required=True, help="splits.mat with trainNdxs / testNdxs (1-based)")
    nyu.add_argument("--normals", default=None, metavar="DIR",
                     help="Eigen normals: DIR/normals/<index>.png and DIR/masks/<index>.png "
                          "(default: compute normals from depth)")
    nyu.add_argument("--normals-index-base", type=int, default=1, choices=(0, 1),
                     help="index of the first image in the normal file names (default 1)")
    nyu.add_argument("--val-scenes", default=None, metavar="FILE",
                     help="scene names (one per line) whose training images form a 'val' split")
    nyu.add_argument("--out", required=True, metavar="DIR", help="output folder of nyuv2_<split>.h5")
    nyu.add_argument("--limit", type=int, default=None, help="only the first N images of each split")
    nyu.add_argument("--compression", default="lzf", choices=("lzf", "gzip", "none"),
                     help="HDF5 compression of the image maps (default lzf)")
    nyu.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        if getattr(args, "_synth_error", None):
            raise MtlkitError(f"the synthetic renderer cannot be imported: {args._synth_error}")
        check_out_dir(args.out)
        with RunLock(args.out):  # one writer per folder; the set itself refuses a folder it did not write
            return int(args._synth_main(args) or 0)
    if args.data_command == "nyuv2":
        check_out_dir(args.out)
        with RunLock(args.out):
            return _nyuv2(args, prepare_nyuv2)
    raise MtlkitError(f"unknown data command {args.data_command!r}")


def _nyuv2(args: argparse.Namespace, prepare_nyuv2) -> int:
    written = prepare_nyuv2(
        args.mat, args.splits, args.out, normals=args.normals, val_scenes=args.val_scenes,
        normals_index_base=args.normals_index_base,
        compression=None if args.compression == "none" else args.compression,
        progress=not args.no_progress, limit=args.limit,
    )
    for split, path in written.items():
        print(f"{split}: {path}")
    return 0
