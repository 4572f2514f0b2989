"""Issue 10, the config loader: numbers written 1e-3, a base section of another
plugin type, did-you-mean for split names, a directory as the config, range
checks at validation, and the one home of the detection post-processing options."""

import os

import pytest

from mtlkit.config import load_config, validate_config
from mtlkit.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROCK = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")


def test_exponent_numbers_are_numbers_in_overrides_and_files(tmp_path):
    cfg = load_config(ROCK, ["train.optimizer.lr=1e-3", "train.optimizer.eps=1E-8"])
    assert cfg["train"]["optimizer"]["lr"] == 1e-3 and isinstance(cfg["train"]["optimizer"]["lr"], float)
    assert cfg["train"]["optimizer"]["eps"] == 1e-8
    path = tmp_path / "c.yaml"
    path.write_text(f"_base_: {ROCK}\ntrain: {{optimizer: {{lr: 5e-4, weight_decay: 1e-4}}, iters: 2e2}}\n")
    cfg = load_config(path)
    assert cfg["train"]["optimizer"]["lr"] == 5e-4 and cfg["train"]["optimizer"]["weight_decay"] == 1e-4
    # an integral exponent for an int field is that int
    assert cfg["train"]["iters"] == 200 and isinstance(cfg["train"]["iters"], int)
    # text stays text
    assert load_config(ROCK, ["name=1e3x"])["name"] == "1e3x"


def test_a_non_integral_number_for_an_int_field_is_refused():
    with pytest.raises(ConfigError, match=r"train.iters: expected an integer, got float 2.5"):
        load_config(ROCK, ["train.iters=2.5"])


def test_a_child_switching_the_dataset_type_replaces_the_base_section(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text('{"images": [], "annotations": [], "categories": []}')
    child = tmp_path / "child.yaml"
    child.write_text(f"_base_: {ROCK}\ndata:\n  train: {{type: coco, ann_file: {ann}}}\n")
    cfg = load_config(child)
    assert cfg["data"]["train"] == {"type": "coco", "ann_file": str(ann)}  # no inherited 'split'
    # the same type still merges key by key
    child.write_text(f"_base_: {ROCK}\ndata:\n  train: {{size: 7}}\n")
    train = load_config(child)["data"]["train"]
    assert train["size"] == 7 and train["type"] == "synthetic" and "split" in train


def test_a_misspelt_split_gets_a_did_you_mean_listing_the_splits():
    with pytest.raises(ConfigError) as info:
        load_config(ROCK, ["data.vall.size=5"])
    message = str(info.value)
    assert "unknown key 'data.vall' (did you mean 'val'?)" in message
    assert "train" in message and "test" in message


def test_a_directory_as_the_config_is_named_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, expected a config YAML file"):
        load_config(tmp_path)


def test_binary_config_file_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(path)


@pytest.mark.parametrize("override, culprit", [
    ("train.optimizer.lr=-0.1", "train.optimizer.lr: expected a number >= 0, got -0.1"),
    ("train.optimizer.lr=.nan", "train.optimizer.lr: expected a number, got NaN"),
    ("data.num_workers=-1", "data.num_workers: expected a number >= 0, got -1"),
    ("data.batch_size=0", "data.batch_size: expected a number >= 1, got 0"),
    ("model.tasks.detection.num_classes=0", "model.tasks.detection.num_classes: expected a number >= 1"),
    ("train.accumulate=0", "train.accumulate: expected a number >= 1"),
    ("train.iters=-3", "train.iters: expected a number >= 0"),
    ("train.ema.decay=1.5", "train.ema.decay: expected a number in [0, 1]"),
    ("eval.iou_threshold=1.5", "eval.iou_threshold: expected a number in [0, 1], got 1.5"),
    ("eval.score_threshold=-0.1", "eval.score_threshold: expected a number in [0, 1]"),
    ("eval.top_k=0", "eval.top_k: expected a number >= 1"),
    ("eval.batch_size=0", "eval.batch_size: expected a number >= 1"),
    ("train.optimizer.betas=[0.9,1.5]", "train.optimizer.betas: expected a number in [0, 1)"),
])
def test_ranges_are_checked_at_validation_naming_the_field(override, culprit):
    with pytest.raises(ConfigError) as info:
        load_config(ROCK, [override])
    assert culprit in str(info.value)


def test_postprocess_options_have_one_home_the_eval_section():
    # in the primary task's section they are refused, pointing at eval.*
    for key, value in (("iou_threshold", 0.3), ("top_k", 5), ("score_threshold", 0.2),
                       ("max_detections", 3)):
        with pytest.raises(ConfigError, match=rf"model.tasks.detection.{key}: .* write eval.{key}"):
            load_config(ROCK, [f"model.tasks.detection.{key}={value}"])
    # an invalid one is refused too, not overwritten silently
    with pytest.raises(ConfigError, match="eval.iou_threshold"):
        load_config(ROCK, ["model.tasks.detection.iou_threshold=1.5"])
    # the eval values reach the model
    from mtlkit import build_model

    cfg = load_config(ROCK, ["eval.iou_threshold=0.3", "eval.top_k=17", "data.image_size=[64,96]",
                             "model.backbone.weights=null"])
    det = build_model(cfg).tasks["detection"]
    assert det.options["iou_threshold"] == 0.3 and det.options["top_k"] == 17


def test_non_mapping_config_is_refused():
    with pytest.raises(ConfigError, match="expected a mapping"):
        validate_config(["model"])
    with pytest.raises(ConfigError, match="data: expected a mapping"):
        validate_config({"data": [1, 2]})
