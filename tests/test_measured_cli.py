"""Measured inputs through the commands: `mtlkit eval --measured`, `mtlkit detect`
with depth files beside the images, and the ablation's `without_sensor` figures."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mtlkit.cli import main as cli
from mtlkit.engine.ablation import report
from mtlkit.engine.ablation.plan import Row
from mtlkit.engine.ablation.worker import record_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTH = os.path.join(ROOT, "configs", "synthetic")

TINY = """\
_base_: [{base}]
data:
  train: {{type: synthetic, split: train, size: 4, seed: 0, image_size: [60, 80]}}
  val: {{type: synthetic, split: val, size: 4, seed: 0, image_size: [60, 80]}}
  image_size: [64, 96]
  batch_size: 2
  num_workers: 0
train: {{iters: 2, log_every: 1, progress: false, plots: false}}
eval: {{batch_size: 2}}
model:
  backbone: {{weights: null}}
"""


@pytest.fixture(scope="module")
def measured_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("measured")
    config = root / "tiny.yaml"
    config.write_text(TINY.format(base=os.path.join(SYNTH, "rock_measured.yaml")))
    out = root / "run"
    assert cli(["train", str(config), "--out", str(out)]) == 0
    return config, out


def _metrics(path):
    return json.loads(path.read_text())["metrics"]


def test_eval_with_and_without_the_sensor(measured_run, tmp_path, capsys):
    config, out = measured_run
    ckpt = str(out / "last.pt")
    trained = _metrics(out / "metrics.json")  # the training's evaluation reads the sensor
    assert cli(["eval", str(config), "--checkpoint", ckpt, "--out", str(tmp_path / "s"),
                "--measured", "depth", "normals"]) == 0
    with_sensor = _metrics(tmp_path / "s" / "metrics.json")
    assert with_sensor == trained
    assert cli(["eval", str(config), "--checkpoint", ckpt, "--out", str(tmp_path / "n")]) == 0
    without = _metrics(tmp_path / "n" / "metrics.json")
    assert cli(["eval", str(config), "--checkpoint", ckpt, "--out", str(tmp_path / "d"),
                "--measured", "depth"]) == 0
    depth_only = _metrics(tmp_path / "d" / "metrics.json")
    # the auxiliary predictions are the model's own either way; the detections read the sensor
    assert without["depth"] == with_sensor["depth"] == depth_only["depth"]
    detections = [json.loads((tmp_path / d / "detections.json").read_text()) for d in ("s", "n", "d")]
    scores = [[round(x["score"], 6) for x in dets] for dets in detections]
    assert scores[0] != scores[1] and scores[2] != scores[1] and scores[2] != scores[0]
    capsys.readouterr()
    # a modality the model does not read, and data without a sensor: one line, exit 2
    assert cli(["eval", str(config), "--checkpoint", ckpt, "--out", str(tmp_path / "x"),
                "--measured", "scene"]) == 2
    assert "error: --measured scene: the model reads measured depth, normals only" in capsys.readouterr().err
    assert cli(["eval", str(config), "--checkpoint", ckpt, "--out", str(tmp_path / "y"),
                "--measured", "depth", "-o", "data.val.sensor=null"]) == 2
    err = capsys.readouterr().err
    assert "the model reads measured depth (model.measured) but the data of split 'evaluation' carries no " \
           "sensor_depth, sensor_depth_mask" in err and "Traceback" not in err
    # training it on data without a sensor is refused before anything is written
    assert cli(["train", str(config), "--out", str(tmp_path / "t"), "-o", "data.train.sensor=null"]) == 2
    assert "data of split 'train' carries no sensor_depth" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_resume_is_exact_with_the_training_draw(measured_run, tmp_path):
    """p_train 0.5 draws from the torch RNG, which the checkpoint holds: a run
    stopped after 1 iteration and resumed ends as the uninterrupted one."""
    config, out = measured_run
    run = tmp_path / "run"
    assert cli(["train", str(config), "--out", str(run), "--iters", "1", "-o", "train.eval_at_end=false"]) == 0
    assert cli(["train", str(config), "--out", str(run), "--iters", "2", "--resume",
                "-o", "train.eval_at_end=false"]) == 0
    resumed = torch.load(run / "last.pt", weights_only=True)["model"]
    straight = torch.load(out / "last.pt", weights_only=True)["model"]
    for k, v in straight.items():
        assert torch.equal(v, resumed[k]), k


def _write_depth_png(path, depth_m):
    Image.fromarray(np.round(depth_m * 1000).astype(np.uint16)).save(path)


def test_detect_reads_depth_files_beside_the_images(measured_run, tmp_path, capsys):
    config, out = measured_run
    from mtlkit.data.synthetic import SyntheticRooms

    sample = SyntheticRooms(split="test", size=1, seed=0, image_size=[60, 80], sensor="kinect").arrays(0)
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "b"):
        Image.fromarray(sample["image"]).save(images / f"{name}.png")
    _write_depth_png(images / "a.depth.png", sample["sensor_depth"])
    np.save(images / "b_far.depth.npy", sample["sensor_depth"])  # no image "b_far": not used

    def detect(dest, *extra):
        assert cli(["detect", str(config), "--checkpoint", str(out / "last.pt"), str(images),
                    "--out", str(tmp_path / dest), "--score-threshold", "0", *extra]) == 0
        return json.loads((tmp_path / dest / "predictions.json").read_text())

    plain = detect("plain")
    assert [os.path.basename(r["file"]) for r in plain] == ["a.png", "b.png"]  # depth files are no images
    capsys.readouterr()
    sensed = detect("sensed", "--measured", "depth", "normals")
    err = capsys.readouterr().err
    assert "no depth file beside 1 of 2 image(s)" in err and "b.depth.png" in err
    # a.png is read with its depth: its boxes change; b.png has none: as without the sensor
    assert sensed[0]["detection"] != plain[0]["detection"]
    assert sensed[1]["detection"] == plain[1]["detection"]
    # the same depth as float metres
    (images / "a.depth.png").unlink()
    np.save(images / "a.depth.npy", np.where(sample["sensor_depth_mask"], sample["sensor_depth"], np.nan))
    as_npy = detect("npy", "--measured", "depth", "normals")
    assert as_npy[0]["detection"]["scores"] == pytest.approx(sensed[0]["detection"]["scores"], abs=1e-3)
    # a depth map of the wrong size is one clear line
    np.save(images / "a.depth.npy", np.ones((10, 10)))
    assert cli(["detect", str(config), "--checkpoint", str(out / "last.pt"), str(images),
                "--out", str(tmp_path / "bad"), "--measured", "depth"]) == 2
    assert "a.depth.npy: the depth map has shape (10, 10), expected (60, 80)" in capsys.readouterr().err
    # an 8-bit PNG is not a depth map in millimetres; every depth file is read before anything
    # is written (b's is bad: no picture of a.png either, even one image per batch)
    np.save(images / "a.depth.npy", sample["sensor_depth"])
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(images / "b.depth.png")
    assert cli(["detect", str(config), "--checkpoint", str(out / "last.pt"), str(images), "--batch-size", "1",
                "--out", str(tmp_path / "bad8"), "--measured", "depth"]) == 2
    assert "b.depth.png: a depth PNG must be 16-bit grey in millimetres, got mode L" in capsys.readouterr().err
    assert not list((tmp_path / "bad8").glob("*.png"))


def test_ablation_records_and_reports_without_sensor():
    config = {"model": {"tasks": {"detection": {}, "depth": {}}}, "train": {"iters": 5}}
    info = {"model": "rock_measured", "seed": 0, "data_seed": 0, "config": config}
    record = record_of(info, {"detection": {"AP": 0.2, "AP50": 0.4, "AP75": 0.1}}, 3.0, None,
                       without_sensor={"detection": {"AP": 0.1, "AP50": 0.3, "AP75": 0.05}})
    assert record["without_sensor"] == {"AP": 0.1, "AP50": 0.3, "AP75": 0.05}
    assert "without_sensor" not in record_of(info, {"detection": {"AP": 0.2}}, 3.0, None)
    records = [
        {"model": "ssd", "seed": 0, "data_seed": 0, "AP": 0.10, "AP50": 0.2, "AP75": 0.05, "iters": 5,
         "train_seconds": 1.0},
        {"model": "rock", "seed": 0, "data_seed": 0, "AP": 0.12, "AP50": 0.2, "AP75": 0.05, "iters": 5,
         "train_seconds": 1.0},
        dict(record, iters=5),
    ]
    rows = [Row("ssd", "SSD", ""), Row("rock", "+ fusion (ROCK)", ""), Row("rock_measured", "ROCK, measured", "")]
    summary = report.summarise(records, rows)
    assert list(summary) == ["ssd", "rock", "rock_measured", "rock_measured/without_sensor"]
    bare = summary["rock_measured/without_sensor"]
    assert bare["AP"]["mean"] == pytest.approx(10.0)
    assert bare["gains"]["vs_ssd"]["AP"]["mean"] == pytest.approx(0.0)
    assert bare["gains"]["vs_previous"]["row"] == "rock"
    assert bare["gains"]["vs_previous"]["AP"]["mean"] == pytest.approx(-2.0)
    assert summary["rock_measured"]["gains"]["vs_ssd"]["AP"]["mean"] == pytest.approx(10.0)
    assert "| ROCK, measured, no sensor |" in report.format_markdown(summary, {"title": "t"})


@pytest.mark.slow
def test_ablate_rgbd_rows_end_to_end(tmp_path):
    """`mtlkit ablate --rows ssd,ssd_rgbd,rock_measured`: one render with the sensor for
    the RGB-D rows, `without_sensor` in their records, the table's sensorless rows."""
    out = tmp_path / "abl"
    tiny = ["data.train.size=6", "data.test.size=4", "data.image_size=[64,96]",
            "data.train.image_size=[60,80]", "data.val.image_size=[60,80]", "data.test.image_size=[60,80]",
            "data.batch_size=3", "train.plots=false", "model.backbone.weights=null"]
    args = ["ablate", SYNTH, "--out", str(out), "--rows", "ssd,ssd_rgbd,rock_measured", "--iters", "2",
            "--seeds", "0", "--no-progress", "--jobs", "2"]
    for o in tiny:
        args += ["-o", o]
    assert cli(args) == 0
    data = json.loads((out / "ablation.json").read_text())
    by = {r["model"]: r for r in data["runs"]}
    assert "without_sensor" not in by["ssd"]
    for row in ("ssd_rgbd", "rock_measured"):
        assert set(by[row]["without_sensor"]) == {"AP", "AP50", "AP75"}
    # ssd reads the set without a sensor, the RGB-D rows one set with it
    folders = sorted(p.name for p in (out / "data").iterdir())
    assert len(folders) == 4
    sensed = [f for f in folders if "sensor" in json.loads((out / "data" / f / "dataset.json").read_text())["config"]]
    assert len(sensed) == 2
    assert "rock_measured/without_sensor" in data["summary"]
    assert "| ROCK, measured D + N, no sensor |" in (out / "ablation.md").read_text()
