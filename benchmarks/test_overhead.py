"""Overhead of ROCK w.r.t. its SSD baseline: parameters and CPU forward time.

    python -m pytest benchmarks/test_overhead.py -s -q

(Plain pytest tests: the models are timed interleaved in one fixture rather than
one after the other by pytest-benchmark, so they are not ``--benchmark-only``.)

Models: ``configs/nyuv2/ssd.yaml`` (baseline), ``configs/nyuv2/rock.yaml`` (the
paper's block) and ``configs/nyuv2/rock_light.yaml``: ResNet-50 with a dilated
layer4, one 480x640 image, eval mode, ``torch.inference_mode``, random weights
(the speed does not depend on them), the same process and thread count.

Timing: CPU time of the process (``time.process_time``) with
``MTLKIT_BENCH_THREADS`` torch threads (default 1): the work a forward costs,
insensitive to other processes sharing the machine (wall-clock time on a
loaded 2-core machine varies by tens of percent between runs;
``MTLKIT_BENCH_CLOCK=wall`` switches to it). After a warm-up forward of each
model, ``MTLKIT_BENCH_ROUNDS`` rounds (default 5); each round times one
forward of every model, in turn (interleaved, so a slow spell hits all models
of a round alike). The time ratio asserted is the median over rounds of the
round's ratio (paired: robust to slow spells); the ratio of the fastest
rounds is printed too. Denormals are flushed to zero (random weights must not hit the
slow denormal path).

Targets (ratios to the SSD measured in the same run): ROCK time <= 1.13x
(its FLOPs are +12.5%: the block is at the arithmetic floor, nothing wasted
around it), rock_light time <= 1.07x. Parameters are reported; the paper's
block has a fixed count (encoder 1x1 2048->512 and 3x3 512->512, task 1x1
convs to 27 + 128 + 384 channels, their decoders back to 2048), so its ratio
depends on the SSD head it is compared with; the assertion checks that ROCK
adds exactly that count and nothing else.
"""

from __future__ import annotations

import os
import time
import warnings

import pytest
import torch

from mtlkit.config import load_config
from mtlkit.models.compose import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("ssd", "rock", "rock_light")
ROUNDS = int(os.environ.get("MTLKIT_BENCH_ROUNDS", "7"))
THREADS = int(os.environ.get("MTLKIT_BENCH_THREADS", "1"))
CLOCK = time.perf_counter if os.environ.get("MTLKIT_BENCH_CLOCK") == "wall" else time.process_time
TIME_TARGETS = {"rock": 1.13, "rock_light": 1.07}


def _model(variant: str) -> torch.nn.Module:
    cfg = load_config(os.path.join(ROOT, "configs", "nyuv2", f"{variant}.yaml"), validate=False)
    torch.manual_seed(0)
    return build_model({"model": cfg["model"], "eval": cfg["eval"],
                        "data": {"image_size": cfg["data"]["image_size"]}}).eval()


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _paper_block_params() -> int:
    c, e = 2048, 512
    task = 27 + 128 + 3 * 128
    encoder = c * e + e * e * 9 + 2 * (2 * e)  # two convs (no bias) + two BN
    heads = e * task + task                    # 1x1 convs with bias
    decoders = task * c + 3 * (2 * c)          # three 1x1 convs (no bias) + BN
    fusion = 2 * c                             # BN after the sum
    return encoder + heads + decoders + fusion


@pytest.fixture(scope="module")
def measured():
    warnings.filterwarnings("ignore")
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(THREADS)
    models = {v: _model(v) for v in VARIANTS}
    images = torch.rand(1, 3, 480, 640)
    times = {v: [] for v in VARIANTS}
    with torch.inference_mode():
        for model in models.values():
            model(images)
        for _ in range(ROUNDS):
            for variant, model in models.items():
                start = CLOCK()
                model(images)
                times[variant].append(CLOCK() - start)
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)
    result = {v: {"params": _params(m), "time": min(times[v]), "times": times[v]}
              for v, m in models.items()}
    base = result["ssd"]
    for v in VARIANTS:
        paired = sorted(t / b for t, b in zip(times[v], times["ssd"]))
        result[v]["paired_ratio"] = paired[len(paired) // 2]
    clock = "wall" if CLOCK is time.perf_counter else "process CPU"
    print(f"\n{clock} time, threads={THREADS}, rounds={ROUNDS} (fastest round per model)")
    for v in VARIANTS:
        r = result[v]
        r["param_ratio"] = r["params"] / base["params"]
        r["min_ratio"] = r["time"] / base["time"]
        print(f"  {v:<11} params {r['params'] / 1e6:7.2f} M ({r['param_ratio']:.3f}x)   "
              f"forward {r['time'] * 1e3:8.1f} ms (fastest {r['min_ratio']:.3f}x, "
              f"median paired {r['paired_ratio']:.3f}x)")
    return result


def test_rock_params_are_the_paper_block_exactly(measured):
    added = measured["rock"]["params"] - measured["ssd"]["params"]
    assert added == _paper_block_params()


def test_rock_light_params(measured):
    assert measured["rock_light"]["param_ratio"] < measured["rock"]["param_ratio"]
    assert measured["rock_light"]["param_ratio"] <= 1.07


@pytest.mark.parametrize("variant", ["rock", "rock_light"])
def test_forward_time_ratio(measured, variant):
    r = measured[variant]
    assert r["paired_ratio"] <= TIME_TARGETS[variant], (
        f"{variant}: {r['paired_ratio']:.3f}x the SSD forward time (target {TIME_TARGETS[variant]}x)")
