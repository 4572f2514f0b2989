"""The synthetic default's fast path: packed sets read like their samples,
the auxiliary-label subset, bf16 autocast and channels_last on CPU, fused
AdamW, shipped (`builtin:`) weights and the pre-training that makes them."""

import os

import numpy as np
import pytest
import torch

from mtlkit.data.synthetic import SyntheticRooms, storage
from mtlkit.data.synthetic.cli import write_set
from mtlkit.data.synthetic.generate import make_options
from mtlkit.engine.precision import amp_dtype_for
from mtlkit.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tiny"))
    write_set(root, 6, 3, "train", make_options((48, 64)), progress=False, preview=False, pack=True)
    return root


def test_pack_reads_exactly_the_samples(tiny_set):
    packed = SyntheticRooms(root=tiny_set)
    assert packed._pack is not None
    for i in range(6):
        want = storage.load_sample(storage.sample_path(tiny_set, i))
        got = packed.arrays(i)
        assert set(got) >= set(storage.SCHEMA)
        for key in storage.SCHEMA:
            assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        assert got["image"].flags.writeable  # a copy, not the read-only map
    sample = packed[2]
    assert torch.equal(sample["boxes"], torch.from_numpy(storage.load_sample(
        storage.sample_path(tiny_set, 2))["boxes"]))


def test_a_pack_of_fewer_samples_is_not_used(tiny_set, tmp_path):
    import shutil

    root = str(tmp_path / "set")
    shutil.copytree(tiny_set, root)
    storage.write_pack(root, 4)  # stale: the set has 6
    assert SyntheticRooms(root=root)._pack is None
    assert SyntheticRooms(root=root, size=4)._pack is not None


def test_label_subset_is_a_fixed_subset(tiny_set):
    from mtlkit.data import build_dataset

    full = build_dataset({"type": "synthetic", "root": tiny_set})
    assert all(full[i]["has"]["depth"] for i in range(6))
    spec = {"type": "synthetic", "root": tiny_set,
            "label_subset": {"fraction": 0.5, "tasks": ["scene", "depth", "normals"]}}
    part = build_dataset(spec)
    flags = [part[i]["has"] for i in range(6)]
    labelled = [f["depth"] for f in flags]
    assert sum(labelled) == 3
    assert all(f["detection"] for f in flags)  # tasks not listed keep their labels
    assert all(f["scene"] == f["depth"] == f["normals"] for f in flags)
    assert [build_dataset(spec)[i]["has"]["depth"] for i in range(6)] == labelled  # fixed
    other_seed = dict(spec, label_subset={**spec["label_subset"], "seed": 1})
    assert sum(build_dataset(other_seed)[i]["has"]["depth"] for i in range(6)) == 3
    with pytest.raises(ConfigError, match=r"data.train.label_subset.fraction: expected a number in \[0, 1\]"):
        build_dataset(dict(spec, label_subset={"fraction": 1.5, "tasks": ["depth"]}), where="data.train")
    with pytest.raises(ConfigError, match="unknown key 'data.train.label_subset.fractoin'"):
        build_dataset(dict(spec, label_subset={"fractoin": 0.5}), where="data.train")


def test_amp_dtype_rules():
    notes = []
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype_for({"amp": False, "amp_dtype": "bfloat16"}, cpu) is None
    assert amp_dtype_for({"amp": True, "amp_dtype": "bfloat16"}, cpu) is torch.bfloat16
    assert amp_dtype_for({"amp": True, "amp_dtype": "float16"}, cpu, notes.append) is torch.bfloat16
    assert "CUDA-only" in notes[0]
    assert amp_dtype_for({"amp": True, "amp_dtype": "float16"}, cuda) is torch.float16


def test_bf16_channels_last_training_runs_and_resumes_exactly(tiny_set, tmp_path):
    from mtlkit.engine import train

    overrides = [f"data.train={{type: synthetic, root: {tiny_set}}}", "data.val=null", "data.test=null",
                 "data.image_size=[48,64]", "data.batch_size=2", "data.num_workers=0",
                 "model.backbone.weights=null", "train.plots=false", "train.log_every=1",
                 "train.amp=true", "train.channels_last=true",
                 # a schedule that does not depend on train.iters, so 2 + 2 iterations equal 4
                 "train.schedule.name=constant", "train.schedule.warmup_iters=0"]
    config = os.path.join(REPO, "configs", "synthetic", "rock.yaml")
    # run "a" records what its convolutions compute in: bf16 and channels_last, or the options
    # were ignored (the resume check below would pass with plain float32 too)
    from mtlkit import build_model
    from mtlkit.config import load_config

    def built():  # the same initial weights for both runs
        torch.manual_seed(0)
        return build_model(load_config(config, overrides))

    model = built()
    seen = []
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, args, out: seen.append(
        (out.dtype, out.is_contiguous(memory_format=torch.channels_last), m.training)))
    train(config, str(tmp_path / "a"), iters=4, overrides=overrides, progress=False, model=model)
    training = [(dtype, cl) for dtype, cl, is_training in seen if is_training]
    assert len(training) == 4 and set(training) == {(torch.bfloat16, True)}, set(training)
    train(config, str(tmp_path / "b"), iters=2, overrides=overrides, progress=False, model=built())
    train(config, str(tmp_path / "b"), iters=4, overrides=overrides, progress=False, resume=True)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for key, value in a["model"].items():
        assert value.dtype == b["model"][key].dtype
        assert torch.equal(value, b["model"][key]), key
    assert all(v.dtype != torch.bfloat16 for v in a["model"].values())  # weights stay float32
    # the optimizer is the fused AdamW of the config
    assert a["optimizer"]["param_groups"][0]["fused"] is True
    import json

    records = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["event"] == "train"]
    assert len(train_records) == 4 and all(r["images"] == 2 and r["seconds"] > 0 for r in train_records)


def test_builtin_weights_resolve_and_unknown_names_list_the_shipped(tmp_path):
    from mtlkit.models.backbones.common import BUILTIN_DIR, read_state_dict

    shipped = sorted(f[:-3] for f in os.listdir(BUILTIN_DIR) if f.endswith(".pt"))
    assert "resnet_small_rooms" in shipped
    state = read_state_dict("builtin:resnet_small_rooms")
    assert "conv1.weight" in state and "layer4.0.conv1.weight" in state
    with pytest.raises(ConfigError, match="no built-in weights 'nope'; shipped: builtin:resnet_small_rooms"):
        read_state_dict("builtin:nope")


def test_pretrain_writes_loadable_backbone_weights(tiny_set, tmp_path):
    from mtlkit.models.backbones.resnet import ResNetSmall
    from mtlkit.commands.pretrain import pretrain

    out = str(tmp_path / "w.pt")
    torch.manual_seed(0)
    initial = ResNetSmall().state_dict()  # what pretrain(seed=0) starts from
    result = pretrain(tiny_set, out, iters=3, batch_size=2, crops_per_batch=4, image_size=[48, 64],
                      crop_size=32, warmup_iters=1, seed=0)
    assert set(result) == {"scene_accuracy", "crop_accuracy"}
    state = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert not torch.allclose(state["layer1.0.conv1.weight"].float(), initial["layer1.0.conv1.weight"],
                              atol=1e-3)  # trained, not the initialisation
    loaded = ResNetSmall(weights=out).state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key].to(value.dtype), value), key
    with pytest.raises(ConfigError, match="unknown key 'pretrain.lr_max'"):
        pretrain(tiny_set, out, lr_max=1.0)


def test_bf16_gradients_are_deterministic_on_small_images():
    """A strided 3x3 conv on a 1x1 map (the SSD extras at 48x64) under CPU bf16
    autocast: oneDNN's weight gradient reads uninitialised memory, so the
    extras run such convs in float32 (mtlkit.models.ssd.head._ExtraConv2d)."""
    import mtlkit
    from mtlkit.config import load_config

    cfg = load_config(os.path.join(REPO, "configs", "synthetic", "rock.yaml"),
                      ["data.image_size=[48,64]", "model.backbone.weights=null"])
    torch.manual_seed(0)
    model = mtlkit.build_model(cfg).train().to(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 48, 64).contiguous(memory_format=torch.channels_last)
    grads = []
    for _ in range(3):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
            total = sum((v.float() ** 2).mean() for v in out["detection"].values())
        total.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for name, grad in grads[0].items():
        assert torch.isfinite(grad).all(), name
        for other in grads[1:]:
            assert torch.equal(grad, other[name]), name


def test_pretrain_runs_on_the_trainer_and_resumes_exactly(tiny_set, tmp_path):
    """Pre-training is a step of the engine's trainer: its run directory, its
    losses and accuracies in metrics.jsonl, and a run stopped (like SIGINT)
    then resumed ends with the weights of an uninterrupted one."""
    import json

    from mtlkit.commands.pretrain import DEFAULTS, PretrainNet, PretrainStep, pretrain_config
    from mtlkit.data import build_split
    from _engine_fakes import StopAt
    from mtlkit.engine.runtime import run_config
    from mtlkit.engine.trainer import Trainer
    from mtlkit.models.backbones.resnet import ResNetSmall

    options = {**DEFAULTS, "iters": 6, "batch_size": 2, "image_size": [48, 64], "crop_size": 32,
               "crops_per_batch": 4, "warmup_iters": 2}
    cfg = run_config(pretrain_config(tiny_set, options), ["train.log_every=1", "train.plots=false"])

    def run(out, resume=False, hooks=()):
        train_set = build_split(cfg, "train", train=True, seed=0)
        torch.manual_seed(0)
        net = PretrainNet(ResNetSmall(), len(train_set.scenes), len(train_set.classes))
        step = PretrainStep(options["crop_size"], options["crops_per_batch"])
        Trainer(cfg, str(out), resume=resume, model=net, train_dataset=train_set, step=step,
                hooks=hooks).run()

    run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "stopped", hooks=[StopAt(2)])
    assert torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)["iteration"] == 3
    run(tmp_path / "stopped", resume=True)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)
    assert a["step"] == {"crop_size": 32, "crops_per_batch": 4}
    assert a["optimizer"]["param_groups"][0]["fused"] is True
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert set(records[0]["losses"]) == {"scene", "crop"}
    assert set(records[0]["scalars"]) == {"scene_accuracy", "crop_accuracy"}
    assert all(0.0 <= v <= 1.0 for r in records for v in r["scalars"].values())
    # the warm-up of the one schedule: lr / warmup_iters at the first step
    assert records[0]["lr"] == pytest.approx(options["lr"] / 2)
    # other crop options do not continue this run
    with pytest.raises(ConfigError, match="crops_per_batch"):
        train_set = build_split(cfg, "train", train=True, seed=0)
        net = PretrainNet(ResNetSmall(), len(train_set.scenes), len(train_set.classes))
        Trainer(cfg, str(tmp_path / "stopped"), resume=True, model=net, train_dataset=train_set,
                step=PretrainStep(32, 8)).run()


def test_pretrain_command_line(tiny_set, tmp_path, capsys):
    from mtlkit import cli

    out, run_dir = tmp_path / "w.pt", tmp_path / "run"
    args = ["pretrain", "--data", tiny_set, "--out", str(out), "--run-dir", str(run_dir), "--iters", "2",
            "--batch-size", "2", "--crops-per-batch", "2", "--image-size", "48", "64", "--crop-size", "32",
            "--no-progress"]
    assert cli.main(args) == 0
    assert "scene_accuracy" in capsys.readouterr().out
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "curves.png"):
        assert (run_dir / name).is_file(), name
    first = torch.load(out, weights_only=True)
    assert cli.main(args + ["--resume"]) == 0  # a finished run: nothing retrained, same weights
    again = torch.load(out, weights_only=True)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert cli.main(["pretrain", "--data", tiny_set, "--out", str(out), "--resume"]) == 2
    assert "--resume needs --run-dir" in capsys.readouterr().err
