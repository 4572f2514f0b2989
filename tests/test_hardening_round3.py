"""Issue 19 in code: checkpoints, plugins, ops, data files and the model's
public entry points accept nothing wrong quietly and say clearly what is
wrong (the command-level cases are in test_hardening_commands.py, the output
folder's in test_hardening_outdir.py)."""

import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import mtlkit
import mtlkit.ops as ops
from mtlkit.config import load_config
from mtlkit.engine.checkpoint import check_resumable, load_checkpoint, load_model_state
from mtlkit.errors import DataError, MtlkitError
from mtlkit.models.inputs import InputError
from mtlkit.registry import PluginError, Registry, RegistryError, autoload_disabled, get_registry, reset_registry
from mtlkit.task import labelled

from _tasks import InertTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROCK = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")
SMALL = ["data.image_size=[64,96]", "model.backbone.weights=null"]


@pytest.fixture(scope="module")
def rock():
    return mtlkit.build_model(load_config(ROCK, SMALL))


# -- checkpoints ----------------------------------------------------------------------------
def test_integer_weights_are_refused_not_loaded_as_whole_numbers(rock, tmp_path):
    state = rock.state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 4)
    bad = dict(state, **{name: state[name].to(torch.int64)})
    with pytest.raises(DataError) as info:
        load_model_state(rock, bad, "int.pt")
    message = str(info.value)
    assert f"'{name}' is torch.int64 in the checkpoint, torch.float32 in the model" in message
    assert "\n" not in message


@pytest.mark.parametrize("iteration", [-3, "abc", 2.5, True, None])
def test_an_iteration_that_is_not_a_step_count_is_refused(tmp_path, iteration):
    torch.save({"model": {}, "iteration": iteration}, tmp_path / "c.pt")
    with pytest.raises(DataError, match=rf"'iteration' is {iteration!r}, expected a number of optimiser steps"):
        load_checkpoint(str(tmp_path / "c.pt"))
    torch.save({"model": {}, "iteration": torch.tensor(7)}, tmp_path / "ok.pt")
    assert load_checkpoint(str(tmp_path / "ok.pt"))["iteration"] == 7


def test_a_weights_only_checkpoint_cannot_be_resumed(tmp_path):
    with pytest.raises(DataError, match=r"holds weights only \(no 'iteration', 'optimizer', 'rng', 'data'\)"):
        check_resumable({"model": {}}, "w.pt")
    with pytest.raises(DataError, match="'data' position is damaged"):
        check_resumable({"model": {}, "iteration": 1, "optimizer": {}, "rng": [], "data": {"epoch": "x"}}, "d.pt")
    check_resumable({"model": {}, "iteration": 1, "optimizer": {}, "rng": [],
                     "data": {"epoch": 0, "batch": 2, "batch_size": 4, "world_size": 1}}, "ok.pt")


def test_a_malicious_pickle_never_gets_torchs_advice_to_load_it_unsafely(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"model": {"w": torch.zeros(1)}, "x": Evil()}, tmp_path / "evil.pt")  # torch's own format
    with pytest.raises(DataError) as info:
        load_checkpoint(str(tmp_path / "evil.pt"))
    message = str(info.value)
    assert "refused unloaded" in message and "GLOBAL" in message
    for advice in ("weights_only", "Re-running", "will likely succeed", "arbitrary code"):
        assert advice not in message
    assert not (tmp_path / "pwned").exists()
    data = (tmp_path / "evil.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        load_checkpoint(str(tmp_path / "cut.pt"))
    assert "failed finding central directory" in str(info.value)  # the reason, not torch's boilerplate
    assert "If you are seeing this error" not in str(info.value)


def test_a_load_state_dict_error_keeps_its_detail_on_one_line(rock):
    class Strict(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))

        def load_state_dict(self, state, strict=True):
            raise RuntimeError("Error(s) in loading state_dict for Strict:\n\tsize mismatch for w: "
                               "copying a param with shape torch.Size([3])")

    with pytest.raises(DataError) as info:
        load_model_state(Strict(), {"w": torch.zeros(2)}, "s.pt")
    message = str(info.value)
    assert "Error(s) in loading state_dict for Strict: size mismatch for w" in message and "\n" not in message


# -- plugins ------------------------------------------------------------------------------
def test_a_misspelt_or_unmarked_hook_is_refused_not_silently_ignored():
    class Misspelt:
        @mtlkit.hookimpl
        def mtlkit_register_task(self, registry):  # no final s
            registry.add("centres", InertTask)

    with pytest.raises(PluginError, match=r"defines mtlkit_register_task\(\), which is not an mtlkit hook "
                                          r"\(did you mean 'mtlkit_register_tasks'\?\)"):
        Registry().register_plugin(Misspelt(), "typo")

    class Unmarked:
        def mtlkit_register_tasks(self, registry):
            registry.add("centres", InertTask)

    with pytest.raises(PluginError, match=r"mtlkit_register_tasks\(\) is not marked with @mtlkit.hookimpl"):
        Registry().register_plugin(Unmarked(), "unmarked")


@pytest.mark.parametrize("plugin", [None, "mtlkit_plugins.detection", object()])
def test_none_and_hookless_plugins_are_refused(plugin):
    with pytest.raises(PluginError, match="expects a module or an object|implements none of the mtlkit hooks"):
        Registry().register_plugin(plugin, "p")


def test_a_hook_failing_midway_leaves_nothing_registered():
    class Half:
        @mtlkit.hookimpl
        def mtlkit_register_tasks(self, registry):
            registry.add("first", InertTask)
            raise RuntimeError("the plugin's own bug")

    registry = Registry()
    with pytest.raises(RuntimeError):
        registry.register_plugin(Half(), "half")
    assert ("task", "first") not in registry and not registry.pm.has_plugin("half")

    class Whole:
        @mtlkit.hookimpl
        def mtlkit_register_tasks(self, registry):
            registry.add("first", InertTask)  # the name is free again

    registry.register_plugin(Whole(), "whole")
    assert registry.get("task", "first") is InertTask


def test_a_component_without_forward_is_refused_naming_the_plugin():
    from mtlkit.fusion import Fusion

    class NoForward(Fusion):
        pass

    class Plugin:
        @mtlkit.hookimpl
        def mtlkit_register_fusions(self, registry):
            registry.add("lazy", NoForward)

    with pytest.raises(PluginError, match=r"fusion 'lazy' registered by mtlkit-lazy 1.0 \(plugin 'lazy'\): "
                                          r"the class .*NoForward defines no forward\(\)"):
        Registry().register_plugin(Plugin(), "lazy", "mtlkit-lazy", "1.0")


EXITING = "import sys\nsys.exit(0)\n"
PRINTING = """
print("hello from a plugin")
from mtlkit import hookimpl
from mtlkit.fusion import Fusion

class Loud(Fusion):
    def forward(self, x, decoded):
        return x

@hookimpl
def mtlkit_register_fusions(registry):
    print("registering")
    registry.add("loud", Loud)
"""
CLASHING = """
from mtlkit import hookimpl
from mtlkit.models.backbones import Backbone

class Twin(Backbone):
    def forward(self, x):
        return [x]

@hookimpl
def mtlkit_register_backbones(registry):
    registry.add("twin", Twin)
"""


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mtlkit", *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **(env or {})))


def test_sys_exit_at_import_is_a_failed_plugin_and_prints_keep_json_clean(plugin_site):
    plugin_site("mtlkit-exiting", "0.1", {"exiting": "exiting_plugin"}, {"exiting_plugin.py": EXITING})
    plugin_site("mtlkit-loud", "0.2", {"loud": "loud_plugin"}, {"loud_plugin.py": PRINTING})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registry = get_registry()
    failed = {f.plugin: f.error for f in registry.failures}
    assert failed == {"mtlkit-exiting:exiting": "it called sys.exit(0) while being imported or registered"}
    assert ("fusion", "loud") in registry
    result = _cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)  # the plugin's prints went to stderr
    assert "hello from a plugin" in result.stderr and "registering" in result.stderr
    assert {"plugin": "mtlkit-loud:loud"}.items() <= next(t for t in listed["times"]
                                                          if t["plugin"] == "mtlkit-loud:loud").items()
    assert any(p["name"] == "loud" for p in listed["plugins"])
    times = _cli("plugins", "--times")
    assert "IMPORT" in times.stdout and "mtlkit-loud:loud" in times.stdout


def test_a_plugin_clash_is_not_blamed_on_a_config_key(plugin_site, tmp_path):
    plugin_site("mtlkit-twin-a", "1.0", {"a": "twin_a"}, {"twin_a.py": CLASHING})
    plugin_site("mtlkit-twin-b", "2.0", {"b": "twin_b"}, {"twin_b.py": CLASHING})
    result = _cli("train", ROCK, "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: backbone 'twin' is registered twice: by mtlkit-twin-a 1.0"), result.stderr
    assert "model.backbone" not in result.stderr


def test_a_slow_plugin_import_is_named_on_stderr(plugin_site):
    plugin_site("mtlkit-slow", "0.1", {"slow": "slow_plugin"},
                {"slow_plugin.py": "import time\ntime.sleep(1.5)\n" + PRINTING})
    result = _cli("plugins", env={"MTLKIT_PLUGIN_IMPORT_WARN": "0.5"})
    assert result.returncode == 0
    assert "still importing plugin 'mtlkit-slow:slow' from distribution 'mtlkit-slow' after 0.5 s" in result.stderr


@pytest.mark.parametrize("value, disabled", [("1", True), ("on", True), ("TRUE", True), ("yes", True),
                                             ("0", False), ("off", False), ("", False), ("no", False)])
def test_autoload_switch_values(monkeypatch, value, disabled):
    monkeypatch.setenv("MTLKIT_DISABLE_PLUGIN_AUTOLOAD", value)
    assert autoload_disabled() is disabled


def test_autoload_switch_refuses_nonsense(monkeypatch):
    monkeypatch.setenv("MTLKIT_DISABLE_PLUGIN_AUTOLOAD", "maybe")
    reset_registry()
    try:
        with pytest.raises(MtlkitError, match="MTLKIT_DISABLE_PLUGIN_AUTOLOAD='maybe': expected"):
            get_registry()
    finally:
        reset_registry()


def test_lookups_still_raise_registry_errors():
    with pytest.raises(RegistryError, match="unknown task"):
        get_registry().get("task", "nope")


# -- ops ------------------------------------------------------------------------------------
BACKENDS = ["torch"] + (["native"] if ops.backend() == "native" else [])


@pytest.mark.parametrize("be", BACKENDS)
def test_a_nan_score_is_dropped_not_ranked_first(be):
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, math.nan, 0.5])
    # box 1 overlaps box 0 (IoU 0.81): as a NaN ranked first it suppressed box 0
    assert ops.nms(boxes, scores, 0.5, backend=be).tolist() == [0, 2]
    assert ops.batched_nms(boxes, scores, torch.tensor([1, 1, 2]), 0.5, backend=be).tolist() == [0, 2]
    assert ops.nms(boxes, torch.full((3,), math.nan), 0.5, backend=be).tolist() == []


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("threshold", [1.5, -0.1, math.inf])
def test_score_threshold_outside_0_1_is_an_error(be, threshold):
    loc, conf, priors = torch.zeros(1, 2, 4), torch.zeros(1, 2, 3), torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 2)
    with pytest.raises(ValueError, match=r"score_threshold: expected a number in \[0, 1\]"):
        ops.ssd_postprocess(loc, conf, priors, score_threshold=threshold, iou_threshold=0.45, top_k=200,
                            max_detections=100, backend=be)


def _dense(boxes, scores, thr, monkeypatch):
    from mtlkit.ops import reference

    monkeypatch.setattr(reference, "_NMS_GRID_MIN", 10**12)
    try:
        return reference.nms(boxes, scores, thr)
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("case", ["sparse", "dense", "duplicates", "mixed_sizes", "long_chains"])
def test_reference_spatial_nms_equals_the_greedy_loop(case, monkeypatch):
    """Small blocks so that every path runs: sparse and dense blocks, grid
    compaction, boxes outside the grid, wide queries, the one-at-a-time finish
    of long suppression chains."""
    from mtlkit.ops import reference

    g = torch.Generator().manual_seed(len(case))
    n = 1500
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64)
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64)
    if case == "sparse":
        boxes = torch.cat([xy * 3000, xy * 3000 + wh * 40], 1)
    elif case == "dense":
        boxes = torch.cat([xy * 60, xy * 60 + 5 + wh * 40], 1)
    elif case == "duplicates":
        boxes = torch.cat([xy * 100, xy * 100 + 20], 1).round()[torch.randint(0, 40, (n,), generator=g)]
    elif case == "mixed_sizes":
        size = 10 ** (wh * 4)  # 1 to 10,000
        boxes = torch.cat([xy * 2000, xy * 2000 + size], 1)
        boxes[::50] = torch.tensor([-1e30, -1e30, 1e30, 1e30], dtype=torch.float64)
        boxes[1::97, 2:] = boxes[1::97, :2]  # zero area
        boxes[2::101, 0] = math.nan
    else:  # boxes shifted by a little each: chain after chain of suppressions
        shift = torch.arange(n, dtype=torch.float64)[:, None] * 0.9
        boxes = torch.cat([shift, torch.zeros(n, 1, dtype=torch.float64), shift + 10,
                           torch.full((n, 1), 10.0, dtype=torch.float64)], 1)
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    if case == "long_chains":
        scores = -torch.arange(n, dtype=torch.float64)
        monkeypatch.setattr(reference, "_BLOCK_ROUNDS", 1)
    monkeypatch.setattr(reference, "_SPATIAL_BLOCK", 64)
    for dtype in (torch.float64, torch.float32):
        for thr in (0.0, 0.3, 0.5, 0.8, 1.0):
            b, s = boxes.to(dtype), scores.to(dtype)
            want = _dense(b, s, thr, monkeypatch)
            monkeypatch.setattr(reference, "_SPATIAL_BLOCK", 64)
            if case == "long_chains":
                monkeypatch.setattr(reference, "_BLOCK_ROUNDS", 1)
            monkeypatch.setattr(reference, "_NMS_GRID_MIN", 0)
            assert torch.equal(reference.nms(b, s, thr), want), (dtype, thr)


@pytest.mark.slow
def test_reference_nms_scales_to_a_million_boxes():
    """The 200,000-box test's boxes, five times as many in the same area: the
    blocked loop took minutes (seconds now; timed in benchmarks/test_ops.py)."""
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(1_000_000, 2, generator=g, dtype=torch.float64) * 5000
    wh = torch.rand(1_000_000, 2, generator=g, dtype=torch.float64) * 60
    boxes, scores = torch.cat([xy, xy + wh], 1).float(), torch.rand(1_000_000, generator=g)
    keep = ops.nms(boxes, scores, 0.5, backend="torch")
    assert keep.numel() > 600_000
    if ops.backend() == "native":
        assert torch.equal(keep, ops.nms(boxes, scores, 0.5, backend="native"))


# -- data files -----------------------------------------------------------------------------
def _coco(tmp_path, images, annotations=(), categories=({"id": 1, "name": "cup"},)):
    (tmp_path / "ann.json").write_text(json.dumps({"images": list(images), "annotations": list(annotations),
                                                   "categories": list(categories)}))
    return str(tmp_path / "ann.json")


def test_coco_images_are_used_upright_when_the_json_describes_them_so(tmp_path):
    from mtlkit.data.coco import COCODetection

    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:5] = 255  # the top rows of the stored pixels: the right columns once upright (EXIF 6)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    # the JSON gives the upright size (20 wide, 40 high) and a box in that frame
    ann = _coco(tmp_path, [{"id": 1, "file_name": "r.jpg", "width": 20, "height": 40}],
                [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 30, 10, 8]}])
    sample = COCODetection(ann, images=str(tmp_path))[0]
    assert sample["image"].shape == (3, 40, 20)
    assert float(sample["image"][:, :, -3:].mean()) > 0.9 and float(sample["image"][:, :, :3].mean()) < 0.1
    # the JSON gives the stored size: its boxes were drawn on the stored pixels, used as stored
    ann = _coco(tmp_path, [{"id": 1, "file_name": "r.jpg", "width": 40, "height": 20}],
                [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 2, 8, 10]}])
    assert COCODetection(ann, images=str(tmp_path))[0]["image"].shape == (3, 20, 40)


@pytest.mark.parametrize("case", ["truncated", "not_an_image", "huge", "folder"])
def test_coco_image_problems_are_found_when_the_set_is_built(tmp_path, case, monkeypatch):
    from mtlkit.data.coco import COCODetection

    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "a.png")
    if case == "truncated":
        data = (tmp_path / "a.png").read_bytes()
        (tmp_path / "a.png").write_bytes(data[:-12])
        needle = "the PNG file is truncated"
    elif case == "not_an_image":
        (tmp_path / "a.png").write_bytes(b"<html>not found</html>")
        needle = "not an image file PIL can read"
    elif case == "huge":
        monkeypatch.setenv("MTLKIT_MAX_IMAGE_PIXELS", str(32 * 48 - 1))
        needle = "the image is 48x32 pixels (0 megapixels), more than mtlkit reads"
    else:
        (tmp_path / "a.png").unlink()
        (tmp_path / "a.png").mkdir()
        needle = " is a folder, expected an image file"
    ann = _coco(tmp_path, [{"id": 1, "file_name": "a.png"}])
    with pytest.raises(DataError, match=r"a\.png.*" + needle.replace("(", r"\(").replace(")", r"\)")):
        COCODetection(ann, images=str(tmp_path))


def test_a_coco_json_that_is_a_pipe_or_device_is_named(tmp_path):
    from mtlkit.data.coco import COCODetection

    os.mkfifo(tmp_path / "ann.json")
    with pytest.raises(DataError, match=r"ann.json is a named pipe \(FIFO\), expected a COCO detection JSON"):
        COCODetection(str(tmp_path / "ann.json"), images=str(tmp_path))
    with pytest.raises(DataError, match="/dev/null is a character device"):
        COCODetection("/dev/null", images=str(tmp_path))


def test_a_decompression_bomb_is_one_line(tmp_path):
    from mtlkit.data.images import probe_image

    Image.fromarray(np.zeros((10, 10), np.uint8)).resize((20000, 20000)).save(tmp_path / "bomb.png",
                                                                             optimize=True)
    with pytest.raises(DataError) as info:
        probe_image(str(tmp_path / "bomb.png"))
    assert "20000x20000" in str(info.value) and "\n" not in str(info.value)


# -- mixed modalities: the one label rule ---------------------------------------------------
def test_a_batch_without_a_label_key_has_no_label_and_flags_without_it_are_an_error():
    batch = {"image": torch.zeros(2, 3, 4, 4)}
    assert labelled(batch, "depth", 2, key="depth").tolist() == [False, False]
    assert labelled({**batch, "depth": torch.ones(2, 1, 4, 4)}, "depth", 2, key="depth").tolist() == [True, True]
    assert labelled({**batch, "has": {"depth": torch.tensor([False, False])}}, "depth", 2,
                    key="depth").tolist() == [False, False]
    with pytest.raises(DataError, match=r"batch\['has'\]\['depth'\] marks 1 of 2 sample\(s\) as labelled but "
                                        r"the batch has no 'depth'"):
        labelled({**batch, "has": {"depth": torch.tensor([True, False])}}, "depth", 2, key="depth")


def test_metrics_skip_a_batch_without_the_modality():
    from mtlkit.metrics import DepthMetric, NormalsMetric, SceneMetric

    batch = {"image": torch.zeros(2, 3, 4, 4), "has": {"depth": torch.tensor([False, False])}}
    for metric, pred in ((DepthMetric(task="depth"), torch.ones(2, 1, 4, 4)),
                         (NormalsMetric(task="normals"), torch.ones(2, 3, 4, 4)),
                         (SceneMetric(task="scene"), torch.ones(2, 5))):
        metric.update(pred, batch)  # was KeyError: 'depth' / 'normals' / 'scene'
        assert all(math.isnan(v) for v in metric.compute().values())


def test_summary_shows_a_task_without_labels_as_such():
    from mtlkit.metrics import summary

    text = summary({"detection": {"AP": 0.5}, "depth": {}})
    assert "depth      (no labelled sample)" in text


# -- the model's public entry points -------------------------------------------------------
@pytest.mark.parametrize("images, needle", [
    (torch.rand(1, 3, 32, 32, dtype=torch.float64), "torch.float64 values, the model's weights are torch.float32"),
    (torch.rand(1, 4, 32, 32), "RGBA? keep the colour channels, images[:, :3]"),
    (torch.rand(1, 32, 32, 3), "channels last? images.permute(0, 3, 1, 2)"),
    (torch.rand(0, 3, 32, 32), "an empty batch (0 images)"),
    ([torch.rand(3, 32, 32)], "a list of 1 item(s); stack them"),
    (np.zeros((1, 32, 32, 3), np.uint8), "numpy.ndarray of shape (1, 32, 32, 3); convert it"),
    ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), "torch.uint8 values, expected floating-point RGB in [0, 1] "
                                                       "(e.g. images.float() / 255)"),
    (torch.rand(1, 3, 32, 32) * 255, "0-255 values? divide by 255"),
    (torch.full((1, 3, 32, 32), math.nan), "3072 value(s) are NaN or inf"),
    (torch.rand(3, 32, 32), "got one image (3, 32, 32): add the batch dimension, images[None]"),
    (torch.rand(1, 3, 32, 32) * 4 - 2, "expected RGB in [0, 1]"),
])
def test_model_inputs_get_one_line_naming_images(rock, images, needle):
    rock.eval()
    with pytest.raises(InputError) as info:
        rock.detect(images)
    assert needle in str(info.value) and str(info.value).startswith("images: ")
    with pytest.raises(InputError):
        rock(images)  # the forward itself is checked (the trainer's path)


def test_inf_images_give_no_boxes_but_an_error(rock):
    images = torch.rand(2, 3, 32, 32)
    images[1, 0, 0, 0] = math.inf
    with pytest.raises(InputError, match="1 value"):
        rock.eval().detect(images)


def _batch(**changes):
    batch = {"image": torch.rand(2, 3, 64, 96), "boxes": [torch.tensor([[1.0, 2, 20, 30]]), torch.zeros(0, 4)],
             "labels": [torch.tensor([1]), torch.zeros(0, dtype=torch.int64)], "scene": torch.tensor([0, 5]),
             "depth": torch.rand(2, 1, 64, 96) + 0.5,
             "normals": torch.nn.functional.normalize(torch.randn(2, 3, 64, 96), dim=1),
             "has": {t: torch.tensor([True, True]) for t in ("detection", "scene", "depth", "normals")}}
    batch.update(changes)
    return batch


@pytest.mark.parametrize("changes, needle", [
    (dict(boxes=[torch.tensor([[1.0, 2, 20, 30]])]), "batch['boxes']: 1 entries for a batch of 2 images"),
    (dict(labels=[torch.tensor([1])]), "batch['labels']: 1 entries for a batch of 2 images"),
    (dict(boxes=[torch.tensor([[1.0, 2, 200, 30]]), torch.zeros(0, 4)]), "outside the 96x64 image"),
    (dict(boxes=[torch.tensor([[30.0, 2, 20, 30]]), torch.zeros(0, 4)]), "an inverted box"),
    (dict(boxes=[torch.tensor([[math.nan, 2, 20, 30]]), torch.zeros(0, 4)]), "coordinates must be finite"),
    (dict(labels=[torch.tensor([1, 2]), torch.zeros(0, dtype=torch.int64)]), "expected 1 labels (one per box)"),
    (dict(scene=torch.tensor([0, 30])), "batch['scene']: class indices must be in 0..5, got values from 0 to 30"),
    (dict(scene=torch.tensor([0.5, 1.0])), "batch['scene']: expected integer class indices"),
    (dict(image=None), "batch['image'] is missing"),
])
def test_model_losses_refuse_wrong_targets(rock, changes, needle):
    outputs = rock.train()(torch.rand(2, 3, 64, 96))
    with pytest.raises(DataError) as info:
        rock.losses(outputs, _batch(**changes))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_has_true_without_the_key_is_an_error_not_a_zero_loss(rock):
    outputs = rock.train()(torch.rand(2, 3, 64, 96))
    batch = _batch()
    del batch["depth"]
    with pytest.raises(DataError, match=r"batch\['has'\]\['depth'\] marks 2 of 2"):
        rock.losses(outputs, batch)
    batch["has"]["depth"] = torch.tensor([False, False])  # said so: no label, an exact 0
    assert float(rock.losses(outputs, batch)["depth"].detach()) == 0.0


def test_nan_depth_and_normals_targets_are_masked_not_a_nan_loss(rock):
    outputs = rock.train()(torch.rand(2, 3, 64, 96))
    clean = _batch()
    depth, normals = clean["depth"].clone(), clean["normals"].clone()
    depth[0, 0, :16, :16] = math.nan
    normals[1, :, 8:24, :24] = math.inf
    losses = rock.losses(outputs, _batch(depth=depth, normals=normals))
    assert math.isfinite(float(losses["depth"].detach())) and math.isfinite(float(losses["normals"].detach()))
    # equal to the loss with those pixels marked invalid explicitly
    mask = torch.ones_like(depth, dtype=torch.bool)
    mask[0, 0, :16, :16] = False
    want = rock.losses(outputs, _batch(depth=clean["depth"], depth_mask=mask))["depth"]
    assert float(losses["depth"].detach()) == pytest.approx(float(want.detach()), rel=1e-5)
