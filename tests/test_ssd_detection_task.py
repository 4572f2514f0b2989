"""The `detection` task plugin: registration, post-processing, pictures, learning."""

import numpy as np
import pytest
import torch

from mtlkit.errors import ConfigError
from mtlkit.models.backbones import ResNetSmall
from mtlkit.models.ssd import make_priors
from mtlkit.ops import box_iou, cxcywh_to_xyxy
from mtlkit.task import PRIMARY
from mtlkit_plugins.detection import DetectionTask

PRIORS = make_priors([(4, 4), (2, 2), (1, 1)], [[2], [2], [2]], 0.2, 0.9)
P = PRIORS.shape[0]


def test_registered_as_primary_task(fresh_registry):
    cls = fresh_registry().get("task", "detection")
    assert cls is DetectionTask and cls.role == PRIMARY
    for key in ("num_classes", "neg_pos_ratio", "match_iou", "variances", "loc_weight",
                "score_threshold", "iou_threshold", "top_k", "max_detections", "aspect_ratios",
                "min_scale", "max_scale", "extra_channels"):
        assert key in cls.defaults
    assert cls.defaults["neg_pos_ratio"] == 3 and cls.defaults["iou_threshold"] == 0.45


@pytest.mark.parametrize("options, field", [({"num_classes": 0}, "num_classes"),
                                            ({"match_iou": 1.5}, "match_iou"),
                                            ({"variances": [0.1]}, "variances"),
                                            ({"class_names": ["a"]}, "class_names")])
def test_bad_options(options, field):
    with pytest.raises(ConfigError, match=f"model.tasks.detection.{field}"):
        DetectionTask("detection", {"num_classes": 2, **options} if "num_classes" not in options
                      else options)


def _confident_prediction(C=3):
    loc = torch.zeros(1, P, 4)
    conf = torch.full((1, P, C + 1), -10.0)
    conf[..., 0] = 10.0  # background everywhere ...
    conf[0, 5] = torch.tensor([0.0, 0.0, 3.0, 0.0])  # ... but prior 5 is class 2
    conf[0, 17] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # and prior 17 is class 1, less sure
    return {"loc": loc, "conf": conf, "priors": PRIORS}


def test_postprocess_gives_pixel_boxes_sorted_by_score():
    task = DetectionTask("detection", {"num_classes": 3, "score_threshold": 0.3})
    (det,) = task.postprocess(_confident_prediction(), (60, 80))
    assert det["labels"].tolist() == [2, 1]
    assert det["scores"][0] > det["scores"][1] > 0.3
    scale = torch.tensor([80.0, 60.0, 80.0, 60.0])
    expected = cxcywh_to_xyxy(PRIORS[[5, 17]]) * scale
    expected[:, 0::2] = expected[:, 0::2].clamp(0, 80)
    expected[:, 1::2] = expected[:, 1::2].clamp(0, 60)
    assert torch.allclose(det["boxes"], expected, atol=1e-4)
    # eval options: a higher threshold drops the less sure box
    task.options["score_threshold"] = 0.6
    (det,) = task.postprocess(_confident_prediction(), (60, 80))
    assert det["labels"].tolist() == [2]


def test_postprocess_random_prediction_invariants():
    torch.manual_seed(0)
    task = DetectionTask("detection", {"num_classes": 4, "max_detections": 7})
    pred = {"loc": torch.randn(3, P, 4), "conf": torch.randn(3, P, 5), "priors": PRIORS}
    dets = task.postprocess(pred, (48, 100))
    assert len(dets) == 3
    for d in dets:
        assert 0 < len(d["scores"]) <= 7
        assert bool((d["scores"][:-1] >= d["scores"][1:]).all())
        assert d["labels"].dtype == torch.int64
        assert int(d["labels"].min()) >= 1 and int(d["labels"].max()) <= 4
        b = d["boxes"]
        assert bool((b[:, 0::2] >= 0).all() and (b[:, 0::2] <= 100).all())
        assert bool((b[:, 1::2] >= 0).all() and (b[:, 1::2] <= 48).all())
        assert bool((b[:, 2:] >= b[:, :2]).all())


def test_visualize_draws_confident_boxes_only():
    task = DetectionTask("detection", {"num_classes": 3, "class_names": ["a", "b", "c"],
                                       "vis_score_threshold": 0.5})
    dets = task.postprocess(_confident_prediction(), (60, 80))
    sample = {"image": torch.full((3, 60, 80), 0.5)}
    pic = task.visualize(dets, 0, sample)
    assert pic.shape == (60, 80, 3) and pic.dtype == np.uint8
    plain = np.full((60, 80, 3), round(0.5 * 255), dtype=np.uint8)
    assert (pic != plain).any()
    task.options["vis_score_threshold"] = 1.1
    assert np.array_equal(task.visualize(dets, 0, sample), plain)


def test_new_metric_scores_postprocessed_predictions():
    task = DetectionTask("detection", {"num_classes": 3, "class_names": ["a", "b", "c"]})
    metric = task.new_metric()
    dets = task.postprocess(_confident_prediction(), (60, 80))
    batch = {"boxes": [dets[0]["boxes"][:1].clone()], "labels": [torch.tensor([2])],
             "has": {"detection": torch.tensor([True])}, "meta": [{"id": 0}]}
    metric.update(dets, batch)
    assert metric.compute()["AP50"] == pytest.approx(1.0)
    other = task.new_metric()
    batch["boxes"] = [torch.tensor([[70.0, 50.0, 80.0, 60.0]])]  # where nothing was detected
    batch["meta"] = [{"id": 1}]
    other.update(dets, batch)
    assert other.compute()["AP50"] == pytest.approx(0.0)
    batch["has"] = {"detection": torch.tensor([False])}
    skipped = task.new_metric()
    skipped.update(dets, batch)
    assert skipped.image_ids == []  # samples without detection labels are not scored


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is faster and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_small_detector_learns_a_box(one_thread):
    """End to end on CPU: resnet_small + SSD head fit two images in a few steps."""
    torch.manual_seed(0)
    H = W = 64
    images = torch.full((2, 3, H, W), 0.2)
    images[0, :, 8:40, 12:36] = 0.9    # class 1, a bright tall box
    images[1, 0, 30:60, 20:60] = 1.0   # class 2, a red wide box
    batch = {"image": images,
             "boxes": [torch.tensor([[12.0, 8.0, 36.0, 40.0]]), torch.tensor([[20.0, 30.0, 60.0, 60.0]])],
             "labels": [torch.tensor([1]), torch.tensor([2])],
             "has": {"detection": torch.tensor([True, True])}}
    task = DetectionTask("detection", {"num_classes": 2, "min_scale": 0.2,
                                       "extra_channels": [32, 32, 32, 32, 32]})
    backbone = ResNetSmall(widths=[8, 16, 16, 32], stem_width=8)
    head = task.build_head(backbone.out_channels, image_size=(H, W))
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    losses = []
    for _ in range(60):
        out = head(backbone((images - mean) / std))
        loss = task.loss(out, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
    backbone.eval()
    head.eval()
    with torch.no_grad():
        dets = task.postprocess(head(backbone((images - mean) / std)), (H, W))
    for det, gt, label in zip(dets, batch["boxes"], (1, 2)):
        assert int(det["labels"][0]) == label
        assert box_iou(det["boxes"][:1], gt).item() > 0.5
