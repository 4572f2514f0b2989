"""mtlkit.metrics.coco_map / evaluate against pycocotools' COCOeval (the oracle)."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlkit.errors import DataError
from mtlkit.metrics import coco_map, evaluate, to_coco_detections, to_coco_gt
from mtlkit.metrics.coco_eval import SUMMARY
from _coco_sets import make_detection_set

import pycocotools  # noqa: E402  (the oracle: a missing one is a failure, not a skip)
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

NAMES = [name for name, *_ in SUMMARY]


def oracle(gt, dets):
    """pycocotools' COCOeval on deep copies (it mutates its inputs)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        res = coco.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco, res, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def assert_same(gt, dets, ours_dets=None):
    """Every precision / recall entry, the 12 summary figures and per-class AP agree."""
    ev = oracle(gt, dets)
    res = evaluate(gt, dets if ours_dets is None else ours_dets)
    np.testing.assert_allclose(res.precision, ev.eval["precision"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.recall, ev.eval["recall"], rtol=0, atol=1e-6)
    stats = res.stats()
    np.testing.assert_allclose([stats[n] for n in NAMES], ev.stats, rtol=0, atol=1e-6)
    out = coco_map(gt, dets if ours_dets is None else ours_dets)
    for k, cat in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, 2]
        expected = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
        assert out["per_class"][cat] == pytest.approx(expected, abs=1e-6)
    return ev, out


@pytest.mark.parametrize(
    "options",
    [
        dict(seed=0),
        # tied scores, > 100 detections per image (the maxDets cut)
        dict(seed=1, tie_scores=True, dets_per_image=160, n_images=20),
        # images without GT / without detections, categories never in GT,
        # detections of categories not in GT
        dict(seed=2, gt_per_image=(0, 4), images_without_dets=6, extra_categories=2, unknown_category_dets=7),
        # many crowd regions
        dict(seed=3, crowd_fraction=0.4, gt_per_image=(2, 12)),
        # crowded images: many GT per (image, category), so candidates compete
        dict(seed=4, n_classes=2, gt_per_image=(10, 30), dets_per_image=80, n_images=15, tie_scores=True),
    ],
)
def test_generated_sets_equal_pycocotools(options):
    gt, dets = make_detection_set(**options)
    ev, out = assert_same(gt, dets)
    assert out["AP"] > 0  # the sets are not degenerate


def test_generated_sets_cover_the_edge_cases():
    gt, dets = make_detection_set(seed=2, gt_per_image=(0, 4), images_without_dets=6, extra_categories=2,
                                  unknown_category_dets=7)
    areas = np.array([a["area"] for a in gt["annotations"]])
    assert (areas < 32**2).any() and ((areas > 32**2) & (areas < 96**2)).any() and (areas > 96**2).any()
    with_gt = {a["image_id"] for a in gt["annotations"]}
    assert len(with_gt) < len(gt["images"])
    assert {a["iscrowd"] for a in gt["annotations"]} == {0, 1}
    ev, out = assert_same(gt, dets)
    assert -1.0 in out["per_class"].values()  # categories without GT


def test_hand_made_edge_cases():
    """Exact IoU thresholds, equal-IoU GT ties, crowd matches, area boundaries, GT id 0."""
    images = [{"id": i} for i in (1, 2, 3, 4)]
    anns = [
        # image 1: two identical GTs (equal IoU tie), a crowd region
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [50, 50, 100, 100], "area": 10000, "iscrowd": 1},
        # image 2: areas exactly on the range boundaries
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 32, 32], "area": 1024, "iscrowd": 0},
        {"id": 5, "image_id": 2, "category_id": 2, "bbox": [100, 0, 96, 96], "area": 9216, "iscrowd": 0},
        # image 3: GT with id 0 (pycocotools then counts its match as a false positive)
        {"id": 0, "image_id": 3, "category_id": 2, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 6, "image_id": 3, "category_id": 2, "bbox": [200, 10, 40, 40], "area": 1600, "iscrowd": 0},
    ]
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1}, {"id": 2}, {"id": 3}]}
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 10], "score": 0.9},  # IoU exactly 0.5
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 7.5, 10], "score": 0.8},  # IoU exactly 0.75
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 20, 20], "score": 0.95},  # inside the crowd
        {"image_id": 1, "category_id": 1, "bbox": [70, 70, 20, 20], "score": 0.7},  # crowd again
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 32, 32], "score": 0.6},
        {"image_id": 2, "category_id": 1, "bbox": [300, 300, 2, 2], "score": 0.99},  # small FP
        {"image_id": 2, "category_id": 2, "bbox": [100, 0, 96, 96], "score": 0.5},
        {"image_id": 2, "category_id": 2, "bbox": [100, 0, 0, 0], "score": 0.5},  # zero area
        {"image_id": 3, "category_id": 2, "bbox": [10, 10, 40, 40], "score": 0.4},
        {"image_id": 3, "category_id": 2, "bbox": [200, 10, 40, 40], "score": 0.4},
        {"image_id": 4, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.3},  # image without GT
    ]
    ev, out = assert_same(gt, dets)
    assert out["per_class"][3] == -1.0
    # large objects (area >= 96**2): category 2's 96x96 GT, found at IoU 1 (the crowd region of
    # category 1 is no GT to find), so APl is exactly 1 -- not -1, not just "some figure"
    assert out["APl"] == pytest.approx(1.0, abs=1e-9)


def test_equal_iou_tie_takes_the_later_gt():
    """A detection with the same IoU to two GTs takes the later one (pycocotools' ``>=``
    scan), which leaves the earlier GT for the next detection."""
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [2, 0, 10, 10], "area": 100, "iscrowd": 0},
    ]}
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [1, 0, 10, 10], "score": 0.9},  # IoU 9/11 with both
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.8},  # IoU 1 / 2/3
    ]
    ev, out = assert_same(gt, dets)
    # both detections are true positives at IoU 0.5..0.8 (7 thresholds); above, the
    # first is a false positive and the second finds the first GT: precision 1/2 up
    # to recall 1/2 (51 of the 101 recall points)
    assert ev.eval["recall"][:7, 0, 0, 2].tolist() == [1.0] * 7
    assert out["AP"] == pytest.approx((7 * 1.0 + 3 * 0.5 * 51 / 101) / 10, abs=1e-12)


def test_empty_detections_give_zero_ap():
    gt, _ = make_detection_set(seed=5, n_images=5)
    # pycocotools cannot load an empty result list; a detection of an unknown
    # category is dropped by it and stands in for "no detection"
    dummy = [{"image_id": gt["images"][0]["id"], "category_id": 999, "bbox": [0, 0, 1, 1], "score": 1.0}]
    ev, out = assert_same(gt, dummy, ours_dets=[])
    assert out["AP"] == 0.0 and out["AR100"] == 0.0


def test_no_ground_truth_at_all_gives_minus_one():
    gt = {"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]
    ev, out = assert_same(gt, dets)
    assert all(out[n] == -1.0 for n in NAMES)


settings.register_profile("metrics", deadline=None, suppress_health_check=[HealthCheck.too_slow])

_box = st.tuples(
    st.integers(0, 12), st.integers(0, 12), st.integers(0, 8), st.integers(0, 8)
).map(lambda b: [b[0] * 4.0, b[1] * 4.0, b[2] * 4.0, b[3] * 4.0])


@st.composite
def coco_sets(draw):
    """Small sets on a coarse grid, so equal IoUs, exact thresholds and tied scores abound."""
    n_img = draw(st.integers(1, 4))
    n_cat = draw(st.integers(1, 3))
    anns = []
    for _ in range(draw(st.integers(0, 14))):
        b = draw(_box)
        area = draw(st.sampled_from([b[2] * b[3], 1024.0, 9216.0, 500.0, 2000.0, 12000.0]))
        anns.append({"id": len(anns) + 1, "image_id": draw(st.integers(1, n_img)),
                     "category_id": draw(st.integers(1, n_cat)), "bbox": b, "area": area,
                     "iscrowd": int(draw(st.integers(0, 5)) == 0)})
    dets = []
    for _ in range(draw(st.integers(1, 25))):
        dets.append({"image_id": draw(st.integers(1, n_img)), "category_id": draw(st.integers(1, n_cat + 1)),
                     "bbox": draw(_box), "score": draw(st.sampled_from([0.1, 0.3, 0.5, 0.5, 0.7, 0.9]))})
    gt = {"images": [{"id": i} for i in range(1, n_img + 1)], "annotations": anns,
          "categories": [{"id": c} for c in range(1, n_cat + 1)]}
    return gt, dets


@settings(settings.get_profile("metrics"), max_examples=120)
@given(coco_sets())
def test_random_sets_equal_pycocotools(data):
    gt, dets = data
    assert_same(gt, dets)


@settings(settings.get_profile("metrics"), max_examples=15)
@given(st.integers(0, 10_000))
def test_random_max_dets_cut_equal_pycocotools(seed):
    """Many detections of one category in one image: the per-(image, category) cut at 100."""
    gt, dets = make_detection_set(seed=seed, n_images=2, n_classes=1, gt_per_image=(3, 40),
                                  dets_per_image=130, tie_scores=seed % 2 == 0)
    assert_same(gt, dets)


# -- inputs ---------------------------------------------------------------------


def test_paths_are_accepted(tmp_path):
    gt, dets = make_detection_set(seed=6, n_images=6)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    assert coco_map(str(tmp_path / "gt.json"), tmp_path / "dt.json") == coco_map(gt, dets)


def test_bad_inputs_raise_data_error(tmp_path):
    gt, dets = make_detection_set(seed=7, n_images=3)
    with pytest.raises(DataError, match="not an image of the ground truth"):
        coco_map(gt, dets + [{"image_id": 12345, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}])
    with pytest.raises(DataError, match="'score'"):
        coco_map(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(DataError, match="bbox"):
        coco_map(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 1}])
    with pytest.raises(DataError, match="finite"):
        coco_map(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, float("nan"), 1], "score": 1}])
    with pytest.raises(DataError, match="categories"):
        coco_map({"images": []}, [])
    bad = copy.deepcopy(gt)
    bad["annotations"][1]["id"] = bad["annotations"][0]["id"]
    with pytest.raises(DataError, match="more than once"):
        coco_map(bad, dets)
    with pytest.raises(DataError, match="does not exist"):
        coco_map(str(tmp_path / "missing.json"), dets)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        coco_map(str(tmp_path / "broken.json"), dets)


def test_missing_area_and_iscrowd_default():
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50]}]}
    full = copy.deepcopy(gt)
    full["annotations"][0].update(area=2500.0, iscrowd=0)
    dets = [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 50, 50], "score": 0.5}]
    assert coco_map(gt, dets) == coco_map(full, dets)


def test_export_round_trip():
    """to_coco_gt / to_coco_detections produce what pycocotools reads, with xywh boxes."""
    samples = [
        {"image": torch.zeros(3, 40, 60), "boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0]]),
         "labels": torch.tensor([2]), "meta": {"id": 7}, "has": {"detection": True}},
        {"image": torch.zeros(3, 40, 60), "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
         "meta": {"id": 8}, "has": {"detection": True}},
        {"image": torch.zeros(3, 40, 60), "boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0]]),
         "labels": torch.tensor([1]), "meta": {"id": 9}, "has": {"detection": False}},
    ]
    gt = to_coco_gt(samples, ["a", "b"])
    assert [im["id"] for im in gt["images"]] == [7, 8]
    assert gt["images"][0]["height"] == 40 and gt["images"][0]["width"] == 60
    assert gt["annotations"] == [{"id": 1, "image_id": 7, "category_id": 2, "bbox": [1.0, 2.0, 10.0, 20.0],
                                  "area": 200.0, "iscrowd": 0}]
    assert gt["categories"] == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    preds = [{"boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0], [0.0, 0.0, 4.0, 4.0]]),
              "scores": torch.tensor([0.9, 0.2]), "labels": torch.tensor([2, 1])},
             {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    dets = to_coco_detections(preds, [7, 8])
    assert dets[0] == {"image_id": 7, "category_id": 2, "bbox": [1.0, 2.0, 10.0, 20.0],
                       "score": pytest.approx(0.9)}
    assert len(dets) == 2
    ev, out = assert_same(gt, dets)
    assert out["AP"] == pytest.approx(1.0) and out["per_class"][1] == -1.0
    with pytest.raises(DataError, match="labels must be in 1..2"):
        to_coco_gt([{**samples[0], "labels": torch.tensor([3])}], ["a", "b"])
