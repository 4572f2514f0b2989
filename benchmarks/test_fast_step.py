"""What each speed-up of the synthetic default's training step buys, as ratios
against the plain step measured in the same run.

The step: read 16 samples, augment, collate, forward, losses, backward, AdamW
step, on the synthetic ROCK config at 120x160, one torch thread. Variants:

* ``plain``: float32, NCHW, AdamW's for-loop implementation, samples decoded
  from their ``.npz`` files;
* ``+pack``: samples from the memory-mapped pack (``storage.write_pack``);
* ``+fused``: fused AdamW;
* ``+bf16``: bf16 autocast on CPU (``train.amp``);
* ``+channels_last``: NHWC weights and inputs (``train.channels_last``);
* ``all``: every one of the above (the default of ``configs/synthetic``).

Rounds are interleaved (plain, variant, plain, ...) and the best of each kept,
so load from other processes hits them alike. ``extra_info`` has img/s and
the ratio of each variant; the target: ``all`` at least ``TARGET_SPEEDUP``
times the plain step. Whether the speed-ups cost accuracy is an experiment,
not a benchmark: docs/ablation.md has the mAP with and without, over seeds.

Run: ``python -m pytest benchmarks/test_fast_step.py -s -o addopts=``.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from mtlkit import build_model  # noqa: E402
from mtlkit.config import load_config  # noqa: E402
from mtlkit.data.synthetic import SyntheticRooms  # noqa: E402
from mtlkit.data.synthetic.cli import write_set  # noqa: E402
from mtlkit.data.synthetic.generate import make_options  # noqa: E402
from mtlkit.data.transforms import build_transforms  # noqa: E402

from _step import best_interleaved, seconds_per_step  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")
BATCH, STEPS, SAMPLES = 16, 4, 64
TARGET_SPEEDUP = 1.3
VARIANTS = {
    "plain": {},
    "+pack": {"pack": True},
    "+fused": {"fused": True},
    "+bf16": {"bf16": True},
    "+channels_last": {"channels_last": True},
    "all": {"pack": True, "fused": True, "bf16": True, "channels_last": True},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = load_config(CONFIG, ["model.backbone.weights=null"])
    unpacked, packed = (str(tmp_path_factory.mktemp(n)) for n in ("npz", "packed"))
    options = make_options((120, 160))
    for folder, pack in ((unpacked, False), (packed, True)):
        write_set(folder, SAMPLES, 0, "train", options, progress=False, preview=False, pack=pack)
    return cfg, {False: SyntheticRooms(root=unpacked), True: SyntheticRooms(root=packed)}


def _step_time(cfg, datasets, pack=False, fused=False, bf16=False, channels_last=False) -> float:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False, fused=fused)
    transform = build_transforms(cfg["data"].get("augment"), cfg["data"]["image_size"], train=True)
    dataset = datasets[pack]

    return seconds_per_step(model, optimizer, transform, dataset, BATCH, STEPS, bf16=bf16,
                            channels_last=channels_last)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "plain"])
def test_step_speedup(benchmark, setup, variant):
    cfg, datasets = setup
    plain, mine = best_interleaved(benchmark, lambda: _step_time(cfg, datasets),
                                   lambda: _step_time(cfg, datasets, **VARIANTS[variant]))
    ratio = plain / mine
    benchmark.extra_info.update(variant=variant, speedup=ratio, plain_images_per_s=BATCH / plain,
                                images_per_s=BATCH / mine)
    print(f"\n{variant}: {BATCH / mine:.1f} img/s vs plain {BATCH / plain:.1f} img/s: "
          f"x{ratio:.2f}")
    if variant == "all":
        assert ratio >= TARGET_SPEEDUP
