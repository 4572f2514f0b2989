"""Where does a synthetic set put class evidence? A linear-probe-sized check.

Object crops (each ground-truth box, resized to ``size`` x ``size``) are
classified by the same small CNN from one input at a time:

* ``rgb``: the colour crop (3 channels);
* ``geometry``: depth and normals (4 channels: log-depth minus its median over
  the crop, so the object's shape and not its distance; the 3 normal
  components);
* ``all``: both (7 channels).

Trained on the crops of one set, scored on another's: the test accuracy of
each says how much class evidence that input carries. ROCK's auxiliary tasks
can only help detection with what geometry adds to colour. The CNN trains
with the engine's trainer (:class:`ProbeStep`, the one lr schedule).

    python -m mtlkit.research.probe --train DIR --test DIR [--iters 600]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.data.synthetic import SyntheticRooms
from mtlkit.engine.state import RunState
from mtlkit.engine.step import Losses, TrainStep
from mtlkit.engine.trainer import train as engine_train

INPUTS = ("rgb", "geometry", "all")


def crops(root: str, size: int = 32, limit: int = 0) -> Dict[str, torch.Tensor]:
    """Every box of the set in ``root`` as crops: {"rgb": (N, 3, s, s),
    "geometry": (N, 4, s, s), "labels": (N,) in 0..C-1}."""
    dataset = SyntheticRooms(root=root)
    rgb, geometry, labels = [], [], []
    count = len(dataset) if limit <= 0 else min(limit, len(dataset))
    for index in range(count):
        a = dataset.arrays(index)
        image = torch.from_numpy(a["image"]).permute(2, 0, 1).float() / 255.0
        depth = torch.from_numpy(a["depth"]).float().clamp_min(1e-3).log()[None]
        normals = torch.from_numpy(a["normals"]).float()
        for box, label in zip(a["boxes"], a["labels"]):
            x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
            x2, y2 = max(x1 + 1, int(np.ceil(box[2]))), max(y1 + 1, int(np.ceil(box[3])))
            d = depth[:, y1:y2, x1:x2]
            d = d - d.median()
            geo = torch.cat([d, normals[:, y1:y2, x1:x2]])[None]
            rgb.append(F.interpolate(image[None, :, y1:y2, x1:x2], size=(size, size), mode="bilinear",
                                     align_corners=False)[0])
            geometry.append(F.interpolate(geo, size=(size, size), mode="nearest")[0])
            labels.append(int(label) - 1)
    return {"rgb": torch.stack(rgb), "geometry": torch.stack(geometry),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def _inputs(data: Dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    if kind == "all":
        return torch.cat([data["rgb"], data["geometry"]], dim=1)
    return data[kind]


def _net(channels: int, classes: int) -> nn.Module:
    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True), nn.MaxPool2d(2))

    return nn.Sequential(block(channels, 32), block(32, 64), block(64, 128), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(128, classes))


class CropSet(torch.utils.data.Dataset):
    """In-memory crops as training samples: {"image": (C, s, s), "label": ()}."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        return {"image": self.images[index], "label": self.labels[index]}


class ProbeStep(TrainStep):
    """The trainer's step for the probe: cross-entropy of the crop classes,
    on mirrored crops every other iteration (normals' x sign is left as is:
    a fixed input code)."""

    def loss_names(self, state: RunState) -> List[str]:
        return ["class"]

    def forward(self, state: RunState, batch: Dict[str, torch.Tensor]) -> Losses:
        images = batch["image"].flip(-1) if state.iter % 2 else batch["image"]
        loss = F.cross_entropy(state.model(images), batch["label"])
        return Losses(tasks={"class": loss}, total=loss)


def probe_config(iters: int, batch: int, seed: int) -> Dict[str, Any]:
    """The trainer config of one probe: AdamW (lr 2e-3, weight decay 1e-4),
    cosine to 0 without warm-up, on CPU, nothing but the checkpoint written."""
    return {"data": {"batch_size": int(batch), "num_workers": 0},
            "train": {"iters": int(iters), "seed": int(seed), "device": "cpu",
                      "optimizer": {"name": "adamw", "lr": 2e-3, "weight_decay": 1e-4},
                      "schedule": {"name": "cosine"}, "log_every": max(1, int(iters)),
                      "eval_at_end": False, "progress": False, "plots": False, "tensorboard": False}}


def probe(train: Dict[str, torch.Tensor], test: Dict[str, torch.Tensor], kind: str, iters: int = 600,
          batch: int = 64, seed: int = 0) -> Tuple[float, float]:
    """(train accuracy, test accuracy) of the CNN on input ``kind``, trained
    by the engine's trainer (:class:`ProbeStep`) in a temporary run directory."""
    x, y = _inputs(train, kind), train["labels"]
    mean, std = x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    classes = int(max(y.max(), test["labels"].max())) + 1
    torch.manual_seed(seed)
    net = _net(x.shape[1], classes)
    with tempfile.TemporaryDirectory(prefix="mtlkit-probe-") as run_dir:
        engine_train(probe_config(iters, min(batch, len(y)), seed), run_dir, model=net,
                     train_dataset=CropSet((x - mean) / std, y),
                     collate_fn=torch.utils.data.default_collate, step=ProbeStep())
    net.eval()
    with torch.no_grad():
        def accuracy(data):
            logits = torch.cat([net((_inputs(data, kind)[i:i + 256] - mean) / std)
                                for i in range(0, len(data["labels"]), 256)])
            return float((logits.argmax(1) == data["labels"]).float().mean())

        return accuracy(train), accuracy(test)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlkit.research.probe", description=__doc__.split("\n")[0])
    parser.add_argument("--train", required=True, help="a folder written by `mtlkit data synth`")
    parser.add_argument("--test", required=True, help="another such folder")
    parser.add_argument("--iters", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=INPUTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train, test = crops(args.train), crops(args.test)
    print(f"{len(train['labels'])} train crops, {len(test['labels'])} test crops", file=sys.stderr)
    results = {}
    for kind in args.inputs:
        scores = [probe(train, test, kind, args.iters, seed=s) for s in args.seeds]
        results[kind] = {"train_accuracy": [s[0] for s in scores], "test_accuracy": [s[1] for s in scores]}
        print(f"{kind:9s} test accuracy " + " ".join(f"{100 * s[1]:.1f}" for s in scores) + " %",
              file=sys.stderr)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
