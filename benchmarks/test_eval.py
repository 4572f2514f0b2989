"""COCO bbox evaluation speed: mtlkit.metrics.coco_map vs pycocotools, same run.

The set mimics an NYUv2 test evaluation: 654 images, 19 classes, 1-20 GT boxes per
image, ~100 detections per image (~65k in all: noisy copies of GT boxes with some
wrong labels, plus false positives), synthetic with a fixed seed.

Timed: for pycocotools ``COCOeval.evaluate() + accumulate()`` (loading the COCO
objects excluded); for mtlkit the whole ``coco_map(gt_dict, detections_list)``
call, parsing of the dicts included. The ratio must be >= 10.

Run: ``python -m pytest benchmarks/test_eval.py -s``  (prints the ratio)
"""

import contextlib
import copy
import io
import os
import sys
import time

import numpy as np
import pytest

from mtlkit.metrics import coco_map

# the random COCO sets are a test helper (tests/_coco_sets.py), not part of the package
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from _coco_sets import make_detection_set  # noqa: E402

pytest.importorskip("pytest_benchmark")
pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

TARGET_RATIO = 10.0
NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@pytest.fixture(scope="module")
def nyu_like_set():
    return make_detection_set(seed=2024, n_images=654, n_classes=19, gt_per_image=(1, 20), dets_per_image=100)


def _pycocotools_seconds(gt, dets, repeats=2):
    """Best of ``repeats`` runs of evaluate + accumulate; returns (seconds, stats)."""
    best, stats = float("inf"), None
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        res = coco.loadRes(copy.deepcopy(dets))
        for _ in range(repeats):
            ev = COCOeval(coco, res, "bbox")
            t0 = time.perf_counter()
            ev.evaluate()
            ev.accumulate()
            best = min(best, time.perf_counter() - t0)
        ev.summarize()
        stats = ev.stats
    return best, stats


def test_coco_map_speed_vs_pycocotools(benchmark, nyu_like_set):
    gt, dets = nyu_like_set
    assert 60_000 <= len(dets) <= 70_000
    base, stats = _pycocotools_seconds(gt, dets)
    ours = benchmark.pedantic(coco_map, args=(gt, dets), rounds=7, iterations=1, warmup_rounds=1)
    np.testing.assert_allclose([ours[n] for n in NAMES], stats, rtol=0, atol=1e-6)
    ours_s = benchmark.stats.stats.min
    ratio = base / ours_s
    benchmark.extra_info.update(pycocotools_s=base, mtlkit_s=ours_s, ratio=ratio, detections=len(dets))
    print(f"\ncoco eval on {len(gt['images'])} images / {len(dets)} detections / 19 classes: "
          f"pycocotools evaluate+accumulate {base:.3f} s, mtlkit coco_map {ours_s * 1000:.1f} ms "
          f"-> {ratio:.1f}x (target >= {TARGET_RATIO:g}x)")
    assert ratio >= TARGET_RATIO
