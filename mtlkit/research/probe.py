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
can only help detection with what geometry adds to colour.

    python -m mtlkit.research.probe --train DIR --test DIR [--iters 600]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INPUTS = ("rgb", "geometry", "all")


def crops(root: str, size: int = 32, limit: int = 0) -> Dict[str, torch.Tensor]:
    """Every box of the set in ``root`` as crops: {"rgb": (N, 3, s, s),
    "geometry": (N, 4, s, s), "labels": (N,) in 0..C-1}."""
    from mtlkit.data.synthetic import SyntheticRooms

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


def probe(train: Dict[str, torch.Tensor], test: Dict[str, torch.Tensor], kind: str, iters: int = 600,
          batch: int = 64, seed: int = 0) -> Tuple[float, float]:
    """(train accuracy, test accuracy) of the CNN on input ``kind``."""
    torch.manual_seed(seed)
    x, y = _inputs(train, kind), train["labels"]
    mean, std = x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    classes = int(max(y.max(), test["labels"].max())) + 1
    net = _net(x.shape[1], classes)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for it in range(iters):
        for group in optimizer.param_groups:
            group["lr"] = 2e-3 * 0.5 * (1 + np.cos(np.pi * it / iters))
        picks = torch.randint(len(y), (batch,), generator=generator)
        xb = (x[picks] - mean) / std
        if it % 2:
            xb = xb.flip(-1)  # mirrored crops; normals' x sign is left as is (a fixed input code)
        loss = F.cross_entropy(net(xb), y[picks])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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
