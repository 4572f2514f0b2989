"""Issue 19, part 2: the trainer's run folder (one process per --out, never a
file replaced that a training run did not write, runs from before the record
adopted), what a resume accepts (weights-only and NaN-optimiser checkpoints,
the checkpoint's scene names), the ablation's and pretrain's output folders."""

import copy
import json
import os

import pytest
import torch

from mtlkit.engine import train
from mtlkit.engine.checkpoint import check_finite_optimizer
from mtlkit.errors import DataError
from mtlkit.utils.outdir import RECORD_NAME, OutputExists, written
from mtlkit.utils.runlock import LOCK_NAME, RunLocked
from _engine_fakes import ENGINE_CFG, FakeDataset, fake_parts
from test_hardening_outdir import _hold


def cfg_with(**train_options):
    cfg = copy.deepcopy(ENGINE_CFG)
    cfg["train"].update(train_options)
    return cfg


# -- the lock -------------------------------------------------------------------------------
def test_a_second_training_into_the_same_out_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    holder = _hold(out)
    try:
        with pytest.raises(RunLocked, match=r"in use by another mtlkit process: pid \d+ .*holder\.yaml"):
            train(cfg_with(iters=2), out, **fake_parts())
        assert sorted(os.listdir(out)) == [LOCK_NAME]  # nothing written by the refused run
    finally:
        holder.kill()
        holder.wait()
    train(cfg_with(iters=2), out, **fake_parts())  # the killed holder's lock is stale: taken over
    assert (out / "last.pt").is_file() and not (out / LOCK_NAME).exists()


def test_the_lock_is_held_while_the_run_trains(tmp_path):
    from mtlkit.engine.hooks import HookBase
    from mtlkit.utils.runlock import holder

    seen = []

    class Probe(HookBase):
        def after_step(self):
            seen.append(holder(self.state.out_dir))

    train(cfg_with(iters=2), tmp_path / "run", hooks=[Probe()], **fake_parts())
    assert len(seen) == 2 and all(info and info["pid"] == os.getpid() for info in seen)
    assert holder(tmp_path / "run") is None


def test_a_refused_run_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(DataError):  # refused after the lock created the folder
        train(cfg_with(iters=2), out, train_dataset=FakeDataset(0), **{
            k: v for k, v in fake_parts().items() if k != "train_dataset"})
    assert not out.exists()


# -- never replace what a training run did not write ----------------------------------------
def test_out_in_the_configs_own_folder_never_replaces_the_users_config(tmp_path):
    mine = "# my hand-written config\ntrain: {iters: 2}\n"
    (tmp_path / "config.yaml").write_text(mine)
    with pytest.raises(OutputExists, match=r"already holds config\.yaml, which `mtlkit train` would replace"):
        train(cfg_with(iters=2), tmp_path, **fake_parts())
    assert (tmp_path / "config.yaml").read_text() == mine
    assert sorted(os.listdir(tmp_path)) == ["config.yaml"]


@pytest.mark.parametrize("name", ["metrics.json", "curves.png", "tb"])
def test_a_users_file_of_any_output_name_is_refused_before_training(tmp_path, name):
    (tmp_path / name).write_text("mine")
    with pytest.raises(OutputExists, match=name.replace(".", r"\.")):
        train(cfg_with(iters=2), tmp_path, **fake_parts())
    assert sorted(os.listdir(tmp_path)) == [name]


def test_a_run_records_its_outputs_and_resumes_over_them(tmp_path):
    train(cfg_with(iters=2, checkpoint_every=1), tmp_path, **fake_parts())
    record = written(tmp_path)
    assert record["last.pt"] == "train" and record["config.yaml"] == "train"
    train(cfg_with(iters=3), tmp_path, resume=True, **fake_parts())
    assert torch.load(tmp_path / "last.pt", weights_only=True)["iteration"] == 3


def test_a_run_from_before_the_record_is_adopted_when_resumed(tmp_path):
    train(cfg_with(iters=2), tmp_path, **fake_parts())
    os.remove(tmp_path / RECORD_NAME)  # as written before mtlkit kept the record
    train(cfg_with(iters=3), tmp_path, resume=True, **fake_parts())
    assert torch.load(tmp_path / "last.pt", weights_only=True)["iteration"] == 3
    assert written(tmp_path)["last.pt"] == "train"


def test_a_last_pt_that_is_not_a_checkpoint_is_not_adopted(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"my notes, not a checkpoint")
    with pytest.raises(DataError, match="not a checkpoint"):
        train(cfg_with(iters=2), tmp_path, resume=True, **fake_parts())
    assert (tmp_path / "last.pt").read_bytes() == b"my notes, not a checkpoint"


# -- what a resume accepts ----------------------------------------------------------------
def test_resuming_a_weights_only_checkpoint_is_refused(tmp_path):
    train(cfg_with(iters=2), tmp_path, **fake_parts())
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    torch.save({"model": ckpt["model"]}, tmp_path / "last.pt")
    with pytest.raises(DataError, match=r"holds weights only .*can be evaluated but not resumed"):
        train(cfg_with(iters=4), tmp_path, resume=True, **fake_parts())


def test_a_checkpoint_with_a_nan_optimiser_state_is_not_resumed(tmp_path):
    train(cfg_with(iters=2), tmp_path, **fake_parts())  # sgd with momentum: a momentum buffer per weight
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    slot = next(iter(ckpt["optimizer"]["state"].values()))
    slot["momentum_buffer"][0] = float("nan")
    torch.save(ckpt, tmp_path / "last.pt")
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(DataError, match=r"optimiser state holds non-finite values .*momentum_buffer"):
        train(cfg_with(iters=4), tmp_path, resume=True, **fake_parts())
    assert (tmp_path / "last.pt").read_bytes() == before


def test_check_finite_optimizer_accepts_a_finite_state_and_none():
    check_finite_optimizer(None, "p")
    check_finite_optimizer({"state": {0: {"exp_avg": torch.zeros(2), "step": torch.tensor(3.0)}}}, "p")
    with pytest.raises(DataError, match=r"optimizer\.state\.0\.exp_avg"):
        check_finite_optimizer({"state": {0: {"exp_avg": torch.tensor([float("inf")])}}}, "p")


class ShuffledScenes(FakeDataset):
    scenes = ["b", "a", "c"]


def _scene_named_parts(dataset):
    parts = fake_parts()
    parts["model"].tasks["cls"].label_names_attr = "scenes"
    parts["model"].tasks["cls"].options = {"num_classes": 3}
    parts["train_dataset"] = dataset
    parts["val_dataset"] = None
    return parts


def test_resuming_on_data_with_other_scene_names_is_refused(tmp_path):
    train(cfg_with(iters=2), tmp_path, **_scene_named_parts(FakeDataset(32, seed=1)))
    with pytest.raises(DataError, match=r"checkpoint was trained on other scenes .*label 0 is 'a' in the "
                                        r"checkpoint and 'b' in the data"):
        train(cfg_with(iters=4), tmp_path, resume=True, **_scene_named_parts(ShuffledScenes(32, seed=1)))
    train(cfg_with(iters=3), tmp_path, resume=True, **_scene_named_parts(FakeDataset(32, seed=1)))


# -- mtlkit ablate ----------------------------------------------------------------------------
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs", "synthetic")


def _ablate(out, *extra):
    from mtlkit import cli

    return cli.main(["ablate", CONFIGS, "--out", str(out), "--rows", "ssd", "--seeds", "0", "--iters", "1",
                     "--no-progress", "-o", "data.train.size=4", "-o", "data.test.size=2", *extra])


def test_ablate_refuses_an_out_in_use(tmp_path, capsys):
    out = tmp_path / "abl"
    holder = _hold(out)
    try:
        assert _ablate(out) == 2
    finally:
        holder.kill()
        holder.wait()
    assert "in use by another mtlkit process" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == [LOCK_NAME]  # no data rendered, no run folder


def test_ablate_never_replaces_a_users_table(tmp_path, capsys):
    (tmp_path / "ablation.md").write_text("my table")
    assert _ablate(tmp_path) == 2
    assert "already holds ablation.md" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["ablation.md"] and (tmp_path / "ablation.md").read_text() == "my table"


def test_ablate_data_dir_that_is_a_file_is_refused_before_anything(tmp_path, capsys):
    (tmp_path / "data.bin").write_text("x")
    assert _ablate(tmp_path / "abl", "--data-dir", str(tmp_path / "data.bin")) == 2
    assert "--data-dir" in (err := capsys.readouterr().err) and "is an existing file, expected a folder" in err
    assert not (tmp_path / "abl").exists()


def test_ablate_refuses_a_run_folder_holding_a_users_files_before_any_work(tmp_path, capsys):
    folder = tmp_path / "ssd" / "seed0"
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("mine")
    assert _ablate(tmp_path) == 2
    err = capsys.readouterr().err
    assert "thesis.tex, which mtlkit did not write; nothing was deleted" in err
    assert (folder / "thesis.tex").read_text() == "mine" and not (tmp_path / "data").exists()


def _run_in(folder, fingerprint):
    from types import SimpleNamespace

    return SimpleNamespace(run_dir=str(folder), fingerprint=fingerprint, name="rock/seed0",
                           row=SimpleNamespace(stem="rock"), seed=0, data_seed=0, config={"train": {}})


def test_a_changed_run_is_cleared_of_mtlkits_files_only_and_a_users_file_stops_it(tmp_path):
    from mtlkit.engine.ablation.runner import prepare_run_dir
    from mtlkit.errors import MtlkitError

    folder = tmp_path / "rock" / "seed0"
    folder.mkdir(parents=True)
    # a run folder written before the record: the runner's and the trainer's files, a tb/ folder,
    # a killed checkpoint write's temporary file, and one file of the user's
    (folder / "ablate_run.json").write_text(json.dumps({"fingerprint": "old"}))
    for name in ("log.txt", "last.pt", "metrics.jsonl", ".last.pt.0badcafe.123.abcdefgh.tmp"):
        (folder / name).write_text("x")
    (folder / "tb").mkdir()
    (folder / "tb" / "events").write_text("x")
    (folder / "notes.md").write_text("my notes")
    before = sorted(os.listdir(folder))
    with pytest.raises(MtlkitError, match=r"settings of run rock/seed0 changed .*holds notes\.md, which "
                                          r"mtlkit did not write; nothing was deleted"):
        prepare_run_dir(_run_in(folder, "new"), note=lambda m: None)
    assert sorted(os.listdir(folder)) == before and (folder / "notes.md").read_text() == "my notes"

    os.remove(folder / "notes.md")
    notes = []
    prepare_run_dir(_run_in(folder, "new"), note=notes.append)
    assert sorted(os.listdir(folder)) == [RECORD_NAME, "ablate_run.json"]
    assert json.loads((folder / "ablate_run.json").read_text())["fingerprint"] == "new"
    assert written(folder) == {"ablate_run.json": "ablate", "log.txt": "ablate", "result.json": "ablate"}
    assert notes and "training it again" in notes[0]

    # with the record: a user's file among the recorded ones stops the next clearing too
    (folder / "last.pt").write_text("x")
    (folder / "mine.png").write_text("x")
    with pytest.raises(MtlkitError, match=r"holds last\.pt \(and 1 more\)"):  # last.pt: nobody recorded it
        prepare_run_dir(_run_in(folder, "newer"), note=lambda m: None)
    assert (folder / "mine.png").exists() and (folder / "last.pt").exists()


def test_a_reused_run_folder_keeps_a_users_file(tmp_path):
    from mtlkit.engine.ablation.runner import prepare_run_dir

    folder = tmp_path / "rock" / "seed0"
    folder.mkdir(parents=True)
    (folder / "ablate_run.json").write_text(json.dumps({"fingerprint": "same"}))
    (folder / "notes.md").write_text("my notes")
    prepare_run_dir(_run_in(folder, "same"), note=lambda m: None)  # same settings: nothing cleared
    assert (folder / "notes.md").read_text() == "my notes"
    assert json.loads((folder / "ablate_run.json").read_text()) == {"fingerprint": "same"}


# -- mtlkit pretrain ----------------------------------------------------------------------------
def _pretrain(tmp_path, out, *extra):
    from mtlkit import cli

    return cli.main(["pretrain", "--data", str(tmp_path / "no-data-needed"), "--out", str(out),
                     "--run-dir", str(tmp_path / "run"), "--no-progress", *extra])


def test_pretrain_never_replaces_a_training_runs_checkpoint(tmp_path, capsys):
    from mtlkit.utils.outdir import claim

    run = tmp_path / "X"
    run.mkdir()
    claim(run, ["last.pt"], "train")
    (run / "last.pt").write_bytes(b"a training checkpoint")
    assert _pretrain(tmp_path, run / "last.pt") == 2
    err = capsys.readouterr().err
    assert "already holds last.pt, which `mtlkit pretrain` would replace: it was written by `mtlkit train`" in err
    assert (run / "last.pt").read_bytes() == b"a training checkpoint" and not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["folder", "device"])
def test_pretrain_out_that_is_not_a_file_is_refused(tmp_path, capsys, kind):
    out = tmp_path if kind == "folder" else "/dev/null"
    assert _pretrain(tmp_path, out) == 2
    err = capsys.readouterr().err
    assert f"--out {out} is a" in err and "expected the file of the backbone weights to write" in err


@pytest.mark.parametrize("flags, needle", [
    (["--image-size", "0", "0"], "pretrain.image_size: expected a number >= 8, got [0, 0]"),
    (["--crop-size", "0"], "pretrain.crop_size: expected a number >= 8"),
    (["--batch-size", "0"], "pretrain.batch_size: expected a number >= 1"),
    (["--lr", "nan"], "pretrain.lr: expected a number, got NaN"),
    (["--lr", "inf"], "pretrain.lr: expected a finite number, got inf"),
    (["--iters", "0"], "pretrain.iters: expected a number >= 1, got 0"),
])
def test_pretrain_options_are_checked_before_anything(tmp_path, capsys, flags, needle):
    assert _pretrain(tmp_path, tmp_path / "w.pt", *flags) == 2
    assert needle in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == []


# -- the trainer's evaluation note -------------------------------------------------------------
class _NoLabels:
    """A metric that saw no labelled sample (a COCO set without the task's modality)."""

    def update(self, prediction, batch):
        pass

    def merge(self, other):
        pass

    def compute(self):
        return {}


def test_the_eval_note_says_a_task_had_no_labelled_sample(tmp_path, capsys):
    parts = fake_parts()
    parts["model"].tasks["cls"].new_metric = _NoLabels
    train(cfg_with(iters=2), tmp_path / "run", **parts)
    notes = [line for line in capsys.readouterr().err.splitlines() if "eval @ 2" in line]
    assert len(notes) == 1 and "cls: no labelled sample" in notes[0] and "reg: mse=" in notes[0], notes
