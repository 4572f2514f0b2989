"""A tiny model and dataset with the MultiTaskModel / dataset interfaces, for
engine tests that must be exact and fast (no test functions here).

The model has no batch-dependent statistics (no BatchNorm), so a 2-process
DDP run with batch b per process equals a 1-process run with batch 2b.
Run as a script to train in a subprocess:
``python tests/_engine_fakes.py OUT ITERS CHECKPOINT_EVERY SLEEP [--resume]``.
"""

from __future__ import annotations

import math
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from mtlkit.engine.hooks import HookBase

ENGINE_CFG = {
    "train": {
        "iters": 6,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
        "schedule": {"name": "cosine", "warmup_iters": 2},
        "log_every": 1,
        "progress": False,
        "plots": False,
        "seed": 3,
        "device": "cpu",
    },
    "data": {"batch_size": 4, "num_workers": 0},
    "eval": {"batch_size": 5},
}


class FakeDataset(torch.utils.data.Dataset):
    """Images (3, 8, 8) drawn from (seed, index); with ``augment`` a noise
    drawn from (seed, epoch, index) is added (like TransformedDataset).
    ``sleep`` seconds per item slows it down for kill tests."""

    classes = ["thing", "stuff"]
    scenes = ["a", "b", "c"]

    def __init__(self, n=32, seed=0, augment=True, sleep=0.0):
        self.n, self.seed, self.augment, self.sleep = n, seed, augment, sleep
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if self.sleep:
            time.sleep(self.sleep)
        rng = np.random.default_rng([self.seed, index])
        image = torch.from_numpy(rng.random((3, 8, 8), dtype=np.float32))
        target = float(image[0].mean() - image[1].mean())
        scene = int(image[2].mean() * 3) % 3
        if self.augment:
            aug = np.random.default_rng([self.seed, self.epoch, index, 7])
            image = image + torch.from_numpy(aug.normal(0, 0.05, (3, 8, 8)).astype(np.float32))
        return {
            "image": image,
            "value": torch.tensor(target, dtype=torch.float32),
            "scene": torch.tensor(scene, dtype=torch.int64),
            "boxes": torch.zeros((0, 4)),
            "labels": torch.zeros((0,), dtype=torch.int64),
            "has": {"reg": True, "cls": True},
            "meta": {"id": index, "source": "fake", "orig_size": (16, 16)},
        }


class SumMetric:
    """Mean squared error / accuracy accumulator; picklable, mergeable."""

    def __init__(self, kind):
        self.kind, self.total, self.count = kind, 0.0, 0

    def update(self, prediction, batch):
        if self.kind == "reg":
            self.total += float(((prediction - batch["value"]) ** 2).sum())
        else:
            self.total += float((prediction.argmax(1) == batch["scene"]).sum())
        self.count += int(batch["image"].shape[0])

    def merge(self, other):
        self.total += other.total
        self.count += other.count

    def compute(self):
        key = "mse" if self.kind == "reg" else "accuracy"
        return {key: self.total / max(1, self.count), "count": float(self.count)}


class FakeTask:
    def __init__(self, name, role):
        self.name, self.role, self.weight = name, role, 1.0

    def new_metric(self):
        return SumMetric(self.name)

    def visualize(self, prediction, index, sample):
        return None


class FakeModel(nn.Module):
    """conv 3->8, ReLU, global pooling, then a regression head ("reg",
    primary) and a 3-way classifier ("cls"). ``nan_after``: the "cls" loss is
    NaN from that many forward calls on (to test the divergence guard)."""

    def __init__(self, nan_after=None, dropout=0.0):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.reg = nn.Linear(8, 1)
        self.cls = nn.Linear(8, 3)
        self.tasks = OrderedDict(reg=FakeTask("reg", "primary"), cls=FakeTask("cls", "auxiliary"))
        self.primary = "reg"
        self.nan_after = nan_after
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        f = self.drop(F.relu(self.conv(images)).mean(dim=(2, 3)))
        return {"reg": self.reg(f).squeeze(1), "cls": self.cls(f)}

    def losses(self, outputs, batch):
        cls = F.cross_entropy(outputs["cls"], batch["scene"])
        if self.nan_after is not None and self.calls > self.nan_after:
            cls = cls * float("nan")
        return {"reg": F.mse_loss(outputs["reg"], batch["value"]), "cls": cls}

    def weighting(self, losses):
        total = sum(losses.values())
        return total, {k: 1.0 for k in losses}

    def postprocess(self, outputs, image_size):
        return {"reg": outputs["reg"].float(), "cls": outputs["cls"].float().softmax(1)}


def fake_parts(n_train=32, n_val=10, sleep=0.0, **model_kwargs):
    torch.manual_seed(0)
    return dict(model=FakeModel(**model_kwargs), train_dataset=FakeDataset(n_train, seed=1, sleep=sleep),
                val_dataset=FakeDataset(n_val, seed=2, augment=False))


def final_weights(out_dir):
    ckpt = torch.load(f"{out_dir}/last.pt", weights_only=True)
    return ckpt["model"], ckpt


if __name__ == "__main__":
    import copy

    from mtlkit.engine import train

    torch.set_num_threads(1)
    out, iters, every, sleep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    cfg = copy.deepcopy(ENGINE_CFG)
    cfg["train"].update(iters=iters, checkpoint_every=every)
    parts = fake_parts(sleep=sleep, dropout=0.2)
    train(cfg, out, resume="--resume" in sys.argv, **parts)
    print("done", math.pi)


class StopAt(HookBase):
    """A hook that asks the run to stop after step ``iteration``, as SIGINT does
    (every process stops after the next step's reduction)."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_step(self):
        if self.state.iter == self.iteration:
            self.state.stop_requested = "test"
