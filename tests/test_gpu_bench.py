"""benchmarks/gpu (the GPU check of issue 18): its pieces here, and the whole
script dry-run on the CPU (slow), so that a device session never finds it
broken with the device clock running."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_DIR = os.path.join(ROOT, "benchmarks", "gpu")
sys.path.insert(0, GPU_DIR)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import baselines  # noqa: E402
import bench  # noqa: E402
import common  # noqa: E402
import profiles  # noqa: E402
import report  # noqa: E402
from _ops_data import random_gt, ssd300_priors  # noqa: E402

import mtlkit.ops as ops  # noqa: E402


def test_profiles_name_every_stage_and_fit_the_lease():
    for p in profiles.PROFILES.values():
        assert set(p.stage_limits) == set(profiles.STAGES)
        assert p.min_stage_seconds < min(p.stage_limits.values())
    # the default run (build ~1-2 min + stages) must fit the issue's ~8 minutes
    assert profiles.FULL.budget <= 7 * 60 and profiles.QUICK.budget < profiles.FULL.budget
    assert profiles.FULL.image_size == (480, 640) and profiles.FULL.batch == 16
    assert profiles.FULL.big_n == 100_000 and profiles.DRY.device == "cpu"


def test_results_are_saved_after_every_row(tmp_path):
    path = tmp_path / "stage.json"
    res = common.Results("demo", str(path))
    res.add("first", "1 img/s", "ref", True, images_per_s=1.0)
    saved = json.loads(path.read_text())
    assert [r["item"] for r in saved["rows"]] == ["first"]
    try:
        raise ValueError("broken\nlast line")
    except ValueError as exc:
        res.error("second", exc)
    saved = json.loads(path.read_text())
    assert saved["rows"][1]["ok"] is False and "last line" in saved["rows"][1]["result"]


def test_sync_count_is_none_without_cuda():
    assert common.count_syncs(lambda: torch.ones(2).sum().item(), torch.device("cpu")) is None


def test_sync_census_counts_the_calls_that_would_wait_for_a_gpu():
    x = torch.arange(6.0)

    def step():
        bool(x.sum() > 0)  # 1
        x.max().item()  # 2
        x[x > 2].sum()  # 3: boolean-mask index
        x.nonzero()  # 4
        (x * 2).sum()  # not a sync
        x[1:3].tolist()  # 5

    census = common.census_syncs(step)
    assert census["count"] == 5
    assert all("test_gpu_bench.py" in where for where in census["where"])


def test_time_calls_reports_median_of_the_reps():
    calls = []
    stats = common.time_calls(lambda: calls.append(1), torch.device("cpu"), warmup=2, reps=3)
    assert len(calls) == 5 and stats["reps"] == 3 and stats["median"] >= 0


def _row(stage, item, ok=True):
    return {"stage": stage, "item": item, "result": "r", "reference": "", "ok": ok, "data": {}}


def test_table_folds_exactness_cases_and_keeps_failures():
    rows = [_row("env", "GPU"), _row("ops_exact", "ops backend"),
            _row("ops_exact", "nms n=1 iou>0.5"), _row("ops_exact", "nms n=2 iou>0.5", ok=False),
            _row("ops_exact", "ssd_match random"), _row("ops_exact", "ops_exact summary", ok=False),
            _row("train", "train ssd fp32")]
    folded = report.fold_exact(rows)
    items = [r["item"] for r in folded]
    assert items == ["GPU", "ops backend", "nms (2 cases)", "nms n=2 iou>0.5", "ssd_match (1 cases)",
                     "ops_exact summary", "train ssd fp32"]
    assert folded[2]["result"] == "1 of 2 identical" and folded[2]["ok"] is False
    table = report.render_table({"mode": "dry", "rows": rows, "timings": {"env": {"seconds": 1, "status": "ok"}}})
    assert table.count("| ops_exact |") == 5 and "Failed rows: 2" in table
    full = report.render_table({"mode": "dry", "rows": rows}, full=True)
    assert "nms n=1 iou>0.5" in full


def test_batched_match_baseline_follows_the_ssd_match_rule():
    priors = ssd300_priors()
    gt, labels = random_gt(6, seed=3, max_objects=15)
    gt[2], labels[2] = gt[2][:0], labels[2][:0]
    box = torch.tensor([[0.2, 0.2, 0.45, 0.5]])
    gt.append(torch.cat([box, box, box * 0.999]))  # duplicates: lowest index, then the later GT wins
    labels.append(torch.tensor([1, 2, 3]))
    loc, lab = baselines.batched_match(gt, labels, priors, 0.5)
    ref_loc, ref_lab = ops.ssd_match(gt, labels, priors, 0.5, backend="torch")
    assert torch.equal(lab, ref_lab)
    torch.testing.assert_close(loc, ref_loc, rtol=1e-5, atol=1e-5)


def test_per_image_postprocess_baseline_equals_the_op():
    from _ops_data import random_head

    priors = ssd300_priors()
    loc, conf = random_head(2, priors, classes=6, seed=4)
    ours = ops.ssd_postprocess(loc, conf, priors, 0.05, 0.45, 50, 30, backend="torch")
    theirs = baselines.per_image_postprocess(
        loc, conf, priors, 0.05, 0.45, 50, 30, nms=lambda b, s, c, t: ops.batched_nms(b, s, c, t, backend="torch"),
        decode=lambda l, p: ops.ssd_decode(l, p, backend="torch"))
    assert baselines.same_detections(ours, theirs)
    theirs[0] = (theirs[0][0], theirs[0][1], theirs[0][2] + 1)
    assert not baselines.same_detections(ours, theirs)


def test_ablation_overrides_keep_the_rows_apart():
    import ablation

    from mtlkit.config import load_config

    overrides = ablation.overrides(profiles.DRY)
    ssd = load_config(os.path.join(ROOT, "configs", "nyuv2", "ssd.yaml"), overrides)
    rock = load_config(os.path.join(ROOT, "configs", "nyuv2", "rock.yaml"), overrides)
    assert set(ssd["model"]["tasks"]) == {"detection"}  # no override adds a task to the SSD row
    assert set(rock["model"]["tasks"]) == {"detection", "scene", "depth", "normals"}
    assert ssd["data"]["train"]["type"] == "synthetic" and ssd["data"]["image_size"] == [96, 128]
    assert rock["model"]["tasks"]["detection"]["num_classes"] == 11


def test_driver_refuses_unknown_stages_and_bad_budgets(capsys):
    assert bench.main(["--stages", "env,warp"]) == 2
    assert "unknown stage(s) warp" in capsys.readouterr().err
    assert bench.main(["--budget", "0"]) == 2


def test_driver_skips_a_stage_without_budget_and_kills_one_past_its_limit(tmp_path, monkeypatch):
    from dataclasses import replace

    # 1 s: the stage's process alone imports torch, then starts pytest, which imports it again
    limits = dict(profiles.DRY.stage_limits, pytest=1)
    profile = replace(profiles.DRY, stage_limits=limits, min_stage_seconds=0.5)
    monkeypatch.setitem(profiles.PROFILES, "dry", profile)
    args = bench.parse(["--mode", "dry", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                        "--budget", "100"])
    driver = bench.Driver(args, profile, ["pytest", "train"])
    driver._stage("pytest")
    driver.deadline = 0  # nothing left for the next stage
    driver._stage("train")
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    results = {r["stage"]: r for r in payload["rows"]}
    assert results["pytest"]["ok"] is False and "timed out" in results["pytest"]["result"]
    assert results["train"]["result"].startswith("skipped: the time budget is spent")
    assert payload["timings"]["pytest"]["status"] == "timed out"
    assert (tmp_path / "out" / "table.md").read_text().count("| pytest |") == 1


def test_run_sh_refuses_bad_arguments(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), MTLKIT_GPU_WORK=str(tmp_path / "work"),
               PYTHON=sys.executable)
    script = os.path.join(GPU_DIR, "run.sh")
    for args, message in ((["--bogus"], "unknown argument '--bogus'"), (["--stages"], "--stages needs a value"),
                          (["--dry-run", "--total", "soon"], "--total must be a whole number")):
        proc = subprocess.run(["bash", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)


def _run_script(tmp_path, *args):
    env = dict(os.environ, OUT=str(tmp_path / "out"), MTLKIT_GPU_WORK=str(tmp_path / "work"),
               PYTHON=sys.executable)
    proc = subprocess.run(["bash", os.path.join(GPU_DIR, "run.sh"), "--dry-run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    return proc, payload


@pytest.mark.slow
@pytest.mark.skipif(ops.backend() != "native", reason="the check compares the native ops (MTLKIT_OPS=torch)")
def test_dry_run_of_the_whole_script(tmp_path):
    """Every stage of the default run, on the CPU with tiny sizes: all rows pass."""
    proc, payload = _run_script(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert payload["state"] == "done"
    stages = {r["stage"] for r in payload["rows"]}
    assert stages == {"env", "pytest", "ops_exact", "ops_speed", "train", "infer", "gradients"}
    assert not [r for r in payload["rows"] if r["ok"] is False]
    items = {r["item"]: r for r in payload["rows"]}
    assert items["ops_exact summary"]["ok"] is True
    for name in ("ssd", "rock"):
        for precision in ("bf16_cl", "fp32"):
            assert items[f"train {name} {precision}"]["data"]["images_per_s"] > 0
    assert "rock-pytorch schedule (30k iters x batch 8), projected" in items
    assert "infer rock bf16_cl batch 2" in items
    table = (tmp_path / "out" / "table.md").read_text()
    assert table.startswith("## mtlkit GPU check: mode dry") and "Failed rows: 0" in table
    assert "| train | train rock fp32 |" in proc.stdout  # the printed table
    assert (tmp_path / "out" / "run.log").exists()


@pytest.mark.slow
def test_dry_run_of_the_ablation_stage(tmp_path):
    """The ablation stage's `mtlkit ablate` command on the paper's configs works end to end."""
    proc, payload = _run_script(tmp_path, "--stages", "ablation")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    items = {r["item"]: r for r in payload["rows"]}
    assert "ablation wall time" in items
    assert {"ablation ssd", "ablation flat_mtl", "ablation intensive_pooling", "ablation rock"} <= set(items)


@pytest.mark.slow
def test_dry_run_of_the_gradient_step_checks(tmp_path):
    """benchmarks/gpu/gradient_step.py on the CPU (its --device cpu dry run): every check passes and
    its JSON, in a folder it creates, has a row per check."""
    out = tmp_path / "not-yet" / "there"
    proc = subprocess.run([sys.executable, os.path.join(GPU_DIR, "gradient_step.py"), "--device", "cpu",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((out / "gradient_step.json").read_text())
    assert rows["device"] == "cpu"
    rows = rows["results"]
    assert len(rows) >= 20 and proc.stdout.rstrip().endswith(f"{len(rows)}/{len(rows)} passed")
