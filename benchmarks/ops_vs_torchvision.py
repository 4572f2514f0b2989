"""mtlkit native ops vs torchvision, same process, same run (needs torchvision).

    /work/venv-cuda/bin/python benchmarks/ops_vs_torchvision.py [--ext PATH/_C.so] [--threads 2]

mtlkit's kernels are loaded into *this* torch: from --ext (an ``mtlkit._C``
built for this torch, e.g. by ``python setup.py build_ext -b DIR``), else they
are compiled here with ``torch.utils.cpp_extension.load`` (CPU kernels only;
several minutes the first time, cached in ./build/ops_vs_torchvision).
Prints medians and torchvision/mtlkit ratios; checks that the keep lists are
identical.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from _ops_data import per_class_loop_postprocess, random_boxes, random_head, ssd300_priors  # noqa: E402


def load_mtlkit(ext: str | None) -> None:
    if ext:
        torch.ops.load_library(ext)
        return
    from torch.utils.cpp_extension import load

    sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "ops", "*.cpp")))
    sources += sorted(glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))
    build = os.path.join(ROOT, "build", "ops_vs_torchvision")
    os.makedirs(build, exist_ok=True)
    load(
        "mtlkit_ops_bench",
        sources,
        extra_include_paths=[os.path.join(ROOT, "csrc")],
        extra_cflags=["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        build_directory=build,
        is_python_module=False,
        verbose=True,
    )


def median_time(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ext", help="path of an mtlkit _C shared library built for this torch")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import torchvision
    from torchvision.ops import nms as tv_nms

    load_mtlkit(args.ext)
    m = torch.ops.mtlkit
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} threads")
    rows = []
    for n in (1000, 5000, 20000):
        boxes, scores = random_boxes(n, seed=n)
        same = torch.equal(m.nms(boxes, scores, 0.5), tv_nms(boxes, scores, 0.5))
        rounds = 20 if n < 20000 else 5
        t_tv = median_time(lambda: tv_nms(boxes, scores, 0.5), rounds)
        t_mt = median_time(lambda: m.nms(boxes, scores, 0.5), rounds)
        rows.append((f"nms n={n} (identical keep: {same})", t_tv, t_mt))

    priors = ssd300_priors()
    loc, conf = random_head(32, priors, seed=1)

    def decode(l, p):
        return m.ssd_decode(l, p, 0.1, 0.2)

    ref = per_class_loop_postprocess(loc, conf, priors, decode, tv_nms)
    got = m.ssd_postprocess(loc, conf, priors, 0.01, 0.45, 200, 200, 0.1, 0.2)
    sizes = got[3].tolist()
    same = all(
        torch.equal(r[2], l) and torch.equal(r[1], s)
        for r, l, s in zip(ref, got[2].split(sizes), got[1].split(sizes))
    )
    t_tv = median_time(lambda: per_class_loop_postprocess(loc, conf, priors, decode, tv_nms), 3)
    t_mt = median_time(lambda: m.ssd_postprocess(loc, conf, priors, 0.01, 0.45, 200, 200, 0.1, 0.2), 10)
    rows.append((f"ssd_postprocess B=32 P=8732 C=21 (same: {same})", t_tv, t_mt))

    print(f"{'case':<52}{'torchvision ms':>15}{'mtlkit ms':>11}{'ratio':>8}")
    for name, a, b in rows:
        print(f"{name:<52}{a * 1e3:>15.2f}{b * 1e3:>11.2f}{a / b:>7.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
