"""Issue 10, the engine: nothing non-finite saved as good, resume checks its
config, a run killed before its first checkpoint is not appended to, the run
directory is checked (and written only after everything is), checkpoint
loading errors are one clear line, the data's classes match the model's."""

import copy
import json
import os
from collections import OrderedDict

import pytest
import torch

from mtlkit.config import load_config
from mtlkit.engine import RunExists, TrainingDiverged, train
from mtlkit.engine.checkpoint import load_checkpoint, load_model_state
from mtlkit.engine.checks import check_classes, config_differences
from mtlkit.errors import ConfigError, DataError, MtlkitError
from mtlkit.utils.io import check_out_dir, make_out_dir
from _engine_fakes import ENGINE_CFG, FakeModel, fake_parts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROCK = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")
SSD = os.path.join(ROOT, "configs", "synthetic", "ssd.yaml")
# small images, and no pre-trained backbone weights (the tests need none)
SMALL = ["data.image_size=[64,96]", "model.backbone.weights=null"]


def cfg_with(**train_options):
    cfg = copy.deepcopy(ENGINE_CFG)
    cfg["train"].update(train_options)
    return cfg


class InfGradModel(FakeModel):
    """The loss stays finite but from forward call ``bad_from`` on its
    gradient is NaN (d sqrt(x)/dx at 0): the update, not the loss, diverges."""

    def __init__(self, bad_from):
        super().__init__()
        self.bad_from = bad_from

    def losses(self, outputs, batch):
        losses = super().losses(outputs, batch)
        if self.calls >= self.bad_from:
            losses["reg"] = losses["reg"] + torch.sqrt(0.0 * self.reg.weight.sum())
        return losses


def test_non_finite_weights_are_never_saved(tmp_path):
    parts = fake_parts()
    parts["model"] = InfGradModel(bad_from=3)
    with pytest.raises(TrainingDiverged) as info:
        train(cfg_with(iters=8, checkpoint_every=1), tmp_path, **parts)
    message = str(info.value)
    assert "iteration 3" in message and "NaN or inf" in message
    assert "last good checkpoint" in message and "(iteration 2)" in message
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert records[-1]["event"] == "diverged" and records[-1]["non_finite"]


def test_resume_refuses_a_changed_config_naming_the_keys(tmp_path):
    train(cfg_with(iters=2, checkpoint_every=1), tmp_path, **fake_parts())
    saved = (tmp_path / "config.yaml").read_text()
    changed = cfg_with(iters=4, optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.9, "weight_decay": 1e-4})
    with pytest.raises(ConfigError, match=r"train.optimizer.lr: 0.05 -> 0.5") as info:
        train(changed, tmp_path, resume=True, **fake_parts())
    assert "train.iters:" not in str(info.value)  # allowed to change
    assert (tmp_path / "config.yaml").read_text() == saved  # untouched
    # what may change (length, logging, evaluation) resumes and is recorded
    train(cfg_with(iters=4, checkpoint_every=1, log_every=2), tmp_path, resume=True, **fake_parts())
    assert load_config(str(tmp_path / "config.yaml"))["train"]["iters"] == 4


def test_config_differences_ignore_what_may_change():
    a = {"train": {"iters": 1, "optimizer": {"lr": 0.1}}, "eval": {"top_k": 3}, "data": {"num_workers": 0}}
    b = {"train": {"iters": 9, "optimizer": {"lr": 0.2}}, "eval": {"top_k": 5}, "data": {"num_workers": 2,
                                                                                        "batch_size": 4}}
    assert config_differences(a, b) == [("data.batch_size", None, 4), ("train.optimizer.lr", 0.1, 0.2)]


def test_a_run_killed_before_its_first_checkpoint_is_not_appended_to(tmp_path):
    record = {"event": "train", "iter": 1, "loss": 1.0}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(RunExists, match="before its first checkpoint; pass --resume"):
        train(cfg_with(iters=3), tmp_path, **fake_parts())
    train(cfg_with(iters=3), tmp_path, resume=True, **fake_parts())
    iters = [json.loads(line)["iter"] for line in open(tmp_path / "metrics.jsonl")
             if json.loads(line)["event"] == "train"]
    assert iters == [1, 2, 3]


def test_out_that_is_a_file_is_refused_before_anything(tmp_path):
    target = tmp_path / "out"
    target.write_text("x")
    with pytest.raises(MtlkitError, match=r"out is an existing file, expected a folder"):
        train(cfg_with(iters=1), target, **fake_parts())
    with pytest.raises(MtlkitError, match="is a file, not a folder"):
        check_out_dir(target / "below")
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_unwritable_out_is_one_line():
    # /sys refuses new entries even to root
    if not os.path.isdir("/sys"):
        pytest.skip("no /sys")
    with pytest.raises(MtlkitError, match=r"--out /sys/mtlkit-test-x"):
        make_out_dir("/sys/mtlkit-test-x")


def test_read_only_out_folder_is_refused(tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # root writes into a 0555 folder; /proc/sys refuses new entries even to root (as CI runs)
        folder = "/proc/sys"
        if not os.path.isdir(folder) or os.access(folder, os.W_OK):
            pytest.skip("no folder here that root cannot write")
        with pytest.raises(MtlkitError, match="/proc/sys: the folder is not writable"):
            check_out_dir(folder)
        return
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(MtlkitError, match="not writable"):
            check_out_dir(folder)
    finally:
        folder.chmod(0o755)


def test_cli_environment_errors_exit_2_in_one_line(tmp_path, capsys):
    from mtlkit.cli import main as cli

    target = tmp_path / "afile"
    target.write_text("x")
    assert cli(["train", ROCK, "--out", str(target), "-o", "train.iters=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and "existing file" in err and err.count("\n") == 1


def test_refused_runs_leave_no_run_directory(tmp_path):
    from mtlkit.cli import main as cli

    for i, override in enumerate(["data.batch_size=0", "model.tasks.detection.num_classes=0",
                                  "model.tasks.detection.num_classes=5"]):
        out = tmp_path / f"run{i}"
        args = [a for o in [override, "train.iters=1", *SMALL] for a in ("-o", o)]
        assert cli(["train", ROCK, "--out", str(out), *args]) == 2, override
        assert not out.exists(), override
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert cli(["train", str(empty), "--out", str(tmp_path / "e")]) == 2
    assert not (tmp_path / "e").exists()


# -- checkpoints ---------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", os.urandom(200), b"not a checkpoint"])
def test_garbage_checkpoints_are_one_line(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_checkpoint(str(path))
    message = str(info.value)
    assert "not a checkpoint" in message and "\n" not in message
    assert "weights_only" not in message and "EOFError" not in message


def test_a_pickle_with_code_is_refused_unloaded(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"model": Evil()}, handle)
    with pytest.raises(DataError, match="not a checkpoint"):
        load_checkpoint(str(path))
    assert not (tmp_path / "pwned").exists()


def test_a_checkpoint_of_another_model_names_the_keys(tmp_path):
    from mtlkit import build_model

    rock = build_model(load_config(ROCK, SMALL))
    ssd = build_model(load_config(SSD, SMALL))
    with pytest.raises(DataError) as info:
        load_model_state(ssd, rock.state_dict(), "other.pt")
    message = str(info.value)
    assert "unexpected key(s): 'block." in message and "more" in message
    assert "\n" not in message
    state = ssd.state_dict()
    del state[next(iter(state))]
    with pytest.raises(DataError, match=r"1 missing key\(s\): '"):
        load_model_state(ssd, state, "x.pt")


def test_eval_refuses_a_non_finite_checkpoint(tmp_path):
    from mtlkit import build_model
    from mtlkit.engine.evaluator import build_eval_model

    cfg = load_config(SSD, SMALL)
    state = build_model(cfg).state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone().fill_(float("nan"))
    path = tmp_path / "nan.pt"
    torch.save({"model": state, "iteration": 3}, path)
    from mtlkit.engine.trainer import resolve_config

    with pytest.raises(DataError, match=rf"non-finite values .* in 1 of \d+ tensors \('{name}'\)"):
        build_eval_model(resolve_config(cfg), str(path), torch.device("cpu"))


# -- classes ------------------------------------------------------------------------
class _Task:
    def __init__(self, num_classes, names=None):
        self.num_classes, self.options = num_classes, {"class_names": names}


class _Model:
    def __init__(self, num_classes, names=None):
        self.primary, self.tasks = "detection", OrderedDict(detection=_Task(num_classes, names))


class _Data:
    def __init__(self, classes):
        self.classes = classes


def test_data_classes_must_match_the_model():
    check_classes(_Model(2, ["a", "b"]), _Data(["a", "b"]), _Data(["a", "b"]), ["a", "b"])
    with pytest.raises(ConfigError, match=r"num_classes is 11 but the data of split 'train' has 3 classes"):
        check_classes(_Model(11), _Data(["a", "b", "c"]))
    with pytest.raises(ConfigError, match=r"class_names do not match .*label 1 is 'a' in the model and 'b' in the data"):
        check_classes(_Model(2, ["a", "b"]), _Data(["b", "a"]))
    with pytest.raises(DataError, match="split 'val' differ from those of split 'train'"):
        check_classes(_Model(2), _Data(["a", "b"]), _Data(["b", "a"]))
    with pytest.raises(DataError, match="checkpoint was trained on other classes"):
        check_classes(_Model(2), _Data(["a", "b"]), None, ["b", "a"])
