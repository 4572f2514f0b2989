"""A preview grid of samples: image with labelled boxes | depth | normals, one row each."""

from __future__ import annotations

from typing import Dict, List, Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

from mtlkit.utils.io import atomic_write

#: distinct box colours, one per class (cycled)
BOX_COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


def depth_picture(depth: np.ndarray, mask: np.ndarray, max_depth: float = 10.0) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 with a perceptual colour map; invalid pixels black."""
    values = np.clip(depth / max_depth, 0, 1)
    rgb = (matplotlib.colormaps["turbo"](values)[..., :3] * 255).astype(np.uint8)
    rgb[~mask] = 0
    return rgb


def normals_picture(normals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(3, H, W) unit camera-frame normals -> (H, W, 3) uint8, (n + 1) / 2 as RGB."""
    rgb = ((normals.transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)
    rgb[~mask] = 0
    return rgb


def boxes_picture(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                  title: str = "") -> np.ndarray:
    """(H, W, 3) uint8 with labelled boxes drawn on it."""
    pic = Image.fromarray(image)
    draw = ImageDraw.Draw(pic)
    for box, label in zip(boxes, labels):
        colour = BOX_COLOURS[(int(label) - 1) % len(BOX_COLOURS)]
        draw.rectangle([float(box[0]), float(box[1]), float(box[2]) - 1, float(box[3]) - 1], outline=colour)
        draw.text((float(box[0]) + 2, float(box[1]) + 1), classes[int(label) - 1], fill=colour)
    if title:
        draw.text((4, image.shape[0] - 12), title, fill=(255, 255, 255))
    return np.asarray(pic)


def preview_grid(samples: List[Dict[str, np.ndarray]], classes: Sequence[str], scenes: Sequence[str]) -> np.ndarray:
    """Rows of [image + boxes | depth | normals] for numpy samples of generate_sample."""
    rows = []
    for s in samples:
        title = scenes[int(s["scene"])]
        rows.append(np.concatenate([
            boxes_picture(s["image"], s["boxes"], s["labels"], classes, title),
            depth_picture(s["depth"], s["depth_mask"]),
            normals_picture(s["normals"], s["normals_mask"]),
        ], axis=1))
    return np.concatenate(rows, axis=0)


def save_preview(path: str, samples: List[Dict[str, np.ndarray]], classes, scenes) -> None:
    grid = preview_grid(samples, classes, scenes)
    with atomic_write(path, "wb") as handle:
        Image.fromarray(grid).save(handle, format="PNG")
