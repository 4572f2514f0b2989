"""Synthetic rooms held on the device, for the training-step and inference
figures: rendered once (in parallel), collated into batches and moved to the
device before anything is timed, so the figures are those of a training set
resident in GPU memory (the issue's setting).

Rendering needs trimesh and embreex. Where they are missing (a device image
without them and no carried wheels), the rooms are replaced by random tensors
of the same shapes and label ranges, and every row says so: the step's cost
does not depend on the pixels, only the number of boxes per image matters,
and the random stand-in draws 1-12 per image like the rooms.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any, Dict, List, Tuple

import torch

from mtlkit.data import collate
from mtlkit.engine.runtime import move_to

RENDER_SEED = 0


def _render(task: Tuple[int, Tuple[int, int]]) -> Dict[str, Any]:
    from mtlkit.data.synthetic import generate_sample, make_options, to_sample

    index, size = task
    sample = to_sample(generate_sample(RENDER_SEED, "train", index, make_options(size)), index)
    sample.pop("meta", None)
    return sample


def random_room(index: int, size: Tuple[int, int]) -> Dict[str, Any]:
    """A stand-in sample with the rooms' shapes, dtypes and label ranges."""
    g = torch.Generator().manual_seed(1000 + index)
    h, w = size
    n = int(torch.randint(1, 13, (), generator=g))
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4]) + 8
    boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([float(w), float(h)]))], 1)
    normals = torch.randn(3, h, w, generator=g)
    normals = normals / normals.norm(dim=0, keepdim=True)
    return {
        "image": torch.rand(3, h, w, generator=g),
        "boxes": boxes,
        "labels": torch.randint(1, 12, (n,), generator=g),
        "scene": torch.randint(0, 6, (), generator=g),
        "depth": torch.rand(1, h, w, generator=g) * 5 + 0.5,
        "depth_mask": torch.ones(1, h, w, dtype=torch.bool),
        "normals": normals,
        "normals_mask": torch.ones(1, h, w, dtype=torch.bool),
        "has": {"detection": True, "scene": True, "depth": True, "normals": True},
    }


def render_rooms(count: int, size: Tuple[int, int], workers: int) -> Tuple[List[Dict[str, Any]], str]:
    """``count`` samples at ``size`` and where they come from (a phrase for the table)."""
    try:
        import embreex  # noqa: F401
        import trimesh  # noqa: F401
    except ImportError as exc:
        return [random_room(i, size) for i in range(count)], f"random stand-ins ({exc.name} missing)"
    tasks = [(i, tuple(size)) for i in range(count)]
    if workers > 1 and count > 1:
        with multiprocessing.get_context("spawn").Pool(min(workers, count)) as pool:
            samples = pool.map(_render, tasks)
    else:
        samples = [_render(t) for t in tasks]
    return samples, f"synthetic rooms (seed {RENDER_SEED}, {count} rendered)"


def resident_batches(samples: List[Dict[str, Any]], batch: int, device: torch.device) -> List[Dict[str, Any]]:
    """Consecutive groups of ``batch`` samples (cycling), collated and on ``device``."""
    groups = max(1, len(samples) // batch)
    out = []
    for g in range(groups):
        chosen = [samples[(g * batch + i) % len(samples)] for i in range(batch)]
        out.append(move_to(collate(chosen), device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out


def workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
