"""`mtlkit ablate`: trains each row per seed, writes the table, and resumes
without redoing finished runs."""

import json
import os

import pytest

from mtlkit import cli
from mtlkit.engine.commands import ablate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = [
    "data.train.size=8", "data.val.size=4", "data.image_size=[64,96]",
    "data.train.image_size=[64,96]", "data.val.image_size=[64,96]", "data.batch_size=4",
    "data.num_workers=0", "train.progress=false", "train.plots=false",
]


def _args(out, *extra):
    args = ["ablate", os.path.join(REPO, "configs", "synthetic"), "--out", str(out),
            "--rows", "ssd,rock", "--iters", "2", "--seeds", "0", "1"]
    for override in TINY:
        args += ["-o", override]
    return args + list(extra)


def test_ablation_table_and_resume(tmp_path, capsys, monkeypatch):
    assert cli.main(_args(tmp_path)) == 0
    table = (tmp_path / "ablation.md").read_text()
    lines = table.strip().splitlines()
    assert lines[0] == "| Model | mAP@0.5 | mAP@0.75 | mAP@[.5:.95] |"
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["SSD", "+ fusion (ROCK)"]
    assert "±" in lines[2]  # two seeds: mean ± std
    data = json.loads((tmp_path / "ablation.json").read_text())
    for stem in ("ssd", "rock"):
        runs = data["runs"][stem]
        assert [r["seed"] for r in runs] == [0, 1]
        ap50 = [100 * r["metrics"]["detection"]["AP50"] for r in runs]
        assert data["rows"][stem]["detection"]["AP50"]["mean"] == pytest.approx(sum(ap50) / 2)
        for seed in (0, 1):
            assert (tmp_path / stem / f"seed{seed}" / "last.pt").is_file()
    # ROCK rows carry the auxiliary figures, SSD rows none
    assert "depth/abs_rel" in data["rows"]["rock"]["auxiliary"]
    assert data["rows"]["ssd"]["auxiliary"] == {}
    assert (tmp_path / "ablation.png").stat().st_size > 0
    # different seeds train different models
    assert data["runs"]["rock"][0]["metrics"] != data["runs"]["rock"][1]["metrics"]

    # a second run only reads the cached results: training would fail here
    def no_training(*a, **k):
        raise AssertionError("finished runs must not be trained again")

    import mtlkit.engine

    monkeypatch.setattr(mtlkit.engine, "train", no_training)
    monkeypatch.setattr(mtlkit.engine, "evaluate", no_training)
    assert cli.main(_args(tmp_path)) == 0
    assert (tmp_path / "ablation.md").read_text() == table


def test_unknown_row_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["ablate", os.path.join(REPO, "configs", "synthetic"), "--out", str(tmp_path),
                     "--rows", "ssd,rok"]) == 2
    assert "ablation row 'rok': config not found" in capsys.readouterr().err


def test_summary_mean_and_std():
    results = {"a": [{"seed": 0, "metrics": {"detection": {"AP": 0.1, "AP50": 0.2, "AP75": 0.1}}},
                     {"seed": 1, "metrics": {"detection": {"AP": 0.3, "AP50": 0.4, "AP75": 0.1}}}]}
    summary = ablate.summarise(results, [("a", "A", "a.yaml")])
    fig = summary["a"]["detection"]["AP50"]
    assert fig["mean"] == pytest.approx(30.0) and fig["std"] == pytest.approx(14.142, abs=1e-3)
    assert "| A | 30.0 ± 14.1 |" in ablate.format_table(summary, 2)
