"""What measured inputs cost in a training step, as ratios against the row
without them measured in the same run.

The step: read 16 samples from a memory-mapped pack, augment, collate,
forward, losses, backward, fused AdamW step, bf16 autocast and channels_last
(the synthetic default), 120x160, one torch thread. Pairs (variant vs its
baseline, both on the same samples):

* ``rock_measured`` (resize encoder) vs ``rock``, and ``rock_measured`` with
  the ``conv`` encoder vs ``rock``: the block's measured path;
* ``ssd_rgbd`` vs ``ssd``: early fusion, whose extra stem weights are trained
  under the frozen stages, so the backward pass runs through them;
* ``sensor data``: the ``rock`` step reading a pack with the sensor's maps (4
  more maps to read, crop, resize and flip) vs the pack without.

Rounds are interleaved (baseline, variant, ...) and the best of each kept.
Targets (the time ratio variant / baseline): ``MAX_RATIO``.

Run: ``python -m pytest benchmarks/test_measured_step.py -s -o addopts=``.
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
from mtlkit.models.measured import measured_inputs  # noqa: E402

from _step import best_interleaved, seconds_per_step  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTH = os.path.join(ROOT, "configs", "synthetic")
BATCH, STEPS, SAMPLES = 16, 4, 64
#: variant -> (its row and overrides, the baseline row, whether the baseline reads the sensor's pack)
PAIRS = {
    "rock_measured": (("rock_measured", []), "rock", True),
    "rock_measured_conv": (("rock_measured", ["model.measured.encoder=conv"]), "rock", True),
    "ssd_rgbd": (("ssd_rgbd", []), "ssd", True),
    "sensor_data": (("rock", []), "rock", False),
}
MAX_RATIO = {"rock_measured": 1.15, "rock_measured_conv": 1.4, "ssd_rgbd": 1.8, "sensor_data": 1.4}


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    torch.set_num_threads(1)
    out = {}
    for sensor in (False, True):
        folder = str(tmp_path_factory.mktemp("sensor" if sensor else "plain"))
        write_set(folder, SAMPLES, 0, "train", make_options((120, 160), sensor="kinect" if sensor else None),
                  progress=False, preview=False, pack=True)
        out[sensor] = SyntheticRooms(root=folder)
    return out


def _step_time(row, overrides, dataset) -> float:
    torch.manual_seed(0)
    cfg = load_config(os.path.join(SYNTH, f"{row}.yaml"), list(overrides))
    model = build_model(cfg).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
    transform = build_transforms(cfg["data"].get("augment"), cfg["data"]["image_size"], train=True)

    return seconds_per_step(model, optimizer, transform, dataset, BATCH, STEPS, bf16=True, channels_last=True,
                            inputs=lambda batch: measured_inputs(model, batch))


@pytest.mark.parametrize("variant", list(PAIRS))
def test_measured_step_cost(benchmark, packs, variant):
    (row, overrides), base_row, base_reads_sensor = PAIRS[variant]
    base, mine = best_interleaved(benchmark, lambda: _step_time(base_row, [], packs[base_reads_sensor]),
                                  lambda: _step_time(row, overrides, packs[True]))
    ratio = mine / base
    benchmark.extra_info.update(variant=variant, time_ratio=ratio, base_images_per_s=BATCH / base,
                                images_per_s=BATCH / mine)
    print(f"\n{variant}: {BATCH / mine:.1f} img/s vs {base_row} {BATCH / base:.1f} img/s: "
          f"time x{ratio:.2f}")
    assert ratio <= MAX_RATIO[variant]
