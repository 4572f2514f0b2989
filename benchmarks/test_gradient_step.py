"""What a gradient-level weighting costs: training-step time of every method
against ``fixed``, as ratios measured in the same run.

The step: the trainer's iteration on the synthetic ROCK default (resnet_small
with its stem, layer1 and layer2 frozen, four tasks, 120x160, batch 16, bf16
autocast and channels_last, AdamW, one torch thread), collating pre-rendered
samples (no rendering, no augmentation in the timed part). Each method at
its default place (``representation``; FAMO and RLW need no per-task
gradient), and every gradient method at ``parameters`` too.

Rounds go over every variant in turn (``fixed`` first), and each variant's
best round is kept, so load from other processes hits all of them alike;
within a round a variant's time is the median of ``STEPS`` iterations after
``WARMUP``. ``extra_info`` holds each variant's ms/step and ratio. Targets
(``TARGETS``): what docs/weighting.md §6 promises a user.

Run: ``python -m pytest benchmarks/test_gradient_step.py -s -o addopts=``
(under the compute lock: about 4 minutes on one core).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from mtlkit.data import build_split  # noqa: E402
from mtlkit.engine.hooks import HookBase  # noqa: E402
from mtlkit.engine.runtime import run_config  # noqa: E402
from mtlkit.engine.trainer import Trainer  # noqa: E402
from _datasets import ListDataset  # noqa: E402
from plugins.gradient_weightings import GRADIENT_WEIGHTINGS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")
BATCH, WARMUP, STEPS, ROUNDS = 16, 2, 5, 2
VARIANTS = (["fixed"] + list(GRADIENT_WEIGHTINGS)
            + [f"{n}@parameters" for n, c in GRADIENT_WEIGHTINGS.items() if c.needs_gradients])
#: the most a step may cost against fixed: loss-level methods, the
#: representation place (k backward passes above X + one trunk backward), the
#: parameters place (k full backward passes)
TARGETS = {"loss": 1.15, "representation": 2.0, "parameters": 4.0}


class StepTimes(HookBase):
    def before_train(self):
        self.times = []

    def before_step(self):
        self._t0 = time.perf_counter()

    def after_step(self):
        self.times.append(time.perf_counter() - self._t0)


def weighting_override(variant: str) -> str:
    name, _, place = variant.partition("@")
    options = {"seed": 0} if name in GRADIENT_WEIGHTINGS and GRADIENT_WEIGHTINGS[name].randomised else {}
    if place:
        options["place"] = place
    if not options:
        return f"model.weighting={name}"
    return "model.weighting={" + ", ".join([f"name: {name}"] + [f"{k}: {v}" for k, v in options.items()]) + "}"


def kind(variant: str) -> str:
    name, _, place = variant.partition("@")
    if place:
        return place
    cls = GRADIENT_WEIGHTINGS.get(name)
    return "representation" if cls is not None and cls.needs_gradients else "loss"


@pytest.fixture(scope="module")
def samples():
    torch.set_num_threads(1)
    cfg = run_config(CONFIG, ["data.train.size=32", "data.val=null", "data.test=null"])
    dataset = build_split(cfg["data"], "train", train=True, seed=0, validated=True)
    return [dataset[i] for i in range(len(dataset))]


def step_time(variant: str, samples, out_dir: str) -> float:
    """Median seconds per iteration of ``variant`` after the warm-up."""
    cfg = run_config(CONFIG, [weighting_override(variant), f"train.iters={WARMUP + STEPS}", "data.val=null",
                              "data.test=null", "data.num_workers=0", "train.progress=false",
                              "train.eval_at_end=false", "train.plots=false", "train.log_every=1000",
                              "train.schedule.warmup_iters=0"])
    timer = StepTimes()
    Trainer(cfg, out_dir, train_dataset=ListDataset(samples), hooks=[timer]).run()
    return statistics.median(timer.times[WARMUP:])


def test_gradient_step_cost(benchmark, samples, tmp_path):
    times = {v: [] for v in VARIANTS}
    runs = iter(range(10_000))

    def all_variants():
        for variant in VARIANTS:
            times[variant].append(step_time(variant, samples, str(tmp_path / f"run{next(runs)}")))

    benchmark.pedantic(all_variants, rounds=ROUNDS, iterations=1)
    best = {v: min(t) for v, t in times.items()}
    ratios = {v: best[v] / best["fixed"] for v in VARIANTS}
    benchmark.extra_info.update(ms_per_step={v: 1000 * t for v, t in best.items()}, ratio=ratios)
    print(f"\nROCK synthetic 120x160, batch {BATCH}, bf16 + channels_last, one thread: step time vs fixed")
    for variant in VARIANTS:
        print(f"  {variant:26s} {1000 * best[variant]:7.1f} ms  x{ratios[variant]:.2f}")
    over = {v: round(r, 2) for v, r in ratios.items() if v != "fixed" and r > TARGETS[kind(v)]}
    assert not over, f"steps over their target ratio {TARGETS}: {over}"
