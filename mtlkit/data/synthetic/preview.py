"""A preview grid of samples: image with labelled boxes | depth | normals, one row each."""

from __future__ import annotations

import argparse
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image, ImageDraw

from mtlkit import viz
from mtlkit.utils.io import atomic_write

from .appearance import DOMAINS
from .generate import generate_sample, make_options
from .objects import CLASSES
from .scenes import SCENES


def depth_picture(depth: np.ndarray, mask: np.ndarray, max_depth: float = 10.0) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 over [0, ``max_depth``] (:func:`mtlkit.viz.colorize_depth`)."""
    return viz.colorize_depth(depth, mask, vmin=0.0, vmax=max_depth)


def normals_picture(normals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(3, H, W) unit camera-frame normals -> (H, W, 3) uint8 (:func:`mtlkit.viz.colorize_normals`)."""
    return viz.colorize_normals(normals, mask)


def boxes_picture(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                  title: str = "") -> np.ndarray:
    """(H, W, 3) uint8 with labelled boxes (:func:`mtlkit.viz.draw_boxes`) and a title."""
    pic = Image.fromarray(viz.draw_boxes(image, boxes, labels, class_names=classes, width=1))
    if title:
        ImageDraw.Draw(pic).text((4, image.shape[0] - 12), title, fill=(255, 255, 255))
    return np.asarray(pic)


def preview_grid(samples: List[Dict[str, np.ndarray]], classes: Sequence[str], scenes: Sequence[str]) -> np.ndarray:
    """Rows of [image + boxes | depth | normals] for numpy samples of generate_sample,
    followed by [sensor depth | sensor normals] when the samples have a sensor
    (holes black)."""
    rows = []
    for s in samples:
        title = scenes[int(s["scene"])]
        panels = [
            boxes_picture(s["image"], s["boxes"], s["labels"], classes, title),
            depth_picture(s["depth"], s["depth_mask"]),
            normals_picture(s["normals"], s["normals_mask"]),
        ]
        if "sensor_depth" in s:
            panels += [depth_picture(s["sensor_depth"], s["sensor_depth_mask"]),
                       normals_picture(s["sensor_normals"], s["sensor_normals_mask"])]
        rows.append(np.concatenate(panels, axis=1))
    return np.concatenate(rows, axis=0)


def save_preview(path: str, samples: List[Dict[str, np.ndarray]], classes, scenes) -> None:
    grid = preview_grid(samples, classes, scenes)
    with atomic_write(path, "wb") as handle:
        Image.fromarray(grid).save(handle, format="PNG")


def domain_grid(seed: int, split: str, indices: Sequence[int], domains: Sequence[str],
                image_size=(120, 160)) -> np.ndarray:
    """The same scenes under several appearance domains, one row per sample:
    [domain 1 (with the labelled boxes) | domain 2 | ... | depth], with a
    caption row naming the columns."""
    options = [make_options(image_size, domain=name) for name in domains]
    rows = []
    for index in indices:
        samples = [generate_sample(seed, split, int(index), o) for o in options]
        first = samples[0]
        tiles = [boxes_picture(first["image"], first["boxes"], first["labels"], CLASSES,
                               SCENES[int(first["scene"])])]
        tiles += [s["image"] for s in samples[1:]]
        tiles.append(depth_picture(first["depth"], first["depth_mask"]))
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    caption = Image.new("RGB", (grid.shape[1], 14), (255, 255, 255))
    draw = ImageDraw.Draw(caption)
    width = image_size[1]
    for k, name in enumerate(list(domains) + ["depth (every domain)"]):
        draw.text((k * width + 4, 1), name, fill=(0, 0, 0))
    return np.concatenate([np.asarray(caption), grid], axis=0)


def _main(argv=None) -> int:
    """``python -m mtlkit.data.synthetic.preview --out PNG [--domains ...]``: the
    same scenes under several domains side by side (docs/synthetic.md's picture)."""
    parser = argparse.ArgumentParser(prog="python -m mtlkit.data.synthetic.preview", description=_main.__doc__)
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), help="columns (default: every domain)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="val")
    parser.add_argument("--indices", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--size", type=int, nargs=2, default=(120, 160), metavar=("H", "W"))
    parser.add_argument("--colours", type=int, default=256,
                        help="palette size of the PNG (default 256: a quarter of the bytes); 0: full RGB")
    args = parser.parse_args(argv)
    picture = Image.fromarray(domain_grid(args.seed, args.split, args.indices, args.domains, tuple(args.size)))
    if args.colours:
        picture = picture.quantize(min(max(args.colours, 2), 256))
    with atomic_write(args.out, "wb") as handle:
        picture.save(handle, format="PNG", optimize=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
