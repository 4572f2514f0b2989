"""build_model / MultiTaskModel on stand-in components (real ones: test_configs.py)."""

import pytest
import torch

from mtlkit.errors import ConfigError, MtlkitError
from mtlkit.models.compose import MultiTaskModel, build_model

from _model_standins import make_batch, model_cfg


def test_build_and_forward_contract():
    model = build_model(model_cfg())
    assert isinstance(model, MultiTaskModel)
    assert list(model.tasks) == ["tiny_detection", "scene", "depth", "normals"]
    assert model.primary == "tiny_detection"
    batch = make_batch()
    out = model(batch["image"])
    assert list(out) == list(model.tasks)
    losses = model.losses(out, batch)
    assert set(losses) == set(model.tasks) and all(l.dim() == 0 for l in losses.values())
    total, weights = model.weighting(losses)
    assert weights["scene"] == 0.5
    total.backward()
    # every part of the model is trained by the total loss, with finite gradients
    for part in (model.backbone, model.block, model.heads):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), type(part).__name__
    assert any(float(g.abs().sum()) > 0 for g in (p.grad for p in model.backbone.parameters()))


def test_primary_is_first_even_if_listed_later():
    cfg = model_cfg()
    cfg["tasks"] = {"depth": {}, "tiny_detection": {}}
    assert list(build_model(cfg).tasks) == ["tiny_detection", "depth"]


def test_no_aux_task_means_no_block():
    model = build_model(model_cfg(tasks=()))
    assert model.block is None
    out = model(make_batch()["image"])
    assert list(out) == ["tiny_detection"]


def test_exactly_one_primary():
    cfg = model_cfg()
    del cfg["tasks"]["tiny_detection"]
    with pytest.raises(ConfigError, match="exactly one primary"):
        build_model(cfg)


def test_unknown_names_and_options_are_user_errors():
    cfg = model_cfg(fusion="residal")
    with pytest.raises(MtlkitError, match="did you mean 'residual'"):
        build_model(cfg)
    cfg = model_cfg()
    cfg["tasks"]["depth"] = {"lost": "berhu"}
    with pytest.raises(ConfigError, match="lost"):
        build_model(cfg)
    cfg = model_cfg(block={"pooling": "avg"})
    with pytest.raises(ConfigError, match="pooling"):
        build_model(cfg)


def test_images_are_normalised_with_backbone_stats():
    model = build_model(model_cfg())
    seen = {}
    model.backbone.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    images = torch.full((1, 3, 32, 32), 0.75)
    model(images)
    assert torch.allclose(seen["x"], torch.ones_like(images))  # (0.75 - 0.5) / 0.25


def test_weighting_parameters_are_model_parameters():
    model = build_model(model_cfg(weighting="uncertainty"))
    assert any(p is model.weighting.log_vars for p in model.parameters())


def test_full_config_eval_section_and_image_size():
    cfg = {"model": model_cfg(), "eval": {"score_threshold": 0.2}, "data": {"image_size": [32, 48]}}
    model = build_model(cfg)
    det = model.tasks["tiny_detection"]
    assert det.options["score_threshold"] == 0.2
    assert det.context["image_size"] == (32, 48) and det.context["strides"] == [4, 8]
    model.set_eval_options(score_threshold=0.9)
    assert det.options["score_threshold"] == 0.9
    with pytest.raises(ConfigError, match="did you mean 'score_threshold'"):
        model.set_eval_options(score_treshold=0.1)


def test_detect_postprocesses_to_image_size():
    model = build_model(model_cfg()).eval()
    images = make_batch()["image"]
    pred = model.detect(images)
    assert pred["depth"].shape == (2, 1, 32, 48) and (pred["depth"] > 0).all()
    assert pred["normals"].shape == (2, 3, 32, 48)
    assert torch.allclose(pred["scene"].sum(1), torch.ones(2))
    assert len(pred["tiny_detection"]) == 2


def test_missing_modality_batch_trains_without_nan():
    model = build_model(model_cfg())
    batch = make_batch(has={"depth": torch.zeros(2, dtype=torch.bool)})
    losses = model.losses(model(batch["image"]), batch)
    assert losses["depth"].item() == 0.0
    total, _ = model.weighting(losses)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_postprocess_options_come_from_the_primary_task():
    # the eval section holds the options the primary task declares, not a fixed list
    from mtlkit.config import validate_config

    cfg = {"model": model_cfg(), "eval": {"score_threshold": 0.3}}
    assert validate_config(cfg)["eval"] == {"score_threshold": 0.3}
    with pytest.raises(ConfigError, match="unknown key 'eval.top_k'"):
        validate_config({"model": model_cfg(), "eval": {"top_k": 5}})  # not an option of tiny_detection
    bad = model_cfg()
    bad["tasks"]["tiny_detection"] = {"score_threshold": 0.3}
    with pytest.raises(ConfigError, match="model.tasks.tiny_detection.score_threshold: .* eval.score_threshold"):
        validate_config({"model": bad})
