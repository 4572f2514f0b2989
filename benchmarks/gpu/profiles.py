"""The sizes of each mode of the GPU check: ``full`` (the issue's sizes on one
H200), ``quick`` (a cheaper second try) and ``dry`` (the same code on the CPU
with tiny sizes, for CI).

One home for every size and time limit of ``benchmarks/gpu``: the stages read
them from the :class:`Profile` the driver passes, never from constants of their
own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Tuple

#: the order the stages run in when none are named: the cheap correctness
#: checks first, then the speed figures, the gradient step's CUDA checks (issue
#: 17; what time is left), the ablation last (and only on request)
STAGES = ("env", "pytest", "ops_exact", "ops_speed", "train", "infer", "gradients", "ablation")


@dataclass(frozen=True)
class Profile:
    """Sizes and limits of one mode (all times in seconds)."""

    name: str
    device: str  # "cuda" or "cpu"
    # -- training step and inference (configs/nyuv2/{ssd,rock}.yaml) --
    image_size: Tuple[int, int] = (480, 640)
    batch: int = 16
    samples: int = 48  # rendered rooms held on the device (batches cycle over them)
    warmup: int = 5  # untimed steps (cudnn autotuning, allocator warm-up)
    steps: int = 20  # timed steps per variant
    precisions: Tuple[str, ...] = ("bf16_cl", "fp32")
    infer_batches: Tuple[int, ...] = (1, 16)
    infer_reps: int = 20
    # -- ops --
    exact_sizes: Tuple[int, ...] = (0, 1, 63, 64, 65, 1000, 20000)
    big_n: int = 100_000  # the "100k boxes" case
    match_batch: int = 16
    post_batch: int = 16
    speed_sizes: Tuple[int, ...] = (1000, 5000, 20000, 100_000)
    speed_reps: int = 20
    # -- the ablation (--ablation) --
    ablation_iters: int = 150
    ablation_seeds: Tuple[int, ...] = (0, 1)
    ablation_train_size: int = 400
    ablation_test_size: int = 200
    ablation_jobs: int = 8
    # -- time --
    budget: int = 420  # every stage together (the build comes before, in run.sh)
    stage_limits: Dict[str, int] = field(default_factory=lambda: {
        "env": 60, "pytest": 120, "ops_exact": 120, "ops_speed": 120, "train": 240,
        "infer": 120, "gradients": 120, "ablation": 540})
    min_stage_seconds: int = 20  # a stage is skipped when less than this is left

    def to_dict(self) -> dict:
        return asdict(self)


FULL = Profile(name="full", device="cuda")

# A second try after a run that ran out of time: fewer timed steps and
# repetitions, the fp32 reference on the SSD config only (see stage train).
QUICK = replace(
    FULL, name="quick", samples=32, warmup=3, steps=8, infer_reps=8,
    exact_sizes=(0, 1, 65, 20000), speed_sizes=(1000, 20000, 100_000), speed_reps=5,
    ablation_iters=80, budget=240,
    stage_limits={"env": 60, "pytest": 90, "ops_exact": 60, "ops_speed": 60, "train": 120,
                  "infer": 60, "gradients": 90, "ablation": 400},
)

# The same code on the CPU in CI time: tiny images (the smallest the paper's
# SSD head takes), batch 2, one timed step; 100k boxes become 3000. The time
# limits only guard against a hang: a shared CI machine may be slow, and a dry
# run that timed out would fail for no fault of the code.
DRY = replace(
    FULL, name="dry", device="cpu", image_size=(96, 128), batch=2, samples=4, warmup=1, steps=1,
    infer_batches=(1, 2), infer_reps=1, exact_sizes=(0, 1, 65, 300), big_n=3000, match_batch=4,
    post_batch=2, speed_sizes=(500,), speed_reps=1, ablation_iters=2, ablation_seeds=(0,),
    ablation_train_size=4, ablation_test_size=2, ablation_jobs=1, budget=1800,
    stage_limits={"env": 300, "pytest": 300, "ops_exact": 300, "ops_speed": 300, "train": 600,
                  "infer": 300, "gradients": 300, "ablation": 900},
    min_stage_seconds=5,
)

PROFILES = {p.name: p for p in (FULL, QUICK, DRY)}
