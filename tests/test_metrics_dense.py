"""Depth / normals / scene metrics on hand-computed cases, with masks."""

import math

import numpy as np
import pytest
import torch

from mtlkit.metrics import depth_metrics, normals_metrics, scene_accuracy
from mtlkit.metrics.dense import angle_histogram, histogram_median, normal_angles


def test_depth_hand_computed():
    # pixels: (p, g) = (1, 1), (2, 4), (3, 2); the fourth is masked out, the fifth has g = 0
    pred = torch.tensor([1.0, 2.0, 3.0, 100.0, 5.0]).view(1, 1, 1, 5)
    gt = torch.tensor([1.0, 4.0, 2.0, 1.0, 0.0]).view(1, 1, 1, 5)
    mask = torch.tensor([True, True, True, False, True]).view(1, 1, 1, 5)
    m = depth_metrics(pred, gt, mask)
    assert m["abs_rel"] == pytest.approx((0 + 2 / 4 + 1 / 2) / 3)
    assert m["sq_rel"] == pytest.approx((0 + 4 / 4 + 1 / 2) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 4 + 1) / 3))
    assert m["rmse_log"] == pytest.approx(math.sqrt((0 + math.log(0.5) ** 2 + math.log(1.5) ** 2) / 3))
    assert m["log10"] == pytest.approx((0 + abs(math.log10(0.5)) + math.log10(1.5)) / 3)
    # ratios max(p/g, g/p): 1, 2, 1.5 -> < 1.25: 1; < 1.5625: 2 (1.5); < 1.953: 2 (2 is not)
    assert (m["delta1"], m["delta2"], m["delta3"]) == pytest.approx((1 / 3, 2 / 3, 2 / 3))


def test_depth_clamps_predictions_and_pools_pixels():
    pred = torch.tensor([[0.0, 2.0]]).view(1, 1, 1, 2)
    gt = torch.tensor([[1.0, 2.0]]).view(1, 1, 1, 2)
    m = depth_metrics(pred, gt, min_depth=0.5)
    assert m["abs_rel"] == pytest.approx(0.5 / 2)  # 0 clamped to 0.5
    # pooled over pixels, not averaged per image: image 1 has 1 valid pixel, image 2 has 3
    pred = torch.tensor([[2.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]).view(2, 1, 1, 4)
    gt = torch.ones(2, 1, 1, 4)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool).view(2, 1, 1, 4)
    assert depth_metrics(pred, gt, mask)["abs_rel"] == pytest.approx(1 / 4)
    # max_depth drops GT beyond it: of GT 2 m and 20 m, only the 2 m pixel counts (a NaN, had
    # both been dropped, must not pass for "different")
    one, far = torch.ones(1, 1, 1, 2), torch.tensor([2.0, 20.0]).view(1, 1, 1, 2)
    assert depth_metrics(one, far)["abs_rel"] == pytest.approx((0.5 + 19 / 20) / 2)
    assert depth_metrics(one, far, max_depth=10)["abs_rel"] == pytest.approx(0.5)
    assert math.isnan(depth_metrics(pred, gt * 20, mask, max_depth=10)["abs_rel"])  # every pixel dropped
    assert math.isnan(depth_metrics(pred, gt, torch.zeros_like(mask))["rmse"])


def test_normals_hand_computed():
    # angles 0°, 90°, 45°, 180° (masked out), and a pixel without GT normal
    pred = torch.tensor([[0, 0, 1], [1, 0, 0], [1, 0, 1], [0, 0, -1], [0, 0, 1]], dtype=torch.float32)
    gt = torch.tensor([[0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0]], dtype=torch.float32)
    pred = pred.T.reshape(1, 3, 1, 5)
    gt = gt.T.reshape(1, 3, 1, 5)
    mask = torch.tensor([True, True, True, False, True]).view(1, 1, 1, 5)
    m = normals_metrics(pred, gt, mask)
    assert m["mean"] == pytest.approx(45.0)
    assert m["median"] == pytest.approx(45.0)
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 90**2 + 45**2) / 3))
    assert m["within_11.25"] == pytest.approx(100 / 3)
    assert m["within_22.5"] == pytest.approx(100 / 3)
    assert m["within_30"] == pytest.approx(100 / 3)
    assert normal_angles(pred, gt).numel() == 4  # no mask: all pixels with a GT normal


def test_normals_prediction_need_not_be_unit():
    gt = torch.zeros(1, 3, 2, 2)
    gt[:, 2] = 1
    pred = gt * 5.0
    assert normals_metrics(pred, gt)["mean"] == pytest.approx(0.0, abs=1e-6)


def test_histogram_median_within_half_a_bin():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000, 1001):
        angles = torch.from_numpy(rng.uniform(0, 180, n))
        med = histogram_median(angle_histogram(angles))
        assert abs(med - float(np.median(angles.numpy()))) <= 0.005 + 1e-9
    assert math.isnan(histogram_median(np.zeros(18000, dtype=np.int64)))


def test_scene_accuracy():
    probs = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = torch.tensor([1, 1, 1, 0])
    assert scene_accuracy(probs, labels) == pytest.approx(3 / 4)
    assert scene_accuracy(probs, labels, torch.tensor([False, True, False, False])) == 0.0
    assert math.isnan(scene_accuracy(probs, labels, torch.zeros(4, dtype=torch.bool)))
