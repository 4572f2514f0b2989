"""Measured modalities in the model (mtlkit/models/measured.py): a sensor's map
reaches the decoder, the prediction stands in where it is missing, training draws
measured or predicted per sample, configs without it are unchanged bit for bit,
and the RGB-D SSD starts as the RGB-pre-trained SSD with a trainable extra channel."""

import math
import os

import pytest
import torch

import mtlkit
from mtlkit import hookimpl
from mtlkit.config import load_config
from mtlkit.errors import ConfigError
from mtlkit.models.backbones.common import read_state_dict
from mtlkit.models.measured import MeasuredBlockInput, draw_present, measured_inputs
from mtlkit.resolved import resolve_config
from mtlkit.task import AuxiliaryTask, sensor_view

from _tasks import InertMethods
from mtlkit_plugins.auxiliary_tasks import DepthTask, NormalsTask, SceneTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTH = os.path.join(ROOT, "configs", "synthetic")
SIZE = 64


def build(row, *overrides, seed=0):
    torch.manual_seed(seed)
    return mtlkit.build_model(load_config(os.path.join(SYNTH, f"{row}.yaml"), list(overrides))).eval()


def sensor_batch(b=3, size=SIZE, seed=0):
    """A batch with labels and a sensor's maps (random, valid everywhere)."""
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(b, 1, size, size, generator=g) * 4 + 0.5
    normals = torch.nn.functional.normalize(torch.randn(b, 3, size, size, generator=g), dim=1)
    ones = torch.ones(b, 1, size, size, dtype=torch.bool)
    return {"image": torch.rand(b, 3, size, size, generator=g), "depth": depth, "depth_mask": ones,
            "normals": normals, "normals_mask": ones, "scene": torch.arange(b) % 6,
            "sensor_depth": depth.clone(), "sensor_depth_mask": ones.clone(),
            "sensor_normals": normals.clone(), "sensor_normals_mask": ones.clone(),
            "has": {"sensor_depth": torch.ones(b, dtype=torch.bool),
                    "sensor_normals": torch.ones(b, dtype=torch.bool)},
            "boxes": [torch.tensor([[4.0, 4.0, 40.0, 50.0]])] * b,
            "labels": [torch.tensor([1])] * b}


def detection(out):
    return torch.cat([out["detection"]["loc"].flatten(1), out["detection"]["conf"].flatten(1)], dim=1)


@pytest.mark.parametrize("encoder", ["resize", "conv"])
def test_a_measured_map_reaches_the_decoder(encoder):
    model = build("rock_measured", f"model.measured.encoder={encoder}")
    batch = sensor_batch()
    with torch.no_grad():
        base = model(batch["image"], **measured_inputs(model, batch))
        changed = dict(batch, sensor_depth=batch["sensor_depth"].clone())
        changed["sensor_depth"][1] *= 2.0  # sample 1 measures twice the depth
        moved = model(batch["image"], **measured_inputs(model, changed))
    diff = (detection(base) - detection(moved)).abs().amax(dim=1)
    assert diff[1] > 1e-4 and diff[0] == 0 and diff[2] == 0
    # the auxiliary predictions (and so their losses) are the block's own
    assert torch.equal(base["depth"], moved["depth"]) and torch.equal(base["normals"], moved["normals"])


@pytest.mark.parametrize("encoder", ["resize", "conv"])
def test_a_sample_without_the_measurement_uses_the_prediction(encoder):
    model = build("rock_measured", f"model.measured.encoder={encoder}")
    batch = sensor_batch()
    batch["has"]["sensor_depth"] = torch.tensor([False, True, True])
    batch["has"]["sensor_normals"] = torch.tensor([False, True, True])
    batch["sensor_depth_mask"][2] = False  # sample 2: a sensor that sees nothing (all holes)
    batch["sensor_normals_mask"][2] = False
    with torch.no_grad():
        sensed = detection(model(batch["image"], **measured_inputs(model, batch)))
        bare = detection(model(batch["image"]))
        none = detection(model(batch["image"], **measured_inputs(model, batch, [])))
    assert torch.equal(sensed[0], bare[0]) and torch.equal(sensed[2], bare[2])
    assert not torch.allclose(sensed[1], bare[1])
    assert torch.equal(none, bare)  # --measured none: the model without its sensor


def test_holes_fall_back_to_the_prediction_cell_by_cell():
    task = DepthTask("depth", {"group": 4})
    block = MeasuredBlockInput({"depth": task}, map_channels={"depth": 4}, encoder="resize", width=32,
                               stages=4, mode="replace", out_channels=8, fold=True)
    b, size, cells = 2, 16, 4
    depth = torch.full((b, 1, size, size), 2.0)
    mask = torch.ones(b, 1, size, size, dtype=torch.bool)
    mask[0, :, :4, :4] = False  # exactly cell (0, 0) of sample 0
    mask[1, :, :4, :2] = False  # half of cell (0, 0) of sample 1: the other half is measured
    view = sensor_view({"sensor_depth": depth, "sensor_depth_mask": mask, "image": torch.zeros(b, 3, size, size)})
    predicted = torch.full((b, 4, cells, cells), -7.0)
    out = block("depth", predicted, view, None)
    assert torch.equal(out[0, :, 0, 0], predicted[0, :, 0, 0])
    assert torch.allclose(out[1, :, 0, 0], torch.full((4,), math.log(2.0)))
    assert torch.allclose(out[0, :, 1:, :], torch.full_like(out[0, :, 1:, :], math.log(2.0)))
    # training draws per sample: a sample that is not present keeps its prediction
    out = block("depth", predicted, view, torch.tensor([True, False]))
    assert torch.equal(out[1], predicted[1]) and not torch.equal(out[0], predicted[0])


def test_training_draws_measured_or_predicted_per_sample():
    torch.manual_seed(0)
    draws = torch.stack([draw_present(16, 0.3, True, torch.device("cpu")) for _ in range(500)])
    assert abs(draws.float().mean().item() - 0.3) < 0.02
    assert 0 < draws.float().mean(dim=0).min() and draws.float().mean(dim=0).max() < 1  # per sample
    torch.manual_seed(0)
    again = torch.stack([draw_present(16, 0.3, True, torch.device("cpu")) for _ in range(500)])
    assert torch.equal(draws, again)  # from the seeded (checkpointed) torch RNG
    state = torch.get_rng_state()
    assert draw_present(16, 1.0, True, torch.device("cpu")) is None  # p 1: no draw, RNG untouched
    assert draw_present(16, 0.3, False, torch.device("cpu")) is None  # evaluation: every measurement
    assert torch.equal(state, torch.get_rng_state())
    # in the model: p_train 0 in training is the model without a sensor
    model = build("rock_measured", "model.measured.p_train=0.0").train()
    batch = sensor_batch()
    torch.manual_seed(1)
    a = detection(model(batch["image"], **measured_inputs(model, batch)))
    torch.manual_seed(1)
    b = detection(model(batch["image"]))
    assert torch.equal(a, b)


def test_a_config_without_measured_inputs_is_bitwise_unchanged():
    """rock and ssd read nothing of a sensor: the same outputs with sensor maps in
    the batch, through the same call as before; and training on data that carries
    a sensor ends with the same weights as on data without one."""
    from mtlkit.data.synthetic import SyntheticRooms
    from mtlkit.engine.trainer import train

    for row in ("ssd", "rock"):
        model = build(row)
        batch = sensor_batch()
        assert measured_inputs(model, batch) == {}
        with torch.no_grad():
            assert torch.equal(detection(model(batch["image"], **measured_inputs(model, batch))),
                               detection(model(batch["image"])))

    def run(sensor, out):
        data = dict(split="train", size=4, seed=1, image_size=[64, 96], sensor=sensor)
        train(os.path.join(SYNTH, "rock.yaml"), out, iters=2, progress=False,
              overrides=["data.image_size=[64,96]", "data.batch_size=2", "data.num_workers=0",
                         "train.plots=false", "train.eval_at_end=false"],
              train_dataset=_transformed(SyntheticRooms(**data)))
        return torch.load(os.path.join(out, "last.pt"), weights_only=True)["model"]

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        plain = run(None, os.path.join(tmp, "plain"))
        sensed = run("kinect", os.path.join(tmp, "sensed"))
    assert plain.keys() == sensed.keys()
    assert all(torch.equal(plain[k], sensed[k]) for k in plain)


def test_an_empty_measured_section_builds_the_plain_model():
    """Both lists empty: nothing of measured inputs is built, no random number
    drawn (the same weights, the same RNG state after the build), the same outputs."""
    torch.manual_seed(0)
    plain = build("rock")
    after_plain = torch.get_rng_state()
    torch.manual_seed(0)
    empty = build("rock", "model.measured={block: [], early_fusion: [], p_train: 0.3}")
    assert torch.equal(after_plain, torch.get_rng_state())
    assert empty.measured_readers == {} and empty.early_fusion is None and empty.block.measured is None
    assert plain.state_dict().keys() == empty.state_dict().keys()
    assert all(torch.equal(v, empty.state_dict()[k]) for k, v in plain.state_dict().items())
    batch = sensor_batch()
    assert measured_inputs(empty, batch) == {}
    with torch.no_grad():
        assert torch.equal(detection(plain(batch["image"])), detection(empty(batch["image"])))


def _transformed(dataset):
    from mtlkit.data import TransformedDataset
    from mtlkit.data.transforms import build_transforms

    return TransformedDataset(dataset, build_transforms({"expand": 0.0}, [64, 96], train=True), seed=0)


def test_ssd_rgbd_loads_the_rgb_weights_with_its_extra_channel():
    ssd, rgbd = build("ssd"), build("ssd_rgbd")
    weights = read_state_dict("builtin:resnet_small_rooms")
    backbone = rgbd.backbone
    assert torch.equal(backbone.conv1.weight, weights["conv1.weight"])
    assert backbone.conv1_extra.shape == (backbone.conv1.out_channels, 1, 3, 3)
    assert torch.count_nonzero(backbone.conv1_extra) == 0
    # the stem is frozen (frozen_stages: 3), the extra channel is not
    assert not backbone.conv1.weight.requires_grad and backbone.conv1_extra.requires_grad
    # same initial weights as SSD (the extra channel draws no random numbers) ...
    rgb_state = {k: v for k, v in rgbd.state_dict().items() if k != "backbone.conv1_extra"}
    assert rgb_state.keys() == ssd.state_dict().keys()
    assert all(torch.equal(v, ssd.state_dict()[k]) for k, v in rgb_state.items())
    # ... so its first step computes exactly what SSD's does, with or without depth
    batch = sensor_batch()
    with torch.no_grad():
        assert torch.equal(detection(rgbd(batch["image"], **measured_inputs(rgbd, batch))),
                           detection(ssd(batch["image"])))
    # a training step moves the extra channel's weights only, not the frozen stem
    rgbd.train()
    out = rgbd(batch["image"], **measured_inputs(rgbd, batch))
    loss = rgbd.losses(out, batch)["detection"]
    loss.backward()
    assert backbone.conv1.weight.grad is None
    assert backbone.conv1_extra.grad is not None and backbone.conv1_extra.grad.abs().sum() > 0
    # depth changes the output once the extra weights are not zero
    with torch.no_grad():
        backbone.conv1_extra.normal_()
    rgbd.eval()
    with torch.no_grad():
        far = dict(batch, sensor_depth=batch["sensor_depth"] * 2)
        assert not torch.equal(detection(rgbd(batch["image"], **measured_inputs(rgbd, batch))),
                               detection(rgbd(batch["image"], **measured_inputs(rgbd, far))))


def test_ssd_rgbd_checkpoint_round_trip_keeps_the_extra_channel(tmp_path):
    rgbd = build("ssd_rgbd")
    with torch.no_grad():
        rgbd.backbone.conv1_extra.fill_(0.5)
    path = tmp_path / "w.pt"
    torch.save(rgbd.state_dict(), path)
    other = build("ssd_rgbd", seed=3)
    other.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(other.backbone.conv1_extra, rgbd.backbone.conv1_extra)


class NotMeasurable(InertMethods, AuxiliaryTask):
    defaults = {"group": 1}

    @property
    def out_channels(self):
        return 1


def test_tasks_say_whether_they_can_be_measured(fresh_registry):
    assert DepthTask.can_be_measured() and NormalsTask.can_be_measured() and SceneTask.can_be_measured()
    assert not NotMeasurable.can_be_measured()

    class Plugin:
        @hookimpl
        def mtlkit_register_tasks(self, registry):
            registry.add("odd", NotMeasurable)

    fresh_registry().register_plugin(Plugin(), "test-odd")
    for field in ("block", "early_fusion"):
        with pytest.raises(ConfigError, match=rf"model.measured.{field}: task 'odd' \(NotMeasurable\) cannot "
                                              r"take a measured input"):
            # refused when the config is validated, before anything is built
            resolve_config(load_config(os.path.join(SYNTH, "rock.yaml"),
                                       ["model.tasks.odd={}", f"model.measured={{{field}: [odd]}}"]))


@pytest.mark.parametrize("overrides, message", [
    (["model.measured={block: [centre]}"], "model.measured.block: 'centre' is not an auxiliary task"),
    (["model.measured={block: [depth]}", "model.fusion=none"], "the fusion decodes no task map"),
    (["model.measured={block: [depth, depth]}"], "a task is listed twice"),
    (["model.measured={block: [depth], p_train: 1.5}"], "model.measured.p_train"),
    (["model.measured={block: [depth], encoder: cnn}"], "expected one of: resize, conv"),
    (["model.measured={early_fusion: [depth]}", "model.backbone={name: vgg16}"],
     "backbone VGG16SSD cannot take input channels beyond RGB"),
])
def test_bad_measured_configs_are_one_clear_line(overrides, message):
    with pytest.raises(ConfigError) as info:
        mtlkit.build_model(load_config(os.path.join(SYNTH, "rock.yaml"), overrides))
    assert message in str(info.value)


def test_task_measured_maps():
    b, size = 2, 8
    depth = torch.full((b, 1, size, size), 2.0)
    depth[0, :, :, :4] = 4.0
    mask = torch.ones(b, 1, size, size, dtype=torch.bool)
    mask[1] = False
    view = {"depth": depth, "depth_mask": mask, "has": {}}
    values, valid = DepthTask("depth").measured_map(view, (1, 2), None)
    assert torch.allclose(values[0, 0], torch.tensor([[math.log(4.0), math.log(2.0)]]))
    assert valid[0].all() and not valid[1].any()
    values, valid = DepthTask("depth").measured_map(dict(view, has={"depth": torch.tensor([False, True])}),
                                                    None, None)
    assert values.shape == (b, 1, size, size) and not valid.any()
    n = torch.zeros(b, 3, size, size)
    n[:, 2] = -1
    n[1, :, :, :4] = 0  # no normal there
    values, valid = NormalsTask("normals").measured_map({"normals": n, "has": {}}, (2, 2), None)
    assert torch.allclose(values[0, 2], torch.full((2, 2), -1.0)) and valid[0].all()
    assert not valid[1, :, :, 0].any() and valid[1, :, :, 1].all()
    scene = SceneTask("scene", {"num_classes": 4})
    values, valid = scene.measured_map({"scene": torch.tensor([2, 0]), "has": {}}, (3, 3), None)
    assert values.shape == (2, 4, 3, 3) and valid.all()
    probs = values[:, :, 0, 0].softmax(dim=1)
    assert torch.allclose(probs[0], torch.tensor([0.1 / 3, 0.1 / 3, 0.9, 0.1 / 3]))
    # no such label in the view: None (the prediction stands in)
    assert DepthTask("depth").measured_map({"has": {}}, (2, 2), None) is None


def test_sensor_view_reads_prefixed_keys_as_labels():
    batch = sensor_batch()
    view = sensor_view(batch, ["depth", "depth_mask"])
    assert set(view) == {"depth", "depth_mask", "has", "image"}
    assert view["depth"] is batch["sensor_depth"] and view["has"]["depth"].all()
    with pytest.raises(ConfigError, match="reads measured depth, normals only"):
        measured_inputs(build("rock_measured"), batch, ["scene"])
    with pytest.raises(ConfigError, match="reads no measured input"):
        measured_inputs(build("rock"), batch, ["depth"])


def test_early_fusion_channel_is_standardised_log_depth_and_zero_in_holes():
    model = build("ssd_rgbd")
    batch = sensor_batch(b=2, size=8)
    batch["sensor_depth_mask"][1, :, :4] = False
    fusion = model.early_fusion
    extra = fusion(batch["image"], measured_inputs(model, batch)["sensor"], None)
    mean, std = fusion.mean, fusion.std
    expected = (batch["sensor_depth"].log() - mean) / std
    assert torch.allclose(extra[0], expected[0])
    assert torch.equal(extra[1, :, :4], torch.zeros_like(extra[1, :, :4]))
    assert torch.equal(fusion(batch["image"], None, None), torch.zeros_like(extra))


def test_beside_mode_adds_a_decoded_sensor_term_and_is_rock_without_it():
    beside = build("rock_measured", "model.measured.mode=beside")
    rock = build("rock")
    # its own decoders, one more fusion term each; the rest is ROCK's
    assert set(beside.block.measured.decoders) == {"depth", "normals"}
    shared = {k: v for k, v in beside.state_dict().items() if not k.startswith("block.measured.")}
    rock.load_state_dict(shared)
    batch = sensor_batch()
    with torch.no_grad():
        bare = detection(beside(batch["image"]))
        assert torch.equal(bare, detection(rock(batch["image"])))
        assert torch.equal(detection(beside(batch["image"], **measured_inputs(beside, batch, []))), bare)
        sensed = detection(beside(batch["image"], **measured_inputs(beside, batch)))
        assert (sensed - bare).abs().amax(dim=1).min() > 1e-4
        # a sample whose sensor sees nothing gets no sensor term
        batch["sensor_depth_mask"][0] = False
        batch["sensor_normals_mask"][0] = False
        partly = detection(beside(batch["image"], **measured_inputs(beside, batch)))
    assert torch.equal(partly[0], bare[0]) and torch.equal(partly[1], sensed[1])
    # the decoded term is 0 in cells without a measurement
    block = beside.block.measured
    view = measured_inputs(beside, batch)["sensor"]
    predicted = torch.zeros(3, 32, 4, 4)
    term = block.decode_beside("depth", predicted, view, torch.tensor([True, True, False]))
    assert term.shape == (3, 256, 4, 4)
    assert torch.count_nonzero(term[0]) == 0 and torch.count_nonzero(term[2]) == 0
    assert torch.count_nonzero(term[1]) > 0
