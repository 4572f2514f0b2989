"""Every shipped config builds, trains a step (forward + backward) and has the
structure of its ablation row. Tiny inputs (64x64) keep this fast on CPU."""

import glob
import os

import pytest
import torch

from mtlkit.config import load_config, validate_config
from mtlkit.gradient_weighting import GradientWeighting
from mtlkit.models.compose import build_model
from mtlkit.registry import get_registry


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*", "*.yaml")))
VARIANTS = ["ssd", "flat_mtl", "intensive_pooling", "rock", "rock_concat", "rock_gated", "rock_light",
            "rock_depth_only", "rock_aux30", "rock_gcs", "rock_olaux", "rock_pcgrad_primary", "rock_famo"]
#: rows of the synthetic folder only: they read the simulated sensor's maps (tests/test_measured.py)
RGBD_VARIANTS = ["ssd_rgbd", "rock_measured"]
#: the gradient-level weighting of a variant named <row>_<method> (docs/weighting.md §8)
METHOD_ROWS = {"rock_gcs": "gcs", "rock_olaux": "olaux", "rock_pcgrad_primary": "pcgrad_primary",
               "rock_famo": "famo"}


def load(path, overrides=()):
    """The config, validated as a whole when its dataset types are registered."""
    cfg = load_config(path, overrides, validate=False)
    types = [s["type"] for s in (cfg.get("data") or {}).values() if isinstance(s, dict) and "type" in s]
    if all(("dataset", t) in get_registry() for t in types):
        return validate_config(cfg)
    return validate_config({k: v for k, v in cfg.items() if k != "data"}) | {"data": cfg["data"]}


def test_both_folders_have_every_variant():
    for folder, extra in (("nyuv2", []), ("synthetic", RGBD_VARIANTS)):
        names = {os.path.basename(p)[:-5] for p in CONFIGS if os.sep + folder + os.sep in p}
        assert names == set(VARIANTS + extra), folder


def test_nyuv2_paper_setting():
    cfg = load(os.path.join(ROOT, "configs", "nyuv2", "rock.yaml"))
    assert cfg["model"]["backbone"]["name"] == "resnet50"
    assert cfg["data"]["image_size"] == [480, 640]
    assert cfg["data"]["train"] == {"type": "nyuv2", "root": "data/nyuv2", "split": "train"}
    tasks = cfg["model"]["tasks"]
    assert tasks["detection"]["num_classes"] == 19 and tasks["scene"]["num_classes"] == 27
    assert tasks["depth"]["group"] == 128 and tasks["normals"]["group"] == 128
    assert cfg["model"]["block"]["channels"] == 512


def _structure(model, variant):
    if variant in METHOD_ROWS:  # a row of a weighting method: its base row's model, trained otherwise
        method = METHOD_ROWS[variant]
        assert type(model.weighting) is get_registry().get("weighting", method)
        variant = variant[:-len(method) - 1]
    block = model.block
    if variant == "ssd":
        assert block is None and list(model.tasks) == ["detection"]
        return
    if variant == "rock_depth_only":
        assert list(model.tasks) == ["detection", "depth"]
    else:
        assert list(model.tasks) == ["detection", "scene", "depth", "normals"]
    fusion = type(block.fusion).__name__
    expected = {"flat_mtl": "NoFusion", "intensive_pooling": "NoFusion", "rock": "ResidualFusion",
                "rock_concat": "ConcatFusion", "rock_gated": "GatedFusion",
                "rock_light": "ResidualFusion", "rock_depth_only": "ResidualFusion",
                "rock_aux30": "ResidualFusion"}[variant]
    assert fusion == expected
    assert block.intensive == (variant != "flat_mtl")
    assert isinstance(block.encoder, torch.nn.Identity) == (variant == "flat_mtl")
    assert (len(block.decoders) > 0) == (variant in ("rock", "rock_concat", "rock_gated",
                                                     "rock_depth_only", "rock_aux30"))
    assert (block.shared_decoder is not None) == (variant == "rock_light")


def _train_step(model, size=64):
    model.train()
    b = 2
    images = torch.rand(b, 3, size, size)
    batch = {
        "image": images,
        "boxes": [torch.tensor([[4.0, 4.0, 40.0, 50.0]]), torch.zeros(0, 4)],
        "labels": [torch.tensor([1]), torch.zeros(0, dtype=torch.int64)],
        "scene": torch.tensor([0, 1]),
        "depth": torch.rand(b, 1, size, size) * 4 + 0.5,
        "depth_mask": torch.ones(b, 1, size, size, dtype=torch.bool),
        "normals": torch.nn.functional.normalize(torch.randn(b, 3, size, size), dim=1),
        "normals_mask": torch.ones(b, 1, size, size, dtype=torch.bool),
        "has": {t: torch.tensor([True, False]) for t in ("detection", "scene", "depth", "normals")},
    }
    out = model(images)
    losses = model.losses(out, batch)
    if isinstance(model.weighting, GradientWeighting):  # its step takes per-task gradients: the plain sum here
        model.weighting.eval()
    total, _ = model.weighting(losses)
    model.weighting.train()
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_synthetic_config_trains_a_step(variant):
    model = build_model(load(os.path.join(ROOT, "configs", "synthetic", f"{variant}.yaml")))
    _structure(model, variant)
    out = _train_step(model)
    if variant != "ssd":
        assert out["depth"].shape == (2, 1, 4, 4)
        assert ("scene" in out) == (variant != "rock_depth_only")
        if "scene" in out:
            assert out["scene"].shape == (2, 6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_nyuv2_config_structure_on_small_backbone(variant):
    """The nyuv2 block/task layout, on resnet_small so it stays fast."""
    cfg = load(os.path.join(ROOT, "configs", "nyuv2", f"{variant}.yaml"),
               ["model.backbone={name: resnet_small}"])
    model = build_model(cfg).eval()
    _structure(model, variant)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert out["detection"]["conf"].shape[-1] == 20
    if variant == "rock_depth_only":
        assert set(out) == {"detection", "depth"} and out["depth"].shape == (1, 1, 4, 4)
    elif variant != "ssd":
        assert out["scene"].shape == (1, 27) and out["normals"].shape == (1, 3, 4, 4)


@pytest.mark.slow
def test_nyuv2_rock_resnet50_trains_a_step():
    model = build_model(load(os.path.join(ROOT, "configs", "nyuv2", "rock.yaml")))
    assert model.block.in_channels == 2048
    out = _train_step(model)
    assert out["depth"].shape == (2, 1, 4, 4)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_nyuv2_config_resnet50_trains_a_step(variant):
    model = build_model(load(os.path.join(ROOT, "configs", "nyuv2", f"{variant}.yaml")))
    _structure(model, variant)
    _train_step(model)


def test_eval_section_sets_detection_postprocessing():
    cfg = load(os.path.join(ROOT, "configs", "synthetic", "ssd.yaml"),
               ["eval.score_threshold=0.3", "eval.max_detections=7"])
    model = build_model(cfg).eval()
    det = model.tasks["detection"]
    assert det.options["score_threshold"] == 0.3 and det.options["max_detections"] == 7
    # confident, varied scores (an untrained head scores every class ~1/12, under any threshold)
    torch.manual_seed(0)
    with torch.no_grad():
        for conv in model.heads["detection"].conf:
            conv.weight.mul_(200.0)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pred = model.detect(images)["detection"]
    assert all(len(p["scores"]) == 7 and bool((p["scores"] > 0.3).all()) for p in pred)
    model.set_eval_options(score_threshold=0.0, max_detections=1000)
    with torch.no_grad():
        every = model.detect(images)["detection"]
    # without the settings there are more boxes, and boxes scoring at most 0.3: both options acted
    assert all(len(p["scores"]) > 7 and bool((p["scores"] <= 0.3).any()) for p in every)
    model.set_eval_options(score_threshold=0.3, max_detections=2)
    with torch.no_grad():
        pred = model.detect(images)["detection"]
    assert all(len(p["scores"]) == 2 for p in pred)


def test_build_model_from_a_path():
    model = build_model(os.path.join(ROOT, "configs", "synthetic", "rock_light.yaml"))
    assert model.block.shared_decoder is not None and model.block.options["channels"] == 64
    assert model.tasks["scene"].options["num_classes"] == 6


@pytest.mark.parametrize("variant", RGBD_VARIANTS)
def test_synthetic_rgbd_config_trains_a_step_with_a_sensor(variant):
    """The RGB-D rows: the sensor on every split, their measured inputs, one step."""
    from mtlkit.models.measured import measured_inputs

    cfg = load(os.path.join(ROOT, "configs", "synthetic", f"{variant}.yaml"))
    assert all(cfg["data"][s]["sensor"] == "kinect" for s in ("train", "val", "test"))
    model = build_model(cfg)
    if variant == "ssd_rgbd":
        _structure(model, "ssd")
        assert list(model.early_fusion.tasks) == ["depth"] and model.backbone.extra_input_channels == 1
    else:
        _structure(model, "rock")
        assert list(model.block.measured.tasks) == ["depth", "normals"] and model.early_fusion is None
    model.train()
    b, size = 2, 64
    batch = {"image": torch.rand(b, 3, size, size),
             "boxes": [torch.tensor([[4.0, 4.0, 40.0, 50.0]]), torch.zeros(0, 4)],
             "labels": [torch.tensor([1]), torch.zeros(0, dtype=torch.int64)],
             "scene": torch.tensor([0, 1]), "depth": torch.rand(b, 1, size, size) * 4 + 0.5,
             "normals": torch.nn.functional.normalize(torch.randn(b, 3, size, size), dim=1)}
    batch.update(sensor_depth=batch["depth"], sensor_normals=batch["normals"],
                 has={"sensor_depth": torch.tensor([True, False]), "sensor_normals": torch.tensor([True, True])})
    out = model(batch["image"], **measured_inputs(model, batch))
    total, _ = model.weighting(model.losses(out, batch))
    total.backward()
    assert torch.isfinite(total)
