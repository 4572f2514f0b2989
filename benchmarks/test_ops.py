"""Native ops vs their baselines, measured in the same run (pytest-benchmark).

    python -m pytest benchmarks/test_ops.py --benchmark-only -p no:randomly -s

Each case runs the native kernel and its baseline; the session prints a table of
baseline/native time ratios (medians) at the end. Baselines here (no
torchvision in this environment):

* nms, batched_nms, box_iou, ssd_decode: mtlkit's pure-PyTorch reference;
* ssd_match: the reference, i.e. a vectorised per-image PyTorch implementation;
* ssd_postprocess: the "torchvision-style" per-image loop (softmax, per class
  filter > 0.01, top-200, NMS 0.45, keep 200) using torchvision.ops.nms when
  importable, else mtlkit's native nms (a C++ NMS like torchvision's), and also
  mtlkit's reference.

The comparison against torchvision itself is benchmarks/ops_vs_torchvision.py.
Timings use 2 threads (torch.set_num_threads(2)).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mtlkit.ops as ops  # noqa: E402
from _ops_data import per_class_loop_postprocess, random_boxes, random_gt, random_head, ssd300_priors  # noqa: E402

pytestmark = pytest.mark.skipif(ops.backend() != "native", reason="native extension not active")

_TIMES: dict = {}


@pytest.fixture(scope="session", autouse=True)
def ratio_table():
    torch.set_num_threads(2)
    yield
    if not _TIMES:
        return
    lines = ["", "mtlkit.ops: baseline time / native time (medians, same run, 2 threads)"]
    lines.append(f"{'case':<34}{'baseline':<26}{'native ms':>11}{'base ms':>11}{'ratio':>9}")
    for case, entry in sorted(_TIMES.items()):
        native = entry.get("native")
        for name, t in sorted(entry.items()):
            if name == "native" or native is None:
                continue
            lines.append(f"{case:<34}{name:<26}{native * 1e3:>11.2f}{t * 1e3:>11.2f}{t / native:>9.1f}x")
    print("\n".join(lines))


def _record(benchmark, case, name):
    _TIMES.setdefault(case, {})[name] = benchmark.stats.stats.median


def _run(benchmark, case, name, fn, rounds):
    benchmark.group = case
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    _record(benchmark, case, name)


# ----------------------------------------------------------------------------- nms


try:
    from torchvision.ops import nms as tv_nms  # noqa: F401

    HAVE_TV = True
except ImportError:  # not installed in this environment
    HAVE_TV = False


@pytest.mark.parametrize("n", [1000, 5000, 20000])
@pytest.mark.parametrize("impl", ["native", "reference"])
def test_nms(benchmark, n, impl):
    boxes, scores = random_boxes(n, seed=n)
    be = "native" if impl == "native" else "torch"
    rounds = 20 if impl == "native" else (3 if n <= 5000 else 1)
    _run(benchmark, f"nms n={n}", impl, lambda: ops.nms(boxes, scores, 0.5, backend=be), rounds)


@pytest.mark.parametrize("impl", ["native", "reference"])
def test_nms_million(benchmark, impl):
    """1,000,000 boxes of the hardening test's kind (5000 x 5000 px, sides up
    to 60, ~680,000 kept): the reference's spatial walk (issue 19) against the
    native kernel; the reference's blocked loop took minutes."""
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(1_000_000, 2, generator=g, dtype=torch.float64) * 5000
    wh = torch.rand(1_000_000, 2, generator=g, dtype=torch.float64) * 60
    boxes, scores = torch.cat([xy, xy + wh], 1).float(), torch.rand(1_000_000, generator=g)
    be = "native" if impl == "native" else "torch"
    _run(benchmark, "nms n=1e6 (sparse)", impl, lambda: ops.nms(boxes, scores, 0.5, backend=be), 1)


@pytest.mark.parametrize("impl", ["native", "reference"])
def test_batched_nms(benchmark, impl):
    boxes, scores = random_boxes(5000, seed=1)
    idxs = torch.randint(0, 20, (5000,), generator=torch.Generator().manual_seed(1))
    be = "native" if impl == "native" else "torch"
    _run(benchmark, "batched_nms n=5000 g=20", impl,
         lambda: ops.batched_nms(boxes, scores, idxs, 0.5, backend=be), 20 if be == "native" else 3)


@pytest.mark.parametrize("impl", ["native", "reference"])
def test_box_iou(benchmark, impl):
    a, _ = random_boxes(1000, seed=2)
    b, _ = random_boxes(8732, seed=3)
    be = "native" if impl == "native" else "torch"
    _run(benchmark, "box_iou 1000x8732", impl, lambda: ops.box_iou(a, b, backend=be), 10)


# ----------------------------------------------------------------------------- SSD


PRIORS = ssd300_priors()


@pytest.mark.parametrize("batch", [16, 32])
@pytest.mark.parametrize("impl", ["native", "reference"])
def test_ssd_match(benchmark, batch, impl):
    gt, labels = random_gt(batch, seed=batch)
    be = "native" if impl == "native" else "torch"
    _run(benchmark, f"ssd_match B={batch} P=8732", impl,
         lambda: ops.ssd_match(gt, labels, PRIORS, 0.5, backend=be), 20 if be == "native" else 5)


@pytest.mark.parametrize("impl", ["native", "reference"])
def test_ssd_decode(benchmark, impl):
    loc, _ = random_head(32, PRIORS, seed=0)
    be = "native" if impl == "native" else "torch"
    _run(benchmark, "ssd_decode B=32 P=8732", impl, lambda: ops.ssd_decode(loc, PRIORS, backend=be), 10)


def _torch_decode(loc, priors):
    return ops.ssd_decode(loc, priors, backend="torch")


@pytest.mark.parametrize("impl", ["native", "torchvision-style", "reference"])
def test_ssd_postprocess(benchmark, impl):
    loc, conf = random_head(32, PRIORS, seed=1)
    case = "ssd_postprocess B=32 P=8732 C=21"
    if impl == "native":
        fn = lambda: ops.ssd_postprocess(loc, conf, PRIORS, 0.01, 0.45, 200, 200)  # noqa: E731
        _run(benchmark, case, "native", fn, 10)
    elif impl == "reference":
        fn = lambda: ops.ssd_postprocess(loc, conf, PRIORS, 0.01, 0.45, 200, 200, backend="torch")  # noqa: E731
        _run(benchmark, case, "reference", fn, 1)
    else:
        nms_fn = tv_nms if HAVE_TV else (lambda b, s, t: ops.nms(b, s, t, backend="native"))
        name = "tv-style (tv nms)" if HAVE_TV else "tv-style (native nms)"
        _run(benchmark, case, name, lambda: per_class_loop_postprocess(loc, conf, PRIORS, _torch_decode, nms_fn), 3)
