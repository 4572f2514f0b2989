"""`mtlkit ablate`: splits rendered once for every run, runs in parallel
processes with the same numbers as one at a time, the table and its schema,
re-use only with identical settings, row names that are names."""

import json
import os

import pytest

from mtlkit import cli
from mtlkit.engine.ablation import report
from mtlkit.engine.ablation.plan import Row

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs", "synthetic")

TINY = [
    "data.train.size=8", "data.val.size=4", "data.test.size=6", "data.image_size=[64,96]",
    "data.train.image_size=[64,96]", "data.val.image_size=[64,96]", "data.test.image_size=[64,96]",
    "data.batch_size=4", "train.plots=false", "train.log_every=1",
    "model.backbone.weights=null",
]
RUN_KEYS = {"model", "seed", "data_seed", "AP", "AP50", "AP75", "iters", "train_seconds"}


def _args(out, *extra, rows="ssd,rock", seeds=("0", "1")):
    args = ["ablate", CONFIGS, "--out", str(out), "--rows", rows, "--iters", "2", "--no-progress",
            "--seeds", *seeds]
    for override in TINY:
        args += ["-o", override]
    return args + list(extra)


def _runs(out):
    return json.loads((out / "ablation.json").read_text())["runs"]


def test_ablation_renders_once_runs_in_parallel_and_reuses(tmp_path, monkeypatch):
    out = tmp_path / "jobs2"
    assert cli.main(_args(out, "--jobs", "2")) == 0
    # every split rendered once, into one folder read by every run
    folders = sorted(p.name for p in (out / "data").iterdir())
    assert [f.split("-")[0] for f in folders] == ["test", "train"], folders  # val: not read
    for folder in folders:
        assert (out / "data" / folder / "pack" / "count.json").is_file()
    roots = set()
    for row in ("ssd", "rock"):
        for seed in (0, 1):
            info = json.loads((out / row / f"seed{seed}" / "ablate_run.json").read_text())
            data = info["config"]["data"]
            roots |= {data[split]["root"] for split in ("train", "test")}
            assert "val" not in data
            assert info["config"]["eval"]["split"] == "test"
            assert info["config"]["train"]["num_threads"] == 1
    assert roots == {str(out / "data" / f) for f in folders}

    runs = _runs(out)
    assert [(r["model"], r["seed"]) for r in runs] == [("ssd", 0), ("ssd", 1), ("rock", 0), ("rock", 1)]
    for r in runs:
        assert RUN_KEYS <= set(r) and r["data_seed"] == 0 and r["iters"] == 2
        assert all(0.0 <= r[k] <= 1.0 for k in ("AP", "AP50", "AP75"))
    assert "depth/abs_rel" in runs[2] and not any("/" in k for k in runs[0])
    summary = json.loads((out / "ablation.json").read_text())["summary"]
    assert summary["rock"]["gains"]["vs_ssd"]["AP"]["n"] == 2
    table = (out / "ablation.md").read_text()
    assert "| SSD |" in table and "| + fusion (ROCK) |" in table and "[31.2]" in table
    assert (out / "ablation.png").stat().st_size > 0

    # --jobs 1 gives the same numbers
    single = tmp_path / "jobs1"
    assert cli.main(_args(single, "--jobs", "1")) == 0
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("train_seconds", "images_per_s")}
                        for r in rs]
    assert strip(_runs(single)) == strip(runs)

    # a re-run with the same settings trains nothing, changed settings retrain
    import subprocess

    started = []

    def no_process(*a, **k):
        started.append(a)
        raise RuntimeError("a run was started")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    assert cli.main(_args(out, "--jobs", "2")) == 0
    assert started == [] and strip(_runs(out)) == strip(runs)
    assert cli.main(_args(out, "--jobs", "2", "-o", "train.optimizer.lr=0.003")) == 1
    assert len(started) == 1


def test_split_rendered_once_for_all_rows(tmp_path, monkeypatch):
    """Rendering happens in the parent before any run starts, once per sample."""
    from mtlkit.data.synthetic import writer as synth_writer

    calls = []
    real = synth_writer.generate_sample

    def counting(seed, split, index, options):
        calls.append((seed, split, index))
        return real(seed, split, index, options)

    monkeypatch.setattr(synth_writer, "generate_sample", counting)
    assert cli.main(_args(tmp_path, "--jobs", "1", rows="ssd,flat_mtl,rock", seeds=("0",))) == 0
    assert sorted(calls) == sorted(set(calls))  # no sample twice
    assert len(calls) == 8 + 6  # train and test
    # the runs read the folders: no rendering in a run's process. The parent's count above cannot
    # see a child; what each child trained on is its own config.yaml (written by the trainer in the
    # child): every split it reads is one of the rendered, complete folders
    rendered = {str(p) for p in (tmp_path / "data").iterdir()}
    assert len(rendered) == 2
    for split_dir in rendered:
        meta = json.loads(open(os.path.join(split_dir, "dataset.json")).read())
        assert meta["complete"] is True
    import yaml

    for row in ("ssd", "flat_mtl", "rock"):
        config = yaml.safe_load((tmp_path / row / "seed0" / "config.yaml").read_text())
        read = {split: config["data"][split]["root"] for split in ("train", "test")}
        assert set(read.values()) == rendered, (row, read)


@pytest.mark.parametrize("rows", ["../x", "/abs/path", "a/b", ".."])
def test_row_names_are_not_paths(tmp_path, capsys, rows):
    assert cli.main(["ablate", CONFIGS, "--out", str(tmp_path / "o"), "--rows", rows]) == 2
    assert "is not a row name" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unknown_row_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["ablate", CONFIGS, "--out", str(tmp_path), "--rows", "ssd,rok"]) == 2
    err = capsys.readouterr().err
    assert "no config for row 'rok'" in err and "did you mean 'rock'" in err


def test_paired_gains_and_table():
    records = [
        {"model": "ssd", "seed": 0, "data_seed": 0, "AP": 0.10, "AP50": 0.20, "AP75": 0.1,
         "iters": 5, "train_seconds": 1.0},
        {"model": "ssd", "seed": 1, "data_seed": 0, "AP": 0.30, "AP50": 0.40, "AP75": 0.1,
         "iters": 5, "train_seconds": 1.0},
        {"model": "rock", "seed": 0, "data_seed": 0, "AP": 0.13, "AP50": 0.25, "AP75": 0.1,
         "iters": 5, "train_seconds": 1.0, "depth/abs_rel": 0.2},
        {"model": "rock", "seed": 1, "data_seed": 0, "AP": 0.29, "AP50": 0.46, "AP75": 0.1,
         "iters": 5, "train_seconds": 1.0, "depth/abs_rel": 0.3},
    ]
    rows = [Row("ssd", "SSD", "ssd.yaml"), Row("rock", "+ fusion (ROCK)", "rock.yaml")]
    summary = report.summarise(records, rows)
    assert summary["ssd"]["AP50"]["mean"] == pytest.approx(30.0)
    assert summary["ssd"]["AP50"]["std"] == pytest.approx(14.142, abs=1e-3)
    gain = summary["rock"]["gains"]["vs_ssd"]["AP"]
    # per-seed differences +3 and -1: mean +1, std 2.83, positive on one seed of two
    assert gain["mean"] == pytest.approx(1.0) and gain["std"] == pytest.approx(2.828, abs=1e-3)
    assert gain["positive"] == 1 and gain["n"] == 2
    assert summary["rock"]["auxiliary"]["depth/abs_rel"]["mean"] == pytest.approx(0.25)
    text = report.format_markdown(summary, {"title": "t"})
    assert "| SSD | 30.0 ± 14.1 [31.2] |" in text
    assert "+1.0 ± 2.8 (1/2)" in text


@pytest.mark.slow
def test_quick_end_to_end(tmp_path):
    """`mtlkit ablate --quick`: the default rows, files and their schema."""
    out = tmp_path / "quick"
    assert cli.main(["ablate", CONFIGS, "--out", str(out), "--quick", "--seeds", "0", "1",
                     "--no-progress"]) == 0
    data = json.loads((out / "ablation.json").read_text())
    assert set(data) == {"info", "runs", "summary"}
    assert [r["model"] for r in data["runs"]] == ["ssd"] * 2 + ["flat_mtl"] * 2 + \
        ["intensive_pooling"] * 2 + ["rock"] * 2
    for r in data["runs"]:
        assert RUN_KEYS <= set(r)
        assert all(0.0 <= r[k] <= 1.0 for k in ("AP", "AP50", "AP75"))
    assert list(data["summary"]) == ["ssd", "flat_mtl", "intensive_pooling", "rock"]
    for stem in ("flat_mtl", "intensive_pooling", "rock"):
        assert {"scene/top1", "depth/abs_rel", "normals/mean"} <= set(data["summary"][stem]["auxiliary"])
        assert set(data["summary"][stem]["gains"]["vs_ssd"]) == {"AP", "AP50", "AP75"}
    text = (out / "ablation.md").read_text()
    assert "Paired gains" in text and "--quick" in text
    for stem in ("ssd", "rock"):
        assert (out / stem / "seed1" / "metrics.jsonl").is_file()  # each run keeps its curves


def test_any_dataset_plugin_can_render_its_splits_once(tmp_path, fresh_registry):
    """The ablation asks a split's dataset plugin what to render once
    (mtlkit.data.render_once): a plugin other than the synthetic rooms is
    shared the same way, and --data-seed sets the option it names."""
    import torch
    import yaml

    from mtlkit import hookimpl
    from mtlkit.data.render_once import RenderOnce
    from mtlkit.engine.ablation import plan_runs, prepare_data, select_rows

    written = []

    class Generated(torch.utils.data.Dataset):
        defaults = {"seed": 0, "size": 4, "root": None}

        @classmethod
        def render_once(cls, options):
            if options.get("root") is not None:
                return None
            seed, size = options.get("seed", 0), options.get("size", 4)
            return RenderOnce(key=f"gen-{seed}", size=size, seed=seed,
                              write=lambda folder, n, workers, progress: written.append((folder, n)),
                              read_options=lambda folder: {"root": folder, "size": size})

        @classmethod
        def data_seed_option(cls, options):
            return "seed" if options.get("root") is None else None

    class Plugin:
        @hookimpl
        def mtlkit_register_datasets(self, registry):
            registry.add("generated", Generated)

    fresh_registry().register_plugin(Plugin(), "test-generated")
    folder = tmp_path / "rows"
    folder.mkdir()
    for stem, train_size in (("ssd", 4), ("rock", 8)):
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump({"data": {
            "train": {"name": "generated", "size": train_size},
            "val": {"name": "generated", "size": 2},
            "test": {"name": "generated", "size": 3, "label_subset": {"fraction": 0.5, "tasks": ["x"]}}}}))
    rows = select_rows(str(folder), ["ssd", "rock"])
    runs = plan_runs(rows, [0, 1], str(tmp_path / "out"), [], data_seed=5, iters=2)
    counts = prepare_data(runs, str(tmp_path / "data"), workers=1, progress=False)
    shared = str(tmp_path / "data" / "gen-5")
    assert written == [(shared, 8)] and counts == {shared: 8}  # one folder, rendered once, the largest size
    for run in runs:
        data = run.config["data"]
        assert "val" not in data and run.data_seed == 5 and run.fingerprint
        assert data["test"] == {"type": "generated", "root": shared, "size": 3,
                                "label_subset": {"fraction": 0.5, "tasks": ["x"]}}
        assert data["train"]["root"] == shared
        assert data["train"]["size"] == (4 if run.row.stem == "ssd" else 8)
        assert run.data_specs["train"]["seed"] == 5  # the option the plugin named
        assert run.config["train"]["iters"] == 2 and run.config["train"]["num_threads"] == 1
        assert run.config["eval"]["split"] == "test"
    assert len({r.fingerprint for r in runs}) == 4
