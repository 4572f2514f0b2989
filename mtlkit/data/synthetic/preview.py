"""A preview grid of samples: image with labelled boxes | depth | normals, one row each."""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
from PIL import Image, ImageDraw

from mtlkit import viz
from mtlkit.utils.io import atomic_write


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
