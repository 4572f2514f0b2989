"""A tiny three-task model for the gradient step's tests (no test functions here).

A backbone (conv 3->8, tanh: the representation R is its (B, 8, 8, 8) map),
then a shared 1x1 conv above R (so the parameters place has shared layers on
both sides of R) and three heads: ``reg`` (primary, regression of a scalar),
``cls`` (3-way scene class), ``rec`` (the image's per-channel means). No
BatchNorm, and the masked losses are normalised by the batch size, not by
the labelled count, so 2 processes with batch b give exactly what 1 process
with batch 2b gives. Labels are missing on a fixed pattern of samples
(``has``), so some batches lack a task and, under DDP, some processes lack a
task that others have.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.registry import get_registry
from mtlkit.task import labelled

GRAD_CFG = {
    "train": {
        "iters": 4,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
        "schedule": {"name": "constant"},
        "log_every": 1,
        "progress": False,
        "plots": False,
        "seed": 3,
        "device": "cpu",
        "eval_at_end": False,
    },
    "data": {"batch_size": 4, "num_workers": 0},
    "eval": {"batch_size": 4},
}


class LabelledSet(torch.utils.data.Dataset):
    """Images (3, 8, 8) drawn from (seed, index). ``cls`` is labelled on
    indices not divisible by 4 (``cls_every``), ``rec`` on odd indices."""

    classes = ["thing"]
    scenes = ["a", "b", "c"]

    def __init__(self, n: int = 32, seed: int = 1, missing_cls: int = 4):
        self.n, self.seed, self.missing_cls = n, seed, missing_cls

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Dict[str, Any]:
        rng = np.random.default_rng([self.seed, index])
        image = torch.from_numpy(rng.random((3, 8, 8), dtype=np.float32))
        return {
            "image": image,
            "value": torch.tensor(float(image[0].mean() - image[1].mean()), dtype=torch.float32),
            "scene": torch.tensor(int(image[2].mean() * 3) % 3, dtype=torch.int64),
            "means": image.mean(dim=(1, 2)),
            "boxes": torch.zeros((0, 4)),
            "labels": torch.zeros((0,), dtype=torch.int64),
            "has": {"reg": True, "cls": index % self.missing_cls != 0, "rec": index % 2 == 1},
            "meta": {"id": index, "source": "fake", "orig_size": (8, 8)},
        }


class Metric:
    def __init__(self):
        self.count = 0

    def update(self, prediction, batch):
        self.count += int(batch["image"].shape[0])

    def merge(self, other):
        self.count += other.count

    def compute(self):
        return {"count": float(self.count)}


class LabelledTask:
    def __init__(self, name: str, role: str, weight: float = 1.0):
        self.name, self.role, self.weight = name, role, weight

    def sample_mask(self, batch, batch_size, device=None):
        return labelled(batch, self.name, batch_size, None, device)

    def new_metric(self):
        return Metric()

    def visualize(self, prediction, index, sample):
        return None


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, images: torch.Tensor):
        return [torch.tanh(self.conv(images))]


class NanGradient(torch.autograd.Function):
    """The identity forward; a NaN gradient backward (a task whose loss is
    finite and whose gradient is not)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


class ThreeTaskModel(nn.Module):
    """See the module docstring; ``weighting`` is built from the registry
    (``name`` and options), task weights from ``weights``; ``nan_gradient``:
    a task whose gradient is NaN."""

    def __init__(self, weighting: str = "gcs", weights: Optional[Dict[str, float]] = None,
                 nan_gradient: Optional[str] = None, **options: Any):
        super().__init__()
        weights = weights or {}
        self.nan_gradient = nan_gradient
        self.backbone = Backbone()
        self.neck = nn.Conv2d(8, 8, 1)
        self.reg = nn.Linear(8, 1)
        self.cls = nn.Linear(8, 3)
        self.rec = nn.Conv2d(8, 3, 1)
        self.tasks = OrderedDict((n, LabelledTask(n, role, weights.get(n, 1.0)))
                                 for n, role in (("reg", "primary"), ("cls", "auxiliary"), ("rec", "auxiliary")))
        self.primary = "reg"
        self.weighting = get_registry().get("weighting", weighting)(self.tasks, **options)

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.above(self.backbone(images)[0])

    def above(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Everything above the representation x (B, 8, 8, 8)."""
        f = torch.tanh(self.neck(x))
        pooled = f.mean(dim=(2, 3))
        out = {"reg": self.reg(pooled).squeeze(1), "cls": self.cls(pooled), "rec": self.rec(x).mean(dim=(2, 3))}
        if self.nan_gradient is not None:
            out[self.nan_gradient] = NanGradient.apply(out[self.nan_gradient])
        return out

    def losses(self, outputs, batch):
        size = outputs["reg"].shape[0]
        out = {}
        for name, err in (("reg", (outputs["reg"] - batch["value"]) ** 2),
                          ("cls", F.cross_entropy(outputs["cls"], batch["scene"], reduction="none")),
                          ("rec", ((outputs["rec"] - batch["means"]) ** 2).sum(1))):
            mask = self.tasks[name].sample_mask(batch, size).to(err.dtype)
            out[name] = (err * mask).sum() / size
        return out

    def postprocess(self, outputs, image_size):
        return {n: v.float() for n, v in outputs.items()}


def grad_parts(weighting: str = "gcs", n_train: int = 32, seed: int = 0, **options: Any) -> Dict[str, Any]:
    torch.manual_seed(seed)
    return dict(model=ThreeTaskModel(weighting, **options), train_dataset=LabelledSet(n_train),
                val_dataset=None)
