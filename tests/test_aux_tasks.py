"""Auxiliary tasks: losses (hand cases, masking), pooling, post-processing, pictures."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtlkit.errors import ConfigError
from mtlkit.registry import get_registry
from mtlkit.task import downsample_masked
from mtlkit_plugins.auxiliary_tasks import berhu, normals_loss



def task(name, **options):
    return get_registry().get("task", name)(name, options)


def test_builtin_aux_tasks_registered():
    names = get_registry().names("task")
    for name in ("scene", "depth", "normals"):
        assert name in names
        assert get_registry().get("task", name).role == "auxiliary"


def test_berhu_hand_case():
    # residuals 0.1, -0.5, 2.0 -> c = 0.2 * 2 = 0.4
    r = torch.tensor([0.1, -0.5, 2.0])
    expected = (0.1 + (0.25 + 0.16) / 0.8 + (4.0 + 0.16) / 0.8) / 3
    assert float(berhu(r)) == pytest.approx(expected, rel=1e-6)
    assert float(berhu(torch.zeros(4))) == 0.0


def test_depth_loss_berhu_on_log_depth_hand_case():
    depth_task = task("depth", group=1)
    # a 1x1x2x2 prediction and a target at the same resolution
    target = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]]])  # last pixel invalid (0)
    pred = torch.log(torch.tensor([[[[1.0, 1.0], [1.0, 3.0]]]]))
    batch = {"depth": target, "depth_mask": target > 0, "has": {"depth": torch.tensor([True])}}
    r = torch.tensor([0.0, -math.log(2.0), -math.log(4.0)])
    c = 0.2 * math.log(4.0)
    per = [abs(x) if abs(x) <= c else (x * x + c * c) / (2 * c) for x in r.tolist()]
    assert float(depth_task.loss(pred, batch)) == pytest.approx(sum(per) / 3, rel=1e-6)


def test_non_finite_depth_pixels_are_no_measurement():
    depth_task = task("depth", group=1)
    pred = torch.log(torch.tensor([[[[1.0, 1.0], [1.0, 3.0]]]]))
    has = {"depth": torch.tensor([True])}
    hole = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]]])  # last pixel a hole (0)
    expected = float(depth_task.loss(pred, {"depth": hole, "has": has}))
    for bad in (math.inf, -math.inf, math.nan):
        target = hole.clone()
        target[0, 0, 1, 1] = bad
        loss = depth_task.loss(pred, {"depth": target, "has": has})
        assert math.isfinite(float(loss)) and float(loss) == pytest.approx(expected, rel=1e-6), bad


def test_depth_huber_and_bad_loss_name():
    pred = torch.zeros(1, 1, 2, 2)
    batch = {"depth": torch.full((1, 1, 2, 2), math.e ** 2)}  # log depth 2 everywhere
    assert float(task("depth", loss="huber", huber_delta=1.0).loss(pred, batch)) == pytest.approx(1.5)
    assert float(task("depth", loss="l1").loss(pred, batch)) == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="loss"):
        task("depth", loss="l3")


def test_normals_loss_hand_case():
    pred = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    true = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    # orthogonal: (1 - 0) + 2 = 3; identical: 0
    assert float(normals_loss(pred, true)) == pytest.approx(1.5)
    normals_task = task("normals", group=1)
    p = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    t = torch.tensor([0.0, 0.0, 2.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()  # renormalised
    mask = torch.tensor([[[[True, False], [False, False]]]])
    loss = normals_task.loss(p, {"normals": t, "normals_mask": mask})
    assert float(loss) == pytest.approx(3.0)


@pytest.mark.parametrize("name,shape", [("scene", (3, 4)), ("depth", (3, 1, 4, 6)),
                                        ("normals", (3, 3, 4, 6))])
def test_no_labelled_sample_gives_exact_zero_connected(name, shape):
    t = task(name, num_classes=4) if name == "scene" else task(name)
    pred = torch.randn(*shape, requires_grad=True)
    if name == "normals":
        pred_in = F.normalize(pred, dim=1)
    else:
        pred_in = pred
    batch = {"scene": torch.zeros(3, dtype=torch.long), "depth": torch.zeros(3, 1, 8, 12),
             "depth_mask": torch.zeros(3, 1, 8, 12, dtype=torch.bool),
             "normals": torch.zeros(3, 3, 8, 12),
             "normals_mask": torch.zeros(3, 1, 8, 12, dtype=torch.bool),
             "has": {name: torch.zeros(3, dtype=torch.bool)}}
    loss = t.loss(pred_in, batch)
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()  # still part of the graph
    assert pred.grad is not None and torch.all(pred.grad == 0)


def test_per_sample_mask_removes_sample():
    t = task("depth", group=1)
    pred = torch.zeros(2, 1, 2, 2)
    depth = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 100.0)])
    only_first = {"depth": depth, "has": {"depth": torch.tensor([True, False])}}
    assert float(t.loss(pred, only_first)) == 0.0  # sample 0 matches exactly (log 1 = 0)
    both = {"depth": depth, "has": {"depth": torch.tensor([True, True])}}
    assert float(t.loss(pred, both)) > 0.0
    s = task("scene", num_classes=3)
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    batch = {"scene": torch.tensor([0, 0]), "has": {"scene": torch.tensor([True, False])}}
    assert float(s.loss(logits, batch)) == pytest.approx(
        float(F.cross_entropy(logits[:1], torch.tensor([0]))))


def test_downsample_masked_valid_average():
    values = torch.tensor([[[[1.0, 3.0, 5.0, 7.0],
                             [2.0, 9.0, 5.0, 7.0]]]])
    mask = torch.tensor([[[[True, True, False, False],
                           [True, False, False, False]]]])
    out, valid = downsample_masked(values, mask, (1, 2))
    assert valid.tolist() == [[[[True, False]]]]
    assert out[0, 0, 0, 0].item() == pytest.approx(2.0)  # (1 + 3 + 2) / 3, the 9 is invalid
    assert out[0, 0, 0, 1].item() == 0.0


def test_downsample_masked_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    values = torch.randn(2, 3, 8, 12, generator=g)
    mask = torch.rand(2, 1, 8, 12, generator=g) > 0.6
    out, valid = downsample_masked(values, mask, (2, 3))
    for b in range(2):
        for i in range(2):
            for j in range(3):
                cell_m = mask[b, 0, 4 * i:4 * i + 4, 4 * j:4 * j + 4]
                assert bool(valid[b, 0, i, j]) == bool(cell_m.any())
                if cell_m.any():
                    cell = values[b, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4][:, cell_m]
                    assert torch.allclose(out[b, :, i, j], cell.mean(dim=1), atol=1e-5)


def test_intensive_pooling():
    depth_task = task("depth", group=4)
    assert depth_task.intensive_channels() == 4
    m = torch.arange(8.0).view(1, 4, 1, 2)
    assert depth_task.intensive_pool(m).tolist() == [[[[3.0, 4.0]]]]
    normals_task = task("normals", group=2)
    assert normals_task.intensive_channels() == 6
    m = torch.tensor([3.0, 5.0, 0.0, 0.0, 0.0, 6.0]).view(1, 6, 1, 1)
    out = normals_task.intensive_pool(m)  # group means (4, 0, 3) -> (0.8, 0, 0.6)
    assert torch.allclose(out.flatten(), torch.tensor([0.8, 0.0, 0.6]))
    scene = task("scene", num_classes=2)
    assert scene.intensive_channels() == 2
    m = torch.tensor([[1.0, 3.0], [0.0, 2.0]]).view(1, 2, 1, 2)
    assert scene.intensive_pool(m).tolist() == [[2.0, 1.0]]


def test_postprocess_units_and_size():
    d = task("depth").postprocess(torch.log(torch.full((2, 1, 3, 4), 2.5)), (12, 16))
    assert d.shape == (2, 1, 12, 16) and torch.allclose(d, torch.full_like(d, 2.5))
    n = task("normals").postprocess(torch.randn(2, 3, 3, 4), (12, 16))
    assert n.shape == (2, 3, 12, 16)
    assert torch.allclose(n.norm(dim=1), torch.ones(2, 12, 16), atol=1e-5)
    p = task("scene", num_classes=5).postprocess(torch.randn(2, 5), (12, 16))
    assert torch.allclose(p.sum(1), torch.ones(2))


def test_visualize_pictures():
    sample = {"image": torch.zeros(3, 12, 16)}
    d = task("depth", vis_max_depth=4.0).visualize(torch.full((1, 1, 12, 16), 2.0), 0, sample)
    assert d.shape == (12, 16, 3) and d.dtype == np.uint8
    n = task("normals").visualize(torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 12, 16),
                                  0, sample)
    assert n.shape == (12, 16, 3) and tuple(n[0, 0]) == (128, 128, 0)
    s = task("scene", num_classes=3, names=["bedroom", "kitchen", "office"]).visualize(
        torch.tensor([[0.1, 0.7, 0.2]]), 0, sample)
    assert s.shape == (12, 16, 3) and s.dtype == np.uint8


def test_metrics_on_postprocessed_predictions():
    b, h, w = 2, 8, 12
    depth = torch.rand(b, 1, h, w) * 3 + 1
    normals = F.normalize(torch.randn(b, 3, h, w), dim=1)
    batch = {"scene": torch.tensor([1, 2]), "depth": depth, "depth_mask": torch.ones(b, 1, h, w, dtype=torch.bool),
             "normals": normals, "normals_mask": torch.ones(b, 1, h, w, dtype=torch.bool),
             "has": {"scene": torch.tensor([True, True]), "depth": torch.tensor([True, True]),
                     "normals": torch.tensor([True, True])}}
    d = task("depth")
    m = d.new_metric()
    m.update(d.postprocess(torch.log(depth), (h, w)), batch)  # exact prediction
    assert m.compute()["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    n = task("normals")
    m = n.new_metric()
    m.update(n.postprocess(normals, (h, w)), batch)
    assert m.compute()["mean"] == pytest.approx(0.0, abs=0.05)
    s = task("scene", num_classes=3)
    m = s.new_metric()
    m.update(s.postprocess(torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]]), (h, w)), batch)
    assert m.compute()["top1"] == 0.5
