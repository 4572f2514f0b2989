"""Backbone pre-training on RGB-only labels (the synthetic stand-in for ImageNet).

The paper fine-tunes an ImageNet-pretrained ResNet-50 on NYUv2's 795 images.
Trained from scratch on a few hundred images instead, a detector gets most of
its features from whatever supervision it has, so every multi-task row gains
alike from the auxiliary labels and the ablation no longer isolates ROCK. This
module produces the equivalent of ImageNet weights for the synthetic world: a
backbone trained on a large synthetic set, disjoint from every ablation set
(its own world seed), with RGB-only labels:

* the scene type of each image (global average pool of X -> linear), and
* the class of each object crop (the box cut out of the image, resized to
  ``crop_size`` and classified through the same backbone; ImageNet's task).

It never sees depth, normals or boxes as regression targets. The result is a
plain state dict in torchvision names (``mtlkit.models.backbones`` load it
through ``model.backbone.weights``), stored as float16 to keep the file small.

    mtlkit pretrain --data data/pretrain --out weights/resnet_small_rooms.pt
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.errors import ConfigError

DEFAULTS: Dict[str, Any] = {
    "backbone": "resnet_small",
    "image_size": [120, 160],
    "crop_size": 64,
    "crops_per_batch": 48,
    "batch_size": 16,
    "iters": 2000,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "warmup_iters": 100,
    "seed": 0,
}


class PretrainNet(nn.Module):
    """Backbone + two linear heads: scene (images) and object class (crops)."""

    def __init__(self, backbone: nn.Module, num_scenes: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        channels = int(backbone.out_channels[-1])
        self.scene = nn.Linear(channels, num_scenes)
        self.crop = nn.Linear(channels, num_classes)
        self.register_buffer("mean", torch.tensor(getattr(backbone, "mean", (0.0, 0.0, 0.0))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(getattr(backbone, "std", (1.0, 1.0, 1.0))).view(1, 3, 1, 1))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, C) globally pooled X."""
        x = self.backbone((images - self.mean) / self.std)[-1]
        return x.float().mean(dim=(2, 3))


def _crops(images: torch.Tensor, boxes: List[torch.Tensor], labels: List[torch.Tensor], size: int,
           count: int, rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Up to ``count`` object crops (jittered by up to 10% of the box), resized
    to size x size: ((K, 3, size, size), (K,) labels in 0..C-1)."""
    pool = [(i, j) for i, b in enumerate(boxes) for j in range(len(b))]
    if not pool:
        return images.new_zeros((0, 3, size, size)), torch.zeros(0, dtype=torch.int64)
    picks = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    height, width = images.shape[-2:]
    out, out_labels = [], []
    for k in picks:
        i, j = pool[int(k)]
        x1, y1, x2, y2 = (float(v) for v in boxes[i][j])
        w, h = x2 - x1, y2 - y1
        dx, dy = rng.uniform(-0.1, 0.1, 2) * (w, h)
        grow = rng.uniform(1.0, 1.2)
        cx, cy = (x1 + x2) / 2 + dx, (y1 + y2) / 2 + dy
        w, h = max(w * grow, 2.0), max(h * grow, 2.0)
        l, r = int(max(0, math.floor(cx - w / 2))), int(min(width, math.ceil(cx + w / 2)))
        t, b = int(max(0, math.floor(cy - h / 2))), int(min(height, math.ceil(cy + h / 2)))
        if r - l < 2 or b - t < 2:
            continue
        crop = images[i:i + 1, :, t:b, l:r]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        out.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False))
        out_labels.append(int(labels[i][j]) - 1)
    if not out:
        return images.new_zeros((0, 3, size, size)), torch.zeros(0, dtype=torch.int64)
    return torch.cat(out), torch.tensor(out_labels, dtype=torch.int64)


def pretrain(data_root: str, out_path: str, **options: Any) -> Dict[str, float]:
    """Train ``options["backbone"]`` on the set written by ``mtlkit data synth``
    in ``data_root``; write its state dict (float16) to ``out_path``.
    Returns the final training accuracies."""
    from mtlkit.data import collate
    from mtlkit.data.synthetic import SyntheticRooms
    from mtlkit.data.transforms import build_transforms
    from mtlkit.registry import get_registry
    from mtlkit.utils.io import atomic_write

    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"pretrain: unknown option '{unknown[0]}'; known: {', '.join(DEFAULTS)}")
    opts = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    torch.manual_seed(int(opts["seed"]))
    rng = np.random.default_rng(int(opts["seed"]))
    dataset = SyntheticRooms(root=data_root)
    backbone = get_registry().get("backbone", opts["backbone"])()
    net = PretrainNet(backbone, len(dataset.scenes), len(dataset.classes))
    net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=float(opts["lr"]),
                                  weight_decay=float(opts["weight_decay"]), fused=True)
    transform = build_transforms({"expand": 0.0}, list(opts["image_size"]), train=True)
    iters, batch_size = int(opts["iters"]), int(opts["batch_size"])
    order: List[int] = []
    window: Dict[str, float] = {"scene": 0.0, "crop": 0.0, "n": 0}
    start = time.time()
    net.train()
    for it in range(iters):
        warm = min(1.0, (it + 1) / max(1, int(opts["warmup_iters"])))
        for group in optimizer.param_groups:
            group["lr"] = float(opts["lr"]) * warm * 0.5 * (1 + math.cos(math.pi * it / iters))
        if len(order) < batch_size:
            order += rng.permutation(len(dataset)).tolist()
        picks, order = order[:batch_size], order[batch_size:]
        batch = collate([transform(dataset[i], np.random.default_rng((int(opts["seed"]), it, i)))
                         for i in picks])
        images = batch["image"]
        crops, crop_labels = _crops(images, batch["boxes"], batch["labels"], int(opts["crop_size"]),
                                    int(opts["crops_per_batch"]), rng)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            scene_logits = net.scene(net.features(images.contiguous(memory_format=torch.channels_last)))
            loss = F.cross_entropy(scene_logits.float(), batch["scene"])
            if len(crops):
                crop_logits = net.crop(net.features(crops.contiguous(memory_format=torch.channels_last)))
                loss = loss + F.cross_entropy(crop_logits.float(), crop_labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window["scene"] += float((scene_logits.argmax(1) == batch["scene"]).float().mean())
        window["crop"] += float((crop_logits.argmax(1) == crop_labels).float().mean()) if len(crops) else 0.0
        window["n"] += 1
        if (it + 1) % 50 == 0 or it + 1 == iters:
            n = window["n"]
            print(f"pretrain {it + 1}/{iters}: loss {float(loss.detach()):.3f}, scene acc {window['scene'] / n:.3f}, "
                  f"crop acc {window['crop'] / n:.3f}, {time.time() - start:.0f} s", file=sys.stderr,
                  flush=True)
            result = {"scene_accuracy": window["scene"] / n, "crop_accuracy": window["crop"] / n}
            window = {"scene": 0.0, "crop": 0.0, "n": 0}
    state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
             for k, v in backbone.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with atomic_write(out_path, "wb") as handle:
        torch.save(state, handle)
    os.chmod(out_path, 0o644)  # a file to ship, not a private temporary
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a folder written by `mtlkit data synth`")
    parser.add_argument("--out", required=True, help="output state dict (.pt)")
    for key, value in DEFAULTS.items():
        if key in ("image_size",):
            parser.add_argument(f"--{key.replace('_', '-')}", type=int, nargs=2, default=None)
        elif key == "backbone":
            parser.add_argument("--backbone", default=None, help=f"default {value}")
        else:
            parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None,
                                help=f"default {value}")


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    options = {k: getattr(args, k) for k in DEFAULTS}
    result = pretrain(args.data, args.out, **options)
    print(f"written {args.out}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()))
    return 0
