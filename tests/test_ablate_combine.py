"""Several ablations (one per data seed) pooled into one table
(mtlkit/engine/ablation/combine.py): means over every run, gains paired by
(training seed, data seed), the rows without a sensor, duplicates refused."""

import json
import math

import pytest

from mtlkit.engine.ablation.combine import combine, main
from mtlkit.errors import DataError


def _record(model, seed, data_seed, ap, without=None):
    record = {"model": model, "seed": seed, "data_seed": data_seed, "AP": ap, "AP50": 2 * ap, "AP75": ap / 2,
              "iters": 600, "train_seconds": 100.0 + seed}
    if model != "ssd":
        record.update({"depth/abs_rel": 0.2, "depth/delta1": 0.6, "scene/top1": 0.7})
    if without is not None:
        record["without_sensor"] = {"AP": without, "AP50": 2 * without, "AP75": without / 2}
    return record


def _write(folder, data_seed, runs):
    folder.mkdir()
    summary = {"ssd": {"label": "SSD"}, "rock_measured": {"label": "ROCK, measured D + N"},
               "rock_measured/without_sensor": {"label": "ROCK, measured D + N, no sensor"}}
    info = {"title": "synthetic", "data seed": str(data_seed), "seeds": "0 1", "iterations": "600",
            "machine": "x86_64, 2 cores", "wall (this invocation)": "100 s"}
    (folder / "ablation.json").write_text(json.dumps({"info": info, "runs": runs, "summary": summary}))
    return str(folder)


def test_pooled_means_and_gains_paired_by_training_and_data_seed(tmp_path):
    # AP of SSD 0.10 + 0.01 * data seed; rock_measured a gain of 0.01 * (1 + seed + data seed)
    folders = []
    for d in (0, 1):
        runs = []
        for s in (0, 1):
            runs.append(_record("ssd", s, d, 0.10 + 0.01 * d))
            runs.append(_record("rock_measured", s, d, 0.10 + 0.01 * d + 0.01 * (1 + s + d),
                                without=0.10 + 0.01 * d - 0.005))
        folders.append(_write(tmp_path / f"ds{d}", d, runs))
    text = combine(folders, str(tmp_path / "all"), versus=[("rock_measured", "rock_measured/without_sensor")])
    data = json.loads((tmp_path / "all" / "ablation.json").read_text())
    assert len(data["runs"]) == 8
    summary = data["summary"]
    assert list(summary) == ["ssd", "rock_measured", "rock_measured/without_sensor"]
    assert math.isclose(summary["ssd"]["AP"]["mean"], 10.5) and summary["ssd"]["AP"]["n"] == 4
    gain = summary["rock_measured"]["gains"]["vs_ssd"]["AP"]
    # pairs (s, d): gains 1, 2, 2, 3 points, paired within each data seed (not across them)
    assert math.isclose(gain["mean"], 2.0) and gain["positive"] == 4 and gain["n"] == 4
    assert math.isclose(summary["rock_measured/without_sensor"]["gains"]["vs_ssd"]["AP"]["mean"], -0.5)
    # every pair's gain and the smallest, and the figure per data seed
    assert "| ROCK, measured D + N | +1.0 | +2.0 | +2.0 | +3.0 | +1.0 |" in text
    assert "| SSD | 10.0 ± 0.0 | 11.0 ± 0.0 |" in text
    # one row over another, paired: with the sensor over without it, 1.5 .. 3.5 points
    line = next(l for l in text.splitlines() if l.startswith("| ROCK, measured D + N | ROCK, measured D + N, no"))
    assert line.startswith("| ROCK, measured D + N | ROCK, measured D + N, no sensor | +5.0 ± 1.6 (4/4) |")
    assert line.endswith("| +2.5 ± 0.8 (4/4) | +1.5 |")
    assert (tmp_path / "all" / "ablation.md").read_text() == text
    # the auxiliary columns: each task's headline metrics once, then the training time
    header = next(l for l in text.splitlines() if l.startswith("| Model | depth"))
    assert header == "| Model | depth abs-rel | depth δ<1.25 % | scene top-1 % | train s / run |"


def test_the_same_run_twice_and_missing_files_are_one_clear_line(tmp_path):
    runs = [_record("ssd", 0, 0, 0.1)]
    a, b = _write(tmp_path / "a", 0, runs), _write(tmp_path / "b", 0, runs)
    with pytest.raises(DataError, match="run ssd seed 0 data seed 0 is also in"):
        combine([a, b], str(tmp_path / "out"))
    with pytest.raises(DataError, match="ablation.json: not found"):
        combine([str(tmp_path)], str(tmp_path / "out"))
    with pytest.raises(DataError, match="is one of the folders combined"):
        main([a, "--out", a])
    with pytest.raises(DataError, match="--versus ssd: expected ROW:REFERENCE"):
        main([a, "--out", str(tmp_path / "out"), "--versus", "ssd"])
    with pytest.raises(DataError, match="--versus: no row 'rock'"):
        main([a, "--out", str(tmp_path / "out"), "--versus", "ssd:rock"])
