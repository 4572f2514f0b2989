"""A tiny backbone and primary task registered in place, so the model tests do
not depend on the real SSD / ResNet (those are exercised by tests/test_configs.py).
A helper module (no tests): the one-thread setting of the suite is in conftest.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit import hookimpl
from mtlkit.models.backbones import Backbone
from mtlkit.registry import get_registry
from mtlkit.task import PRIMARY, Task


class TinyBackbone(Backbone):
    """Two source maps: stride 4 (8 ch) and stride 8 (16 ch, the X)."""

    defaults = {"width": 16}
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.layer = nn.Conv2d(8, width, 3, stride=2, padding=1)
        self.out_channels = [8, width]
        self.strides = [4, 8]

    def forward(self, x):
        a = torch.relu(self.stem(x))
        return [a, torch.relu(self.layer(a))]


class TinyHead(nn.Module):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.loc = nn.Conv2d(in_channels[-1], 4, 1)
        self.conf = nn.Conv2d(in_channels[-1], num_classes + 1, 1)

    def forward(self, sources):
        x = sources[-1]
        b = x.shape[0]
        return {"loc": self.loc(x).flatten(2).transpose(1, 2).reshape(b, -1, 4),
                "conf": self.conf(x).flatten(2).transpose(1, 2).reshape(b, -1, self.conf.out_channels)}


class TinyDetection(Task):
    """Primary stand-in: per-cell box offsets and class logits; the loss pulls
    every cell towards background and zero offsets."""

    role = PRIMARY
    batch_keys = ("boxes", "labels")
    defaults = {"num_classes": 3, "score_threshold": 0.5}
    postprocess_options = ("score_threshold",)

    def build_head(self, in_channels, **context):
        self.context = context
        return TinyHead(in_channels, int(self.options["num_classes"]))

    def loss(self, prediction, batch):
        conf = prediction["conf"]
        target = torch.zeros(conf.shape[:2], dtype=torch.long)
        return F.cross_entropy(conf.flatten(0, 1), target.flatten()) + prediction["loc"].pow(2).mean()

    def postprocess(self, prediction, image_size):
        scores = prediction["conf"].softmax(-1)[..., 1:].amax(-1)
        return [{"scores": s[s > self.options["score_threshold"]]} for s in scores]

    def new_metric(self):
        return None


class _Plugin:
    @staticmethod
    @hookimpl
    def mtlkit_register_backbones(registry):
        registry.add("tiny_backbone", TinyBackbone)

    @staticmethod
    @hookimpl
    def mtlkit_register_tasks(registry):
        registry.add("tiny_detection", TinyDetection)


def register() -> None:
    reg = get_registry()
    if ("backbone", "tiny_backbone") not in reg:
        reg.register_plugin(_Plugin(), "test-standins", "tests")


def model_cfg(fusion="residual", tasks=("scene", "depth", "normals"), block=None, weighting="fixed"):
    """A model section on the stand-ins (4 scene classes, small groups)."""
    register()
    all_tasks = {"tiny_detection": {"num_classes": 3},
                 "scene": {"num_classes": 4, "weight": 0.5},
                 "depth": {"group": 4},
                 "normals": {"group": 4}}
    cfg = {"backbone": {"name": "tiny_backbone"}, "fusion": fusion,
           "block": dict(block or {"channels": 8}),
           "tasks": {n: o for n, o in all_tasks.items() if n == "tiny_detection" or n in tasks},
           "weighting": weighting}
    return cfg


def make_batch(b=2, h=32, w=48, seed=0, has=None):
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(b, 1, h, w, generator=g) * 5 + 0.5
    normals = F.normalize(torch.randn(b, 3, h, w, generator=g), dim=1)
    has = has or {}
    return {
        "image": torch.rand(b, 3, h, w, generator=g),
        "boxes": [torch.tensor([[2.0, 2.0, 20.0, 20.0]]) for _ in range(b)],
        "labels": [torch.tensor([1]) for _ in range(b)],
        "scene": torch.randint(0, 4, (b,), generator=g),
        "depth": depth,
        "depth_mask": torch.ones(b, 1, h, w, dtype=torch.bool),
        "normals": normals,
        "normals_mask": torch.ones(b, 1, h, w, dtype=torch.bool),
        "has": {t: has.get(t, torch.ones(b, dtype=torch.bool))
                for t in ("tiny_detection", "scene", "depth", "normals")},
    }
