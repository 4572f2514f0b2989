"""Issue 10 through the command line: every bad input is exit status 2 with
one line naming the culprit, no traceback, and nothing written."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mtlkit.cli import main as cli

from _tiny_run import ROCK, SSD, TINY, train_tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("hardening"))


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_config_that_is_a_directory(tmp_path, capsys):
    assert cli(["train", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, "is a directory")
    assert not (tmp_path / "o").exists()


def test_eval_refuses_a_non_finite_checkpoint(run, tmp_path, capsys):
    config, out = run
    ckpt = torch.load(out / "last.pt", weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name] = torch.full_like(ckpt["model"][name], math.inf)
    torch.save(ckpt, tmp_path / "inf.pt")
    assert cli(["eval", str(config), "--checkpoint", str(tmp_path / "inf.pt"), "--out", str(tmp_path / "e")]) == 2
    one_line_error(capsys, "inf.pt hold non-finite values", name)
    assert not (tmp_path / "e").exists()


def test_eval_of_another_models_checkpoint_names_the_keys(run, tmp_path, capsys):
    config, out = run
    other = tmp_path / "ssd.yaml"
    other.write_text(TINY.format(base=SSD))
    assert cli(["eval", str(other), "--checkpoint", str(out / "last.pt"), "--out", str(tmp_path / "e")]) == 2
    one_line_error(capsys, "unexpected key(s): 'block.", "more")


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage" * 10])
def test_eval_of_garbage_checkpoints(run, tmp_path, capsys, content):
    config, _ = run
    (tmp_path / "x.pt").write_bytes(content)
    assert cli(["eval", str(config), "--checkpoint", str(tmp_path / "x.pt"), "--out", str(tmp_path / "e")]) == 2
    one_line_error(capsys, "x.pt", "not a checkpoint")


def test_resume_with_a_changed_option_is_refused(run, capsys):
    config, out = run
    before = (out / "config.yaml").read_text()
    import yaml

    lr = yaml.safe_load(before)["train"]["optimizer"]["lr"]
    assert cli(["train", str(config), "--out", str(out), "--resume", "-o", "train.optimizer.lr=1.25e-1"]) == 2
    one_line_error(capsys, f"train.optimizer.lr: {lr!r} -> 0.125")
    assert (out / "config.yaml").read_text() == before


def test_resume_with_another_config_is_refused(run, tmp_path, capsys):
    config, out = run
    other = tmp_path / "ssd.yaml"
    other.write_text(TINY.format(base=SSD))
    before = (out / "config.yaml").read_text()
    assert cli(["train", str(other), "--out", str(out), "--resume"]) == 2
    one_line_error(capsys, "--resume: the config differs", "model.")
    assert (out / "config.yaml").read_text() == before


def test_detect_reads_16_bit_pngs_at_their_full_range(run, tmp_path, capsys):
    from mtlkit.commands.detect import load_image

    grey = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    image = load_image(str(tmp_path / "g16.png"))
    assert image.shape == (3, 48, 64)
    assert torch.allclose(image[0], torch.from_numpy(grey.astype(np.float32) / 65535.0))
    assert float((image >= 1.0).float().mean()) == 0.0  # was 99.6 % white
    config, out = run
    assert cli(["detect", str(config), "--checkpoint", str(out / "last.pt"), str(tmp_path / "g16.png"),
                "--out", str(tmp_path / "p")]) == 0
    records = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert records[0]["height"] == 48 and records[0]["width"] == 64


@pytest.mark.parametrize("value", ["nan", "-0.5", "2"])
def test_detect_score_threshold_must_be_in_0_1(run, tmp_path, capsys, value):
    config, out = run
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    assert cli(["detect", str(config), "--checkpoint", str(out / "last.pt"), str(tmp_path / "a.png"),
                "--out", str(tmp_path / "p"), "--score-threshold", value]) == 2
    one_line_error(capsys, "--score-threshold must be a number in [0, 1]")
    assert not (tmp_path / "p").exists()


def test_detect_checks_every_image_before_writing(run, tmp_path, capsys):
    config, out = run
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "z.png").write_bytes(b"not a png")
    assert cli(["detect", str(config), "--checkpoint", str(out / "last.pt"), str(tmp_path / "a.png"),
                str(tmp_path / "z.png"), "--out", str(tmp_path / "p")]) == 2
    one_line_error(capsys, "z.png: not an image file PIL can read")
    assert not (tmp_path / "p").exists()


def test_bench_json_is_relative_to_the_current_folder(tmp_path, monkeypatch):
    import mtlkit.commands.bench as bench

    seen = {}
    monkeypatch.setattr(bench.subprocess, "call", lambda command, cwd: seen.update(command=command) or 0)
    monkeypatch.chdir(tmp_path)
    assert cli(["bench", "ops", "--json", "out.json"]) == 0
    assert f"--benchmark-json={tmp_path / 'out.json'}" in seen["command"]


def test_bench_json_in_a_missing_folder_and_k_matching_nothing(tmp_path, monkeypatch, capsys):
    import mtlkit.commands.bench as bench

    monkeypatch.setattr(bench.subprocess, "call", lambda command, cwd: 5)  # pytest: nothing collected
    assert cli(["bench", "ops", "--json", str(tmp_path / "no" / "x.json")]) == 2
    one_line_error(capsys, "does not exist")
    assert cli(["bench", "ops", "-k", "nomatch"]) == 2
    one_line_error(capsys, "no benchmark matches -k 'nomatch' in suite(s) ops")


def _coco_config(tmp_path, missing=False):
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        if not (missing and name == "b.png"):
            Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "img" / name)
    ann = {"images": [{"id": 1, "file_name": "a.png", "width": 48, "height": 32},
                      {"id": 2, "file_name": "b.png", "width": 48, "height": 32}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 10, 10]}],
           "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "pen"}, {"id": 3, "name": "box"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    config = tmp_path / "coco.yaml"
    # data.train switches from the base's synthetic type to coco: the base's options do not follow
    config.write_text(TINY.format(base=ROCK).replace(
        "  train: {type: synthetic, split: train, size: 4, seed: 0}\n  val: {type: synthetic, split: val, size: 2, seed: 0}",
        f"  train: {{type: coco, ann_file: {tmp_path / 'ann.json'}, images: {tmp_path / 'img'}}}\n  val: null"))
    return config


def test_coco_missing_image_is_found_before_the_run_directory(tmp_path, capsys):
    config = _coco_config(tmp_path, missing=True)
    assert cli(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys, "b.png: image 2 of", "is missing")
    assert not (tmp_path / "run").exists()


def test_coco_classes_must_fit_the_model_before_the_run_directory(tmp_path, capsys):
    config = _coco_config(tmp_path)
    assert cli(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys, "model.tasks.detection.num_classes is 11 but the data of split 'train' has 3 classes")
    assert not (tmp_path / "run").exists()
    # with the data's classes it trains
    assert cli(["train", str(config), "--out", str(tmp_path / "run"), "-o", "model.tasks.detection.num_classes=3",
                "-o", "model.tasks.detection.class_names=[cup,pen,box]"]) == 0
    assert (tmp_path / "run" / "last.pt").is_file()
