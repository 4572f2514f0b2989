"""mtlkit.adaptation: AdaBN, target-domain overlays, and the shift measurement."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from mtlkit.adaptation import adabn, batchnorm_layers, load_target, target_data
from mtlkit.research.shift import main as shift_main, table
from mtlkit.adaptation.targets import with_data_seed
from mtlkit.cli import main as cli
from mtlkit.config import load_config
from mtlkit.data import build_dataset
from mtlkit.data.synthetic import SyntheticRooms
from mtlkit.errors import ConfigError, DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = os.path.join(ROOT, "configs", "synthetic", "targets")
ROCK = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5))


def test_adabn_gives_the_population_statistics_of_the_target():
    net = _net()
    images = torch.randn(12, 3, 6, 7) * 3 + 2
    # oracle: torch's own train-mode BN over all images in one batch (momentum 1:
    # the running statistics become that batch's; the variance unbiased)
    oracle = copy.deepcopy(net).train()
    for bn in batchnorm_layers(oracle):
        bn.momentum = 1.0
    with torch.no_grad():
        oracle(images)
    one = copy.deepcopy(net)
    assert adabn(one, [images]) == 12
    n = 12 * 6 * 7
    for ours, ref in zip(batchnorm_layers(one), batchnorm_layers(oracle)):
        torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.running_var, ref.running_var * (n - 1) / n, rtol=1e-5, atol=1e-5)
    # in batches: the first layer's input does not depend on any BN, so its
    # statistics are exactly the population's whatever the batching
    split = copy.deepcopy(net)
    assert adabn(split, images.split(5)) == 12
    first, first_one = batchnorm_layers(split)[0], batchnorm_layers(one)[0]
    torch.testing.assert_close(first.running_mean, first_one.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first.running_var, first_one.running_var, rtol=1e-5, atol=1e-6)


def test_adabn_changes_only_batchnorm_statistics():
    net = _net()
    before = copy.deepcopy(net.state_dict())
    net.train()
    adabn(net, [torch.randn(4, 3, 5, 5) + 1.0])
    assert not net.training and not any(m.training for m in net.modules())
    moments = {k for k in before if k.endswith(("running_mean", "running_var"))}
    for key, value in net.state_dict().items():
        if key in moments:
            assert not torch.equal(value, before[key]), key
        else:
            assert torch.equal(value, before[key]), key  # weights, and num_batches_tracked
    assert [bn.momentum for bn in batchnorm_layers(net)] == [0.1, 0.1]
    with pytest.raises(DataError, match="no target images"):
        adabn(net, [])


def test_adabn_reaches_every_batchnorm_of_rock_frozen_and_folded_ones_too():
    from mtlkit import build_model

    cfg = load_config(ROCK, ["model.backbone.weights=null"])
    model = build_model(cfg).eval()
    layers = batchnorm_layers(model)
    frozen = [bn for bn in layers if not bn.weight.requires_grad]
    assert frozen and len(layers) > len(frozen)  # the frozen stages' BNs are there
    stats = [bn.running_mean.clone() for bn in layers]
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        before = model(x)["detection"]["conf"]
    adabn(model, [torch.rand(4, 3, 64, 96) * 0.5 + 0.4])
    assert all(not torch.equal(s, bn.running_mean) for s, bn in zip(stats, layers))
    with torch.no_grad():  # the folded inference path (no_grad, eval) ...
        folded = model(x)["detection"]["conf"]
    unfolded = model(x)["detection"]["conf"].detach()  # ... reads the new statistics like the plain one
    torch.testing.assert_close(folded, unfolded, rtol=1e-4, atol=1e-4)
    assert (folded - before).abs().max() > 1e-3


def test_target_files_overlay_a_synthetic_config():
    source = load_config(ROCK)["data"]
    seeds = set()
    for name in ("dusk", "showroom"):
        overlay = load_target(os.path.join(TARGETS, f"{name}.yaml"))
        for data_seed in (0, 1, 2, 1000):
            data = target_data(with_data_seed(source, data_seed), overlay, data_seed)
            for split in ("train", "val", "test"):
                spec = data[split]
                assert spec["domain"] == name
                assert spec["size"] == source[split]["size"] and spec["image_size"] == source[split]["image_size"]
                assert spec["seed"] == overlay[split]["seed"] + data_seed
                seeds.add(spec["seed"])
            dataset = build_dataset(dict(data["val"], size=1))
            assert dataset.options.domain == name
    assert len(seeds) == 8 and not seeds & {0, 1, 2, 1000}  # never the source's rooms
    # merged as a _base_ on top of a model config: the model trained and scored on the target
    merged = load_config(ROCK, [])
    from mtlkit.config import merge

    both = merge(merged, {"data": load_target(os.path.join(TARGETS, "dusk.yaml"))})
    assert both["data"]["test"]["domain"] == "dusk" and both["data"]["test"]["type"] == "synthetic"


def test_target_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_target(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {}\n")
    with pytest.raises(ConfigError, match="expected a data section"):
        load_target(str(bad))
    bad.write_text("data: {test: dusk}\n")
    with pytest.raises(ConfigError, match="data.test must be a mapping"):
        load_target(str(bad))
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        target_data({"test": {"type": "synthetic"}}, {"test": {"seed": -1}})
    with pytest.raises(ConfigError, match="no data.val to overlay"):
        target_data({"test": {"type": "synthetic"}}, {"val": {"domain": "dusk"}})


def test_table_pairs_seeds():
    rows = []
    for seed, (src, tgt, ada, ref) in enumerate([(0.40, 0.30, 0.35, 0.36), (0.42, 0.34, 0.33, 0.36)]):
        for domain, method, ap50 in (("source", "none", src), ("dusk", "none", tgt), ("dusk", "adabn", ada),
                                     ("dusk/source-look", "none", ref)):
            rows.append({"model": "rock", "seed": seed, "domain": domain, "method": method, "AP50": ap50,
                         "AP": ap50 / 2})
    text = table(rows)
    dusk_none = next(line for line in text.splitlines() if "| dusk | none |" in line)
    assert "| 32.0 ± 2.8 |" in dusk_none and "| -9.0 ± 1.4 (0/2) |" in dusk_none
    assert "| -4.0 ± 2.8 (0/2) |" in dusk_none  # vs the same rooms in the source look: -6, -2
    dusk_ada = next(line for line in text.splitlines() if "| dusk | adabn |" in line)
    assert "| +2.0 ± 4.2 (1/2) |" in dusk_ada  # paired over no adaptation: +5, -1


TINY = """\
_base_: [{base}]
data:
  train: {{type: synthetic, split: train, size: 4, seed: 0}}
  val: {{type: synthetic, split: val, size: 3, seed: 0}}
  test: {{type: synthetic, split: test, size: 3, seed: 0}}
  image_size: [64, 96]
  batch_size: 2
train: {{iters: 2, log_every: 1, progress: false}}
eval: {{batch_size: 2}}
"""


def test_shift_scores_a_run_on_source_and_targets(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(base=ROCK))
    run = tmp_path / "run"
    assert cli(["train", str(config), "--out", str(run)]) == 0
    out = tmp_path / "shift"
    args = [str(run), "--data-config", str(config), "--data-seed", "3", "--split", "test", "--adabn", "--rooms",
            "--target", os.path.join(TARGETS, "dusk.yaml"), "--out", str(out)]
    assert shift_main(args) == 0
    result = json.loads((out / "shift.json").read_text())
    got = {(r["domain"], r["method"]) for r in result["rows"]}
    assert got == {(d, m) for d in ("source", "dusk") for m in ("none", "adabn")} | {("dusk/source-look", "none")}
    for r in result["rows"]:
        assert 0.0 <= r["AP50"] <= 1.0 and any(k.startswith("depth/") for k in r)
        assert r["data_seed"] == (3 if r["domain"] == "source" else 10003)
        assert r["adapt_images"] == (4 if r["method"] == "adabn" else 0)
    # dusk and its source-look reference: the same rooms (geometry) in two looks
    folders = sorted((out / "data").glob("test-seed10003-*"))
    assert len(folders) == 2
    a, b = (SyntheticRooms(root=str(f)) for f in folders)
    np.testing.assert_array_equal(a.arrays(0)["depth"], b.arrays(0)["depth"])
    assert not np.array_equal(a.arrays(0)["image"], b.arrays(0)["image"])
    assert "| dusk | none |" in (out / "shift.md").read_text()
    # a rerun re-uses every stored result
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "results").iterdir()}
    capsys.readouterr()
    assert shift_main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "results").iterdir()} == mtimes
    assert json.loads((out / "shift.json").read_text())["rows"] == result["rows"]
    assert shift_main([str(tmp_path), "--data-config", str(config), "--out", str(out)]) == 2
    assert "not a training run" in capsys.readouterr().err
