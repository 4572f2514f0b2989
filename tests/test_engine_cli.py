"""End to end on the real synthetic ROCK config at a tiny size: `mtlkit train`,
`mtlkit eval`, `mtlkit detect` and `--resume` through the CLI."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mtlkit.cli import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROCK = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")

TINY = """\
_base_: [{base}]
data:
  train: {{type: synthetic, split: train, size: 4, seed: 0}}
  val: {{type: synthetic, split: val, size: 3, seed: 0}}
  image_size: [64, 96]
  batch_size: 2
train: {{iters: 2, log_every: 1, progress: false, checkpoint_every: 1}}
eval: {{batch_size: 2}}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    config.write_text(TINY.format(base=ROCK))
    out = root / "run"
    rc = cli(["train", str(config), "--out", str(out)])
    assert rc == 0
    return config, out


def test_train_run_directory(tiny_run, capsys):
    config, out = tiny_run
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "metrics.json", "detections.json",
                 "curves.png", "per_class_ap.png"):
        assert (out / name).is_file(), name
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 2
    assert ckpt["meta"]["tasks"] == ["detection", "scene", "depth", "normals"]
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    train_records = [r for r in records if r["event"] == "train"]
    assert [r["iter"] for r in train_records] == [1, 2]
    assert set(train_records[0]["losses"]) == {"detection", "scene", "depth", "normals"}
    assert all(np.isfinite(v) for r in train_records for v in r["losses"].values())
    result = json.load(open(out / "metrics.json"))
    assert {"AP", "AP50", "AP75"} <= set(result["metrics"]["detection"])
    assert "top1" in result["metrics"]["scene"]
    assert len(result["per_class_ap"]) == 11


def test_eval_matches_training_evaluation(tiny_run, capsys):
    config, out = tiny_run
    eval_dir = out / "ev"
    assert cli(["eval", str(config), "--checkpoint", str(out / "last.pt"), "--out", str(eval_dir)]) == 0
    table = capsys.readouterr().out
    assert "detection" in table and "AP50" in table and "depth" in table
    again = json.load(open(eval_dir / "metrics.json"))
    trained = json.load(open(out / "metrics.json"))
    assert again["metrics"] == trained["metrics"]
    dets = json.load(open(eval_dir / "detections.json"))
    assert dets and {d["image_id"] for d in dets} <= {0, 1, 2}
    assert all(1 <= d["category_id"] <= 11 and d["bbox"][2] >= 0 for d in dets)
    assert (eval_dir / "per_class_ap.png").is_file()


def test_detect_pictures_and_json(tiny_run, tmp_path, capsys):
    config, out = tiny_run
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((120, 200, 3)) * 255).astype(np.uint8)).save(folder / "a.png")
    Image.fromarray((rng.random((90, 60, 3)) * 255).astype(np.uint8)).save(folder / "b.jpg")
    pics = tmp_path / "pics"
    rc = cli(["detect", str(config), "--checkpoint", str(out / "last.pt"), str(folder),
              str(folder / "*.png"), "--out", str(pics), "--json", "--score-threshold", "0.0"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert [os.path.basename(r["file"]) for r in printed] == ["a.png", "b.jpg"]  # no duplicate
    assert printed == json.load(open(pics / "predictions.json"))
    for record in printed:
        h, w = record["height"], record["width"]
        boxes = np.array(record["detection"]["boxes"]).reshape(-1, 4)
        assert len(boxes) > 0  # threshold 0: the best boxes are kept
        # boxes are in original-image pixels
        assert boxes[:, [0, 2]].max() <= w + 1e-3 and boxes[:, [1, 3]].max() <= h + 1e-3
        assert record["scene"]["name"] in {"bathroom", "bedroom", "dining_room", "kitchen",
                                           "living_room", "office"}
        assert all(n is not None for n in record["detection"]["class_names"])
    panel = np.asarray(Image.open(pics / "a.png"))
    # input, detection, scene, depth, normals: 3 columns x 2 rows of 120x200 pictures
    assert panel.shape[0] > 2 * 120 and panel.shape[1] > 3 * 200


def test_resume_through_cli(tiny_run, tmp_path):
    config, out = tiny_run
    run = tmp_path / "run"
    assert cli(["train", str(config), "--out", str(run), "--iters", "1", "-o", "train.eval_at_end=false"]) == 0
    assert cli(["train", str(config), "--out", str(run), "--iters", "2", "--resume",
                "-o", "train.eval_at_end=false"]) == 0
    resumed = torch.load(run / "last.pt", weights_only=True)
    straight = torch.load(out / "last.pt", weights_only=True)
    assert resumed["iteration"] == 2
    # --iters changes the schedule's length (milestone fractions), which the
    # 2-iteration runs do not reach: same weights as the uninterrupted run
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def test_user_errors_are_one_line(tiny_run, tmp_path, capsys):
    config, out = tiny_run
    assert cli(["train", str(config), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli(["train", str(config), "-o", "train.optimizer.lr=fast", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train.optimizer.lr") and err.count("\n") == 1
    assert cli(["eval", str(config), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert cli(["detect", str(config), "--checkpoint", str(out / "last.pt"), str(tmp_path / "nope.png"),
                "--out", str(tmp_path / "p")]) == 2
    assert "nope.png: no such image" in capsys.readouterr().err


@pytest.mark.slow
def test_sigint_on_the_command_line_saves_and_exits_cleanly(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(base=ROCK))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mtlkit", "train", str(config), "--out", str(out),
                             "--iters", "500", "-o", "train.checkpoint_every=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out / "last.pt").exists() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "stopped by SIGINT at iteration" in err and "--resume" in err
    stopped_at = int(err.split("stopped by SIGINT at iteration ")[1].split(";")[0])
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == stopped_at < 500
