"""Training step speed: the engine's loop vs a bare PyTorch loop, same run.

Model: the synthetic ROCK config (resnet_small, 4 tasks) at 120x160, batch 4.
Both loops see the same pre-rendered, pre-augmented samples (data generation
is excluded: it is benchmarked in ``test_data.py``).

* baseline: ``forward -> model.losses -> model.weighting -> backward -> SGD step``
  over pre-collated batches, nothing else;
* engine: ``mtlkit.engine.train`` for the same number of iterations: sampler,
  collate, the per-iteration loss check (a device sync), lr schedule, logging,
  config + final checkpoint writes included.

The engine must cost at most 1.25x the bare loop (``TARGET_RATIO``): what the
trainer adds around the model must stay small. Images/s of both are in
``extra_info``.

Run: ``python -m pytest benchmarks/test_train_step.py -s`` (or ``mtlkit bench train_step``).
"""

from __future__ import annotations

import os
import time

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from mtlkit import build_model  # noqa: E402
from mtlkit.config import load_config  # noqa: E402
from mtlkit.data import build_split, collate  # noqa: E402
from _datasets import ListDataset  # noqa: E402
from _step import best_interleaved  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")
TARGET_RATIO = 1.25
ITERS = 8
BATCH = 4


@pytest.fixture(scope="module")
def setup():
    overrides = ["data.image_size=[120, 160]", f"data.batch_size={BATCH}",
                 "data.train.size=32", "data.augment.enabled=false"]
    cfg = load_config(CONFIG, overrides)
    dataset = build_split(cfg["data"], "train", train=True, seed=0)
    samples = [dataset[i] for i in range(BATCH * ITERS)]
    return cfg, samples


def _bare_loop(cfg, samples) -> float:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batches = [collate(samples[i:i + BATCH]) for i in range(0, len(samples), BATCH)]
    t0 = time.perf_counter()
    for batch in batches:
        opt.zero_grad(set_to_none=True)
        out = model(batch["image"])
        total, _ = model.weighting(model.losses(out, batch))
        total.backward()
        opt.step()
    return time.perf_counter() - t0


def _engine(cfg, samples, out_dir) -> float:
    from mtlkit.engine import train

    torch.manual_seed(0)
    model = build_model(cfg)
    t0 = time.perf_counter()
    train(cfg, out_dir, iters=ITERS, model=model, train_dataset=ListDataset(samples),
          overrides=["train.progress=false", "train.plots=false", "train.eval_at_end=false",
                     "train.log_every=1", "train.optimizer.lr=0.001"])
    return time.perf_counter() - t0


def test_engine_overhead_vs_bare_loop(benchmark, setup, tmp_path):
    cfg, samples = setup
    _bare_loop(cfg, samples[:BATCH * 2])  # warm-up (allocator, kernels)
    runs = iter(range(100))
    bare, engine = best_interleaved(benchmark, lambda: _bare_loop(cfg, samples),
                                    lambda: _engine(cfg, samples, str(tmp_path / f"run{next(runs)}")))
    ratio = engine / bare
    images = ITERS * BATCH
    benchmark.extra_info.update(bare_images_per_s=images / bare, engine_images_per_s=images / engine,
                                ratio=ratio)
    print(f"\ntrain step, ROCK synthetic 120x160 batch {BATCH}: bare {images / bare:.1f} img/s, "
          f"engine {images / engine:.1f} img/s, ratio {ratio:.3f} (target <= {TARGET_RATIO})")
    assert ratio <= TARGET_RATIO
