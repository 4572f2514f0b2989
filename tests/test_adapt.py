"""``mtlkit adapt`` (mtlkit.adaptation: steps, hooks, run): what moves, what
does not, what is refused, and that it resumes exactly."""

from __future__ import annotations

import json
import os

import pytest
import torch

from _engine_fakes import StopAt
from mtlkit.adaptation import PARAMS, adabn, adapt
from mtlkit.adaptation.hooks import StreamOnce, load_metric_state, metric_state
from mtlkit.adaptation.params import moving_modules
from mtlkit.adaptation.steps import mean_entropy
from mtlkit.adaptation.unlabelled import unlabelled
from mtlkit.cli import main as cli
from mtlkit.data import build_split, collate
from mtlkit.engine.checkpoint import load_checkpoint
from mtlkit.engine.evaluator import build_eval_model
from mtlkit.engine.runtime import run_config
from mtlkit.engine.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROCK = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")
SSD = os.path.join(ROOT, "configs", "synthetic", "ssd.yaml")
DUSK = os.path.join(ROOT, "configs", "synthetic", "targets", "dusk.yaml")
#: a small world: 8 images per split at 48x64, batches of 4, no pre-trained weights
SMALL = ["model.backbone.weights=null", "data.train.size=8", "data.val=null", "data.test.size=8",
         "data.train.image_size=[48, 64]", "data.test.image_size=[48, 64]", "data.image_size=[48, 64]",
         "data.batch_size=4", "data.num_workers=0", "train.num_threads=1", "train.tensorboard=false",
         "train.progress=false", "train.plots=false", "train.amp=false", "train.channels_last=false",
         "train.eval_at_end=false"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A trained (two steps) ROCK and SSD checkpoint of the small world."""
    root = tmp_path_factory.mktemp("sources")
    out = {}
    for name, config in (("rock", ROCK), ("ssd", SSD)):
        train(config, str(root / name), iters=2, overrides=SMALL)
        out[name] = str(root / name / "last.pt")
    out["data"] = str(root / "data")
    return out


def _adapt(sources, tmp_path, name="run", model="rock", **kwargs):
    kwargs.setdefault("target", DUSK)
    kwargs.setdefault("data_dir", sources["data"])
    return adapt(ROCK if model == "rock" else SSD, sources[model], kwargs.pop("target"), str(tmp_path / name),
                 overrides=SMALL, progress=False, log=lambda m: None, **kwargs)


def _state(path):
    return load_checkpoint(path)["model"]


def _source_state(sources, model="rock"):
    cfg = run_config(ROCK if model == "rock" else SSD, SMALL)
    net, _ = build_eval_model(cfg, sources[model], torch.device("cpu"))
    return net.state_dict()


@pytest.mark.parametrize("method", ["aux", "tent", "adabn"])
def test_zero_steps_change_nothing_bit_for_bit(sources, tmp_path, method):
    record = _adapt(sources, tmp_path, method=method, steps=0)
    before, after = _source_state(sources), _state(tmp_path / "run" / "last.pt")
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert record["after"] == record["before"] and record["iterations"] == 0
    assert {"AP", "AP50", "AP75", "depth/abs_rel", "normals/mean"} <= set(record["before"])


def _prefixes(model, params):
    """The state-dict keys that may move under ``params``."""
    names = {id(m): n for n, m in model.named_modules()}
    return tuple(names[id(m)] + "." for m in moving_modules(model, params))


@pytest.mark.parametrize("params", PARAMS)
def test_only_the_chosen_parameters_move(sources, tmp_path, params):
    _adapt(sources, tmp_path, params=params, steps=2, lr=1e-2)
    before, after = _source_state(sources), _state(tmp_path / "run" / "last.pt")
    cfg = run_config(ROCK, SMALL)
    model, _ = build_eval_model(cfg, sources["rock"], torch.device("cpu"))
    allowed = _prefixes(model, params)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "nothing moved"
    assert [k for k in changed if not k.startswith(allowed)] == []
    weights = {n for n, p in model.named_parameters() if n.startswith(allowed)}
    assert any(k in weights for k in changed), "no weight moved, only statistics"
    if params != "bn":
        # the moving modules' BatchNorm statistics are re-estimated; nothing else's
        assert any(k.endswith("running_mean") for k in changed)


def test_the_detection_head_never_moves(sources, tmp_path):
    _adapt(sources, tmp_path, params="all_but_head", steps=2, lr=1e-2)
    before, after = _source_state(sources), _state(tmp_path / "run" / "last.pt")
    head = [k for k in before if k.startswith("heads.")]
    assert head and all(torch.equal(before[k], after[k]) for k in head)


def test_annotations_never_reach_the_objective(sources):
    cfg = run_config(ROCK, SMALL)
    model, _ = build_eval_model(cfg, sources["rock"], torch.device("cpu"))
    batch = {"image": torch.rand(2, 3, 8, 8), "boxes": [torch.zeros(1, 4)] * 2, "labels": [torch.ones(1)] * 2,
             "scene": torch.zeros(2), "depth": torch.ones(2, 1, 8, 8), "depth_mask": torch.ones(2, 1, 8, 8),
             "normals": torch.ones(2, 3, 8, 8), "normals_mask": torch.ones(2, 1, 8, 8),
             "has": {"detection": torch.ones(2, dtype=torch.bool), "scene": torch.ones(2, dtype=torch.bool),
                     "depth": torch.ones(2, dtype=torch.bool), "normals": torch.ones(2, dtype=torch.bool)},
             "meta": [{}, {}]}
    out = unlabelled(batch, ["depth", "normals"], model)
    assert set(out) == {"image", "meta", "depth", "depth_mask", "normals", "normals_mask", "has"}
    assert set(out["has"]) == {"depth", "normals"}


def test_a_target_without_depth_is_refused_in_one_line(sources, tmp_path, capsys):
    no_depth = ("{train: {domain: dusk, seed: 10000, label_subset: {fraction: 0.0, tasks: [depth, normals]}}, "
                "test: {domain: dusk, seed: 10000}}")
    code = cli(["adapt", ROCK, "--checkpoint", sources["rock"], "--target", no_depth, "--out",
                str(tmp_path / "x"), "--data-dir", sources["data"], "--steps", "1", "--no-progress"]
               + [a for o in SMALL for a in ("-o", o)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "carries no depth and no normals" in err[0], err
    assert not os.path.exists(tmp_path / "x" / "last.pt")


@pytest.mark.parametrize("args, message", [
    (["--params", "everything"], "--params must be one of bn, encoder, last_stage, all_but_head"),
    (["--method", "ttt"], "--method must be one of aux, tent, adabn"),
    (["--mode", "batch"], "--mode must be one of offline, online"),
    (["--steps", "-1"], "--steps must be an integer >= 0"),
    (["--lr", "0"], "--lr must be a number > 0"),
    (["--batch", "0"], "--batch must be an integer >= 1"),
    (["--mode", "online", "--steps", "3"], "--steps does not apply to --mode online"),
    (["--method", "adabn", "--params", "bn"], "--params does not apply to --method adabn"),
    (["--target", "nowhere/dusk.yaml"], "--target nowhere/dusk.yaml: no such file"),
    (["--checkpoint", "nowhere.pt"], "checkpoint not found: nowhere.pt"),
])
def test_every_bad_option_is_one_line(sources, tmp_path, capsys, args, message):
    argv = ["adapt", ROCK, "--checkpoint", sources["rock"], "--target", DUSK, "--out", str(tmp_path / "x"),
            "--data-dir", sources["data"], "--no-progress"] + [a for o in SMALL for a in ("-o", o)]
    for flag, value in zip(args[::2], args[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_an_ssd_takes_only_the_baselines(sources, tmp_path, capsys):
    argv = ["adapt", SSD, "--checkpoint", sources["ssd"], "--target", DUSK, "--out", str(tmp_path / "x"),
            "--data-dir", sources["data"], "--no-progress", "--steps", "1"] + [a for o in SMALL for a in ("-o", o)]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no auxiliary task a sensor measures" in err[0] and "adabn or tent" in err[0]
    record = _adapt(sources, tmp_path, "tent", model="ssd", method="tent", steps=1)
    assert record["method"] == "tent" and record["params"] == "bn"
    with pytest.raises(Exception, match="no ROCK block"):
        _adapt(sources, tmp_path, "enc", model="ssd", method="tent", params="encoder", steps=1)


def test_adabn_in_the_loop_gives_the_population_statistics(sources, tmp_path):
    # one iteration of a batch holding every target train image: the exact AdaBN of that set
    _adapt(sources, tmp_path, method="adabn", steps=1, batch=8)
    cfg = run_config(os.path.join(tmp_path, "run", "config.yaml"))
    images = torch.stack([s["image"] for s in build_split(cfg, "train", train=False)])
    model, _ = build_eval_model(run_config(ROCK, SMALL), sources["rock"], torch.device("cpu"))
    adabn(model, [images])
    ours = _state(tmp_path / "run" / "last.pt")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(ours[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_online_streams_each_test_image_once_in_order():
    stream = StreamOnce(10, 4)
    assert stream.batches_per_epoch == 3
    assert stream.epoch_batches(0) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert stream.epoch_batches(0, start=2) == [[8, 9]]


def test_online_scores_every_test_image(sources, tmp_path):
    record = _adapt(sources, tmp_path, mode="online")
    assert record["mode"] == "online" and record["iterations"] == 2 and record["images"] == 8
    assert set(record["after"]) == set(record["before"])
    assert record["after"] != record["before"]


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_a_stopped_adaptation_resumes_exactly(sources, tmp_path, mode):
    steps = {"steps": 3} if mode == "offline" else {}
    whole = _adapt(sources, tmp_path, "whole", mode=mode, lr=1e-2, **steps)
    with pytest.raises(KeyboardInterrupt):
        _adapt(sources, tmp_path, "parts", mode=mode, lr=1e-2, hooks=[StopAt(1)], **steps)
    assert not os.path.exists(tmp_path / "parts" / "adapt.json")
    parts = _adapt(sources, tmp_path, "parts", mode=mode, lr=1e-2, resume=True, **steps)
    a, b = _state(tmp_path / "whole" / "last.pt"), _state(tmp_path / "parts" / "last.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert parts["after"] == whole["after"] and parts["before"] == whole["before"]


def test_metric_state_round_trips_through_a_checkpoint(tmp_path, sources):
    cfg = run_config(ROCK, SMALL)
    model, _ = build_eval_model(cfg, sources["rock"], torch.device("cpu"))
    test = build_split(cfg, "test", train=False)
    batch = collate([test[i] for i in range(4)])
    with torch.no_grad():
        preds = model.postprocess(model(batch["image"]), tuple(batch["image"].shape[-2:]))
    for name, task in model.tasks.items():
        metric = task.new_metric()
        metric.update(preds[name], batch)
        torch.save(metric_state(metric), tmp_path / "m.pt")
        fresh = task.new_metric()
        load_metric_state(fresh, torch.load(tmp_path / "m.pt", weights_only=True))
        assert json.dumps(fresh.compute(), default=str) == json.dumps(metric.compute(), default=str), name


def test_entropy_is_that_of_the_softmax():
    logits = torch.tensor([[[0.0, 0.0], [10.0, -10.0]]])
    assert mean_entropy(logits).item() == pytest.approx((torch.log(torch.tensor(2.0)).item() + 0.0) / 2, abs=1e-6)


def _row(model, seed, domain, tag, method, mode, ap50, depth=0.25, normals=32.0, objective=(1.0, 0.5)):
    return {"model": model, "seed": seed, "domain": domain, "tag": tag, "method": method, "mode": mode,
            "before": {"AP50": 0.10, "AP": 0.03, "depth/abs_rel": 0.25, "normals/mean": 32.0},
            "after": {"AP50": ap50, "AP": ap50 / 3, "depth/abs_rel": depth, "normals/mean": normals},
            "objective": {"first": {"depth": objective[0]}, "last": {"depth": objective[1]}}}


def test_the_adaptation_table_pairs_seeds_and_flags_the_ttt_failure():
    from mtlkit.research.adapt_table import table, ttt_check

    rows = []
    for s in (0, 1, 2):
        rows += [_row("rock", s, "source", "none", "adabn", "offline", 0.36),
                 _row("rock", s, "dusk", "none", "adabn", "offline", 0.10 + 0.01 * s),
                 _row("rock", s, "dusk", "adabn", "adabn", "offline", 0.27),
                 _row("rock", s, "dusk", "aux-offline", "aux", "offline", 0.30 + 0.01 * s, depth=0.2, normals=30.0),
                 _row("rock", s, "dusk", "aux-online", "aux", "online", 0.08, depth=0.2, normals=30.0)]
    text = table(rows)
    offline = next(line for line in text.splitlines() if "aux, offline" in line)
    # gain paired per seed: 0.30 + s/100 - (0.10 + s/100) = 20 points on every seed, no spread
    assert "+20.0 ± 0.0 (3/3)" in offline
    # the shift: 36 - (10, 11, 12) = 75 points lost in all, 60 won back: 80 %
    assert "| 80 % |" in offline
    assert "+4.0 ± 1.0 (3/3)" in offline  # vs AdaBN: 30, 31, 32 against 27
    checks = {line.split("|")[3].strip() + line.split("|")[4].strip(): line.split("|")[-2].strip()
              for line in ttt_check(rows).splitlines()[2:]}
    assert checks["aux, offline0"] == "no" and checks["aux, online0"] == "yes"


def test_adapt_never_writes_over_a_training_run(sources, tmp_path, capsys):
    run = os.path.dirname(sources["rock"])  # a training run's folder: its files are train's
    before = sorted(os.listdir(run))
    argv = ["adapt", ROCK, "--checkpoint", sources["rock"], "--target", DUSK, "--out", run,
            "--data-dir", sources["data"], "--steps", "1", "--no-progress"] + [a for o in SMALL for a in ("-o", o)]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written by `mtlkit train`" in err[0], err
    assert sorted(os.listdir(run)) == before


def test_the_table_takes_the_training_seed_from_the_job_not_the_records_order_seed(tmp_path):
    from mtlkit.research.adapt_table import collect

    folder = tmp_path / "final" / "rock" / "seed2" / "dusk" / "none"
    folder.mkdir(parents=True)
    (folder / "adapt.json").write_text(json.dumps({"seed": 0, "method": "adabn", "mode": "offline",
                                                    "before": {}, "after": {}}))
    (row,) = collect(str(tmp_path), "final")
    assert row["seed"] == 2 and row["order_seed"] == 0 and row["tag"] == "none"


def test_a_target_with_a_sensor_adapts_on_its_measurement_not_the_clean_maps(sources):
    cfg = run_config(ROCK, SMALL)
    model, _ = build_eval_model(cfg, sources["rock"], torch.device("cpu"))
    ones = torch.ones(2, 1, 8, 8)
    batch = {"image": torch.rand(2, 3, 8, 8), "depth": ones * 2.0, "depth_mask": ones.bool(),
             "normals": torch.ones(2, 3, 8, 8), "normals_mask": ones.bool(),
             "sensor_depth": ones * 3.0, "sensor_depth_mask": ones.bool(),
             "sensor_normals": torch.zeros(2, 3, 8, 8), "sensor_normals_mask": ones.bool(),
             "has": {"depth": torch.ones(2, dtype=torch.bool), "normals": torch.ones(2, dtype=torch.bool),
                     "sensor_depth": torch.tensor([True, False]), "sensor_normals": torch.tensor([True, False])},
             "meta": [{}, {}]}
    out = unlabelled(batch, ["depth", "normals"], model)
    assert torch.equal(out["depth"], ones * 3.0) and torch.equal(out["normals"], torch.zeros(2, 3, 8, 8))
    assert out["has"]["depth"].tolist() == [True, False]
    assert not any(k.startswith("sensor_") for k in out)
