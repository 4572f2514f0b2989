"""Issue 19 through the commands: nothing under any --out that mtlkit did not
write is changed (a test per command: detect, eval, data), a second process
into a locked --out is refused, mixed modalities evaluate, data is checked
before the first write."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from mtlkit.cli import main as cli

from _tiny_run import ROCK, TINY, train_tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("round3"))


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def snapshot(folder):
    """name -> (bytes, mtime) of every file under ``folder``."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, folder)] = (handle.read(), os.stat(path).st_mtime_ns)
    return out


def image(path, size=(24, 32), value=0):
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)
    return str(path)


# -- eval ----------------------------------------------------------------------------------
def test_eval_into_a_training_run_is_refused_and_changes_nothing(run, capsys):
    config, out = run
    before = snapshot(out)
    assert cli(["eval", str(config), "--checkpoint", str(out / "last.pt"), "--out", str(out)]) == 2
    one_line_error(capsys, f"--out {out} already holds metrics.json", "would replace it",
                   f"the default is {out / 'eval_<split>'}")
    assert snapshot(out) == before


def test_eval_reruns_into_its_own_folder_but_not_over_a_users_file(run, tmp_path, capsys):
    config, out = run
    target = tmp_path / "e"
    args = ["eval", str(config), "--checkpoint", str(out / "last.pt"), "--out", str(target)]
    assert cli(args) == 0 and cli(args) == 0  # a rerun replaces its own outputs
    capsys.readouterr()
    other = tmp_path / "f"
    other.mkdir()
    (other / "per_class_ap.png").write_bytes(b"my figure")
    assert cli(args[:-1] + [str(other)]) == 2
    one_line_error(capsys, "already holds per_class_ap.png")
    assert (other / "per_class_ap.png").read_bytes() == b"my figure"
    assert sorted(os.listdir(other)) == ["per_class_ap.png"]


@pytest.mark.parametrize("special, needle", [("/dev/null", "is a character device such as /dev/null"),
                                             ("fifo", "is a named pipe (FIFO)"),
                                             ("dir", "is a directory")])
def test_eval_names_what_a_checkpoint_path_is(run, tmp_path, capsys, special, needle):
    config, _ = run
    path = special
    if special == "fifo":
        path = str(tmp_path / "pipe")
        os.mkfifo(path)  # opening it would block for ever
    elif special == "dir":
        path = str(tmp_path)
    assert cli(["eval", str(config), "--checkpoint", path, "--out", str(tmp_path / "e")]) == 2
    one_line_error(capsys, needle)


def test_a_locked_out_is_refused_naming_the_holder(run, tmp_path, capsys):
    config, out = run
    target = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from mtlkit.utils.runlock import RunLock
        RunLock({str(target)!r}, command="mtlkit eval other.yaml").acquire()
        print("held", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cli(["eval", str(config), "--checkpoint", str(out / "last.pt"), "--out", str(target)]) == 2
        one_line_error(capsys, f"is in use by another mtlkit process: pid {holder.pid}", "`mtlkit eval other.yaml`")
        img = image(tmp_path / "a.png")
        assert cli(["detect", str(config), "--checkpoint", str(out / "last.pt"), img, "--out", str(target)]) == 2
        one_line_error(capsys, f"pid {holder.pid}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder was killed: its lock is stale and the next command takes it
    assert cli(["eval", str(config), "--checkpoint", str(out / "last.pt"), "--out", str(target)]) == 0


# -- detect --------------------------------------------------------------------------------
def test_detect_into_the_folder_of_its_images_is_refused(run, tmp_path, capsys):
    config, out = run
    folder = tmp_path / "photos"
    folder.mkdir()
    image(folder / "x.png")
    before = snapshot(folder)
    assert cli(["detect", str(config), "--checkpoint", str(out / "last.pt"), str(folder), "--out", str(folder)]) == 2
    one_line_error(capsys, "is the folder of the input image")
    assert snapshot(folder) == before


def test_detect_never_writes_over_a_file_it_did_not_write(run, tmp_path, capsys):
    config, out = run
    target = tmp_path / "p"
    target.mkdir()
    (target / "x.png").write_bytes(b"the user's x.png")
    img = image(tmp_path / "x.png")
    args = ["detect", str(config), "--checkpoint", str(out / "last.pt"), img, "--out", str(target)]
    capsys.readouterr()
    assert cli(args) == 2
    one_line_error(capsys, "already holds x.png, which `mtlkit detect` would replace")
    assert sorted(os.listdir(target)) == ["x.png"] and (target / "x.png").read_bytes() == b"the user's x.png"
    (target / "x.png").unlink()
    assert cli(args) == 0 and cli(args) == 0  # its own pictures it rewrites


def test_detect_gives_images_of_one_name_pictures_of_their_own(run, tmp_path):
    config, out = run
    for sub, value in (("a", 0), ("b", 255), ("c", 128)):
        (tmp_path / sub).mkdir()
    paths = [image(tmp_path / "a" / "x.png", value=0), image(tmp_path / "b" / "x.png", value=255),
             image(tmp_path / "c" / "x_1.png", value=128)]
    assert cli(["detect", str(config), "--checkpoint", str(out / "last.pt"), *paths,
                "--out", str(tmp_path / "p")]) == 0
    records = json.loads((tmp_path / "p" / "predictions.json").read_text())
    pictures = [r["picture"] for r in records]
    assert len(set(pictures)) == 3 and pictures[2] == "x_1.png"
    assert all((tmp_path / "p" / name).is_file() for name in pictures)
    # each picture shows its own image (the input panel's first pixel)
    first = [np.asarray(Image.open(tmp_path / "p" / name))[30, 4] for name in pictures]
    assert len({tuple(p) for p in first}) == 3


def test_detect_uses_images_upright_by_their_exif_orientation(run, tmp_path):
    config, out = run
    stored = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide, 20 high, displayed rotated 90 degrees
    stored[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif.tobytes())
    from mtlkit.commands.detect import load_image

    loaded = load_image(str(tmp_path / "r.jpg"))
    assert loaded.shape == (3, 40, 20)  # upright: 20 wide, 40 high
    assert cli(["detect", str(config), "--checkpoint", str(out / "last.pt"), str(tmp_path / "r.jpg"),
                "--out", str(tmp_path / "p")]) == 0
    record = json.loads((tmp_path / "p" / "predictions.json").read_text())[0]
    assert (record["width"], record["height"]) == (20, 40)


@pytest.mark.parametrize("case", ["truncated_png", "truncated_jpeg", "bomb", "devnull"])
def test_detect_refuses_bad_images_before_writing(run, tmp_path, capsys, case, monkeypatch):
    config, out = run
    good = image(tmp_path / "good.png")
    if case == "truncated_png":
        data = open(image(tmp_path / "t.png", size=(64, 64), value=7), "rb").read()
        (tmp_path / "t.png").write_bytes(data[:-20])
        bad, needle = str(tmp_path / "t.png"), "the PNG file is truncated"
    elif case == "truncated_jpeg":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            tmp_path / "t.jpg", quality=90)
        data = (tmp_path / "t.jpg").read_bytes()
        (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
        bad, needle = str(tmp_path / "t.jpg"), "the JPEG file is truncated"
    elif case == "bomb":
        monkeypatch.setenv("MTLKIT_MAX_IMAGE_PIXELS", "100")
        bad, needle = image(tmp_path / "big.png", size=(20, 20)), "more than mtlkit reads"
    else:
        bad, needle = "/dev/null", "/dev/null is a character device"
    assert cli(["detect", str(config), "--checkpoint", str(out / "last.pt"), good, bad,
                "--out", str(tmp_path / "p")]) == 2
    one_line_error(capsys, needle)
    assert not (tmp_path / "p").exists()


# -- data ----------------------------------------------------------------------------------
def test_data_synth_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "preview.png").write_bytes(b"my preview")
    assert cli(["data", "synth", "--out", str(target), "-n", "1", "--size", "24", "32", "--quiet"]) == 2
    one_line_error(capsys, "already holds preview.png but no dataset.json")
    assert sorted(os.listdir(target)) == ["preview.png"]
    assert cli(["data", "synth", "--out", str(tmp_path / "set"), "-n", "1", "--size", "24", "32",
                "--quiet", "--no-preview"]) == 0
    assert cli(["data", "synth", "--out", str(tmp_path / "set"), "-n", "2", "--size", "24", "32",
                "--quiet", "--no-preview"]) == 0  # its own set it extends
    assert not (tmp_path / "set" / ".mtlkit.lock").exists()


# -- mixed modalities, label names ---------------------------------------------------------------
def _coco(tmp_path, categories=("cup", "pen", "box"), scenes=None):
    (tmp_path / "img").mkdir(exist_ok=True)
    images = []
    for k, name in enumerate(("a.png", "b.png")):
        image(tmp_path / "img" / name, size=(32, 48), value=40 * k)
        record = {"id": k + 1, "file_name": name, "width": 48, "height": 32}
        if scenes:
            record["scene"] = scenes[k]
        images.append(record)
    ann = {"images": images,
           "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 10, 10]}],
           "categories": [{"id": k + 1, "name": n} for k, n in enumerate(categories)]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    spec = f"{{type: coco, ann_file: {tmp_path / 'ann.json'}, images: {tmp_path / 'img'}}}"
    config = tmp_path / "coco.yaml"
    config.write_text(TINY.format(base=ROCK).replace(
        "  train: {type: synthetic, split: train, size: 4, seed: 0}\n  val: {type: synthetic, split: val, size: 2, seed: 0}",
        f"  train: {spec}\n  val: {spec}").replace(
        "model: {backbone: {weights: null}}",
        "model: {backbone: {weights: null}, tasks: {detection: {num_classes: 3, class_names: [cup, pen, box]}}}"))
    return config


def test_rock_on_coco_without_scene_depth_normals_trains_and_evaluates(tmp_path, capsys):
    """The README's promise: data lacking a modality mixes in. It ended in
    KeyError: 'scene' after training."""
    config = _coco(tmp_path)
    assert cli(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["metrics"]["scene"] == {} and record["absent"] == ["depth", "normals", "scene"]
    assert record["metrics"]["detection"]["AP50"] >= 0
    capsys.readouterr()
    assert cli(["eval", str(config), "--checkpoint", str(tmp_path / "run" / "last.pt")]) == 0
    table = capsys.readouterr().out
    assert "scene      (no labelled sample)" in table


def test_coco_scene_names_must_match_the_models(tmp_path, capsys):
    config = _coco(tmp_path, scenes=["kitchen", "office"])
    # the data's sorted names are [kitchen, office]: index 0 would become the model's "bathroom"
    assert cli(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys, "the scenes of the data of split 'train' do not match model.tasks.scene.names",
                   "label 0 is 'bathroom' in the model and 'kitchen' in the data")
    assert not (tmp_path / "run").exists()


def test_coco_categories_of_one_name_are_refused(tmp_path, capsys):
    config = _coco(tmp_path, categories=("cup", "pen", "cup"))
    assert cli(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys, "categories[2] repeats the name 'cup' of categories[0]")
    assert not (tmp_path / "run").exists()
