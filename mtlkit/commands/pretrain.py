"""``mtlkit pretrain``: backbone pre-training on RGB-only labels (the synthetic
stand-in for ImageNet).

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

It trains with the engine's trainer (:class:`PretrainStep` is its step), so it
has what every run has: a run directory (config.yaml, metrics.jsonl with the
two losses and accuracies, last.pt, curves.png), exact resume (``--resume
--run-dir DIR``), SIGINT saves then stops, bf16 autocast and channels_last on
CPU, DDP under ``torchrun``, the one lr schedule (cosine with linear warm-up).

    mtlkit pretrain --data data/pretrain --out weights/resnet_small_rooms.pt [--run-dir DIR] [--resume]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.data.builders import build_split
from mtlkit.engine import dist
from mtlkit.engine.precision import to_memory_format
from mtlkit.engine.runtime import default_out_dir, run_config
from mtlkit.engine.hooks import HookBase
from mtlkit.engine.state import FINISHED, RunState
from mtlkit.engine.step import Losses, TrainStep
from mtlkit.engine.trainer import Trainer
from mtlkit.errors import ConfigError, MtlkitError
from mtlkit.options import Schema
from mtlkit.registry import get_registry
from mtlkit.schema import SEED_RANGE
from mtlkit.utils.io import atomic_write, check_out_dir
from mtlkit.utils.outdir import claim
from mtlkit.utils.paths import kind_of, not_a_file
from mtlkit.utils.runlock import RunLock

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
#: the ranges of :data:`DEFAULTS` (a NaN or infinite number is outside every range)
RANGES: Dict[str, str] = {
    "image_size": ">= 8", "crop_size": ">= 8", "crops_per_batch": ">= 1", "batch_size": ">= 1",
    "iters": ">= 1", "lr": "> 0", "weight_decay": ">= 0", "warmup_iters": ">= 0", "seed": SEED_RANGE,
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

    def forward(self, images: torch.Tensor, crops: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(scene logits (B, S), crop logits (K, C) or None without crops):
        one call, so that DDP sees one forward per backward."""
        scene = self.scene(self.features(images))
        crop = self.crop(self.features(crops)) if crops is not None and len(crops) else None
        return scene, crop


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


class PretrainStep(TrainStep):
    """The trainer's step for pre-training: per micro-batch, up to
    ``crops_per_batch`` object crops cut out of the images; the loss is the
    scene cross-entropy plus the crops' class cross-entropy; the training
    accuracies of both are logged (``scalars`` of the train records).

    The crops' random draws come from (train.seed, the batch's position in the
    data stream, the rank): a resumed run draws what the uninterrupted one drew."""

    def __init__(self, crop_size: int, crops_per_batch: int):
        super().__init__()
        self.crop_size, self.crops_per_batch = int(crop_size), int(crops_per_batch)

    def loss_names(self, state: RunState) -> List[str]:
        return ["scene", "crop"]

    def forward(self, state: RunState, batch: Dict[str, Any]) -> Losses:
        position = state.stream.state()
        rng = np.random.default_rng([int(state.train_cfg["seed"]), position["epoch"], position["batch"],
                                     dist.rank()])
        images = batch["image"]
        crops, crop_labels = _crops(images, batch["boxes"], batch["labels"], self.crop_size,
                                    self.crops_per_batch, rng)
        crop_labels = crop_labels.to(images.device)
        scene_logits, crop_logits = state.model(
            to_memory_format(images, state.channels_last),
            to_memory_format(crops, state.channels_last) if len(crops) else None)
        scene = F.cross_entropy(scene_logits.float(), batch["scene"])
        if crop_logits is not None:
            crop = F.cross_entropy(crop_logits.float(), crop_labels)
            crop_accuracy = (crop_logits.argmax(1) == crop_labels).float().mean()
        else:  # no object in the batch: an exact zero through the crop head (DDP sees it used)
            crop = sum(p.sum() for p in state.core.crop.parameters()) * 0.0
            crop_accuracy = 0.0
        scene_accuracy = (scene_logits.argmax(1) == batch["scene"]).float().mean()
        return Losses(tasks={"scene": scene, "crop": crop}, total=scene + crop,
                      scalars={"scene_accuracy": scene_accuracy, "crop_accuracy": crop_accuracy})

    def state_dict(self) -> Dict[str, Any]:
        return {"crop_size": self.crop_size, "crops_per_batch": self.crops_per_batch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if dict(state) != self.state_dict():
            raise ConfigError(f"--resume: the run was pre-trained with {dict(state)}, not {self.state_dict()}; "
                              "resume with the same options or start a new --run-dir")


def pretrain_config(data_root: str, options: Mapping[str, Any], progress: bool = False) -> Dict[str, Any]:
    """The config of a pre-training run (``options``: :data:`DEFAULTS` complete):
    the data read from ``data_root`` (a folder of ``mtlkit data synth``) with
    the SSD augmentation without zoom-out, AdamW, cosine with linear warm-up
    (from lr / warmup_iters), bf16 autocast, channels_last."""
    warmup = int(options["warmup_iters"])
    return {
        "name": "pretrain",
        "description": "backbone pre-training on RGB-only labels (mtlkit pretrain)",
        "model": {"backbone": {"name": options["backbone"]}},
        "data": {"train": {"type": "synthetic", "root": os.path.abspath(data_root)},
                 "image_size": [int(v) for v in options["image_size"]],
                 "batch_size": int(options["batch_size"]), "num_workers": 0, "augment": {"expand": 0.0}},
        "train": {"iters": int(options["iters"]), "seed": int(options["seed"]),
                  "optimizer": {"name": "adamw", "lr": float(options["lr"]),
                                "weight_decay": float(options["weight_decay"]), "fused": True},
                  "schedule": {"name": "cosine", "warmup_iters": warmup,
                               "warmup_factor": 1.0 / max(1, warmup)},
                  "amp": True, "channels_last": True, "log_every": 50, "eval_at_end": False,
                  "progress": bool(progress)},
    }


def pretrain(data_root: str, out_path: str, run_dir: Optional[str] = None, resume: bool = False,
             progress: bool = False, **options: Any) -> Dict[str, float]:
    """Train ``options["backbone"]`` on the set written by ``mtlkit data synth``
    in ``data_root``; write its state dict (float16) to ``out_path``.
    Returns the training accuracies of the last logged window.

    :param run_dir: the trainer's run directory (default: a temporary one,
        removed afterwards: nothing to resume).
    :param resume: continue the run in ``run_dir``.
    :param options: :data:`DEFAULTS` (None keeps the default)."""
    opts = Schema(DEFAULTS, ranges=RANGES, lengths={"image_size": 2}).options(options, "pretrain")
    if resume and run_dir is None:
        raise ConfigError("pretrain: resume needs the run directory to continue (run_dir / --run-dir)")
    claim_output(out_path)
    cfg = run_config(pretrain_config(data_root, opts, progress))
    train_set = build_split(cfg, "train", train=True, seed=int(opts["seed"]))
    torch.manual_seed(int(opts["seed"]))  # the backbone's initialisation
    backbone = get_registry().get("backbone", opts["backbone"])()
    net = PretrainNet(backbone, len(train_set.scenes), len(train_set.classes))
    step = PretrainStep(opts["crop_size"], opts["crops_per_batch"])
    with tempfile.TemporaryDirectory(prefix="mtlkit-pretrain-") as scratch:
        folder = run_dir if run_dir is not None else scratch
        Trainer(cfg, folder, resume=resume, model=net, train_dataset=train_set, step=step,
                hooks=[WriteBackbone(backbone, out_path)]).run()
        return _last_scalars(os.path.join(folder, "metrics.jsonl"))


def claim_output(out_path: str) -> None:
    """Before any work: ``out_path`` is a file to write (not a folder, a
    device or a pipe) whose folder can be written, and not a file that
    ``mtlkit pretrain`` did not write there (a training run's ``last.pt``, a
    shipped weights file): :func:`mtlkit.utils.outdir.claim`, on rank 0."""
    out_path = os.fspath(out_path)
    if kind_of(out_path) != "missing":
        reason = not_a_file(out_path, "the file of the backbone weights to write")
        if reason is not None:
            raise MtlkitError(f"--out {reason}")
    folder = os.path.dirname(os.path.abspath(out_path))
    check_out_dir(folder, what="the folder of --out")
    if int(os.environ.get("RANK", "0")) != 0:
        return
    with RunLock(folder, what="the folder of --out"):
        claim(folder, [os.path.basename(out_path)], "pretrain", what="the folder of --out")


class WriteBackbone(HookBase):
    """When the run finishes, rank 0 writes the backbone's state dict (float16,
    torchvision names) to ``path``, atomically."""

    def __init__(self, backbone: nn.Module, path: str):
        self.backbone, self.path = backbone, path

    def after_train(self) -> None:
        if self.state.outcome != FINISHED or not dist.is_main():
            return
        state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
                 for k, v in self.backbone.state_dict().items()}
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with atomic_write(self.path, "wb") as handle:
            torch.save(state, handle)


def _last_scalars(metrics_path: str) -> Dict[str, float]:
    """The ``scalars`` of the last training record of ``metrics.jsonl``."""
    last: Dict[str, float] = {}
    if os.path.isfile(metrics_path):
        with open(metrics_path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("event") == "train":
                    last = {k: float(v) for k, v in (record.get("scalars") or {}).items()}
    return last


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a folder written by `mtlkit data synth`")
    parser.add_argument("--out", required=True, help="output state dict (.pt)")
    parser.add_argument("--run-dir", default=None,
                        help="the training run's folder: config, metrics.jsonl, last.pt, curves.png "
                             "(default: runs/pretrain-<out stem>-<timestamp>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    for key, value in DEFAULTS.items():
        if key in ("image_size",):
            parser.add_argument(f"--{key.replace('_', '-')}", type=int, nargs=2, default=None)
        elif key == "backbone":
            parser.add_argument("--backbone", default=None, help=f"default {value}")
        else:
            parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None,
                                help=f"default {value}")


def main(args: argparse.Namespace) -> int:
    if args.resume and not args.run_dir:
        raise MtlkitError("--resume needs --run-dir DIR: the run directory to continue")
    if not args.run_dir and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MtlkitError("with torchrun, give --run-dir so that every process writes the same run")
    torch.set_num_threads(1)
    run_dir = args.run_dir or default_out_dir(f"pretrain-{os.path.splitext(os.path.basename(args.out))[0]}")
    options = {k: getattr(args, k) for k in DEFAULTS}
    result = pretrain(args.data, args.out, run_dir=run_dir, resume=args.resume,
                      progress=not args.no_progress, **options)
    if int(os.environ.get("RANK", "0")) == 0:  # the process group is closed by now
        print(f"written {args.out}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()))
        print(f"run directory: {run_dir}", file=sys.stderr)
    return 0
