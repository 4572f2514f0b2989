"""The example third-party plugin (examples/mtlkit-contours) registers its task
through its entry point and a model using it trains a step.

The fast test installs the package the way pip lays it out (its source folder
on sys.path plus a dist-info carrying the entry points read from its own
pyproject.toml); the slow one really runs pip.
"""

import os
import subprocess
import sys
import tomllib

import pytest
import torch

import mtlkit.registry as registry_module
from mtlkit.config import load_config, validate_config
from mtlkit.models.compose import build_model

from conftest import write_distribution


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "mtlkit-contours")


def _project():
    with open(os.path.join(EXAMPLE, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]


@pytest.fixture
def installed_example(tmp_path, monkeypatch):
    project = _project()
    write_distribution(tmp_path, project["name"], project["version"],
                       project["entry-points"]["mtlkit"], {})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(EXAMPLE)
    registry_module.reset_registry()
    yield registry_module.get_registry()
    registry_module.reset_registry()
    for name in [m for m in sys.modules if m.split(".")[0] == "mtlkit_contours"]:
        del sys.modules[name]


def test_entry_point_registers_centres(installed_example):
    entry = installed_example.entry("task", "centres")
    assert entry.origin.distribution == "mtlkit-contours"
    assert entry.obj.__module__ == "mtlkit_contours.task"


def test_model_with_centres_trains_a_step(installed_example):
    cfg = load_config(os.path.join(ROOT, "configs", "synthetic", "rock.yaml"),
                      ["model.tasks.centres={weight: 0.5}"], validate=False)
    cfg = validate_config({k: v for k, v in cfg.items() if k != "data"})
    model = build_model(cfg)
    assert list(model.tasks)[-1] == "centres" and "centres" in model.block.decoders
    assert model.block.heads["centres"].out_channels == 64
    images = torch.rand(2, 3, 64, 64)
    batch = {"image": images, "boxes": [torch.tensor([[8.0, 8.0, 40.0, 40.0]]), torch.zeros(0, 4)],
             "labels": [torch.tensor([2]), torch.zeros(0, dtype=torch.int64)],
             "has": {"scene": torch.tensor([False, False]), "depth": torch.tensor([False, False]),
                     "normals": torch.tensor([False, False])}}
    out = model(images)
    assert out["centres"].shape == (2, 1, 4, 4)
    losses = model.losses(out, batch)
    assert losses["centres"].item() > 0
    total, weights = model.weighting(losses)
    assert weights["centres"] == 0.5
    total.backward()
    assert model.block.heads["centres"].weight.grad.abs().sum() > 0

    from mtlkit_contours import centre_heatmap

    heat = centre_heatmap(batch["boxes"], (64, 64), (4, 4))
    assert heat[0, 0, 1, 1] == heat[0, 0].max() and heat[1].sum() == 0
    model.eval()
    pred = model.detect(images)
    metric = model.tasks["centres"].new_metric()
    metric.update(pred["centres"], batch)
    result = metric.compute()
    assert set(result) == {"mae", "hit_rate"} and 0 <= result["mae"] <= 1


@pytest.mark.slow
def test_pip_install_editable_and_uninstall():
    pip = [sys.executable, "-m", "pip"]
    env = dict(os.environ, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run(pip + ["install", "--no-build-isolation", "--no-deps", "-e", EXAMPLE],
                   check=True, capture_output=True, env=env)
    try:
        code = ("from mtlkit.registry import get_registry; "
                "e = get_registry().entry('task', 'centres'); print(e.origin.distribution)")
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True, cwd=ROOT, env=env)
        assert out.stdout.strip().splitlines()[-1] == "mtlkit-contours"
    finally:
        subprocess.run(pip + ["uninstall", "-y", "mtlkit-contours"], check=True,
                       capture_output=True, env=env)


def test_centres_can_be_measured_and_decoded_by_the_block(installed_example):
    """The example says how its label becomes a map (measured_map): boxes given
    as a measurement reach its decoder in place of the prediction."""
    from mtlkit.models.measured import measured_inputs

    cfg = load_config(os.path.join(ROOT, "configs", "synthetic", "rock.yaml"),
                      ["model.tasks.centres={weight: 0.5}", "model.measured={block: [centres]}"],
                      validate=False)
    model = build_model(validate_config({k: v for k, v in cfg.items() if k != "data"})).eval()
    task = model.tasks["centres"]
    assert task.can_be_measured()
    images = torch.rand(2, 3, 64, 64)
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 40.0]]), torch.zeros(0, 4)]
    logits, valid = task.measured_map({"image": images, "boxes": boxes, "has": {}}, (4, 4), None)
    assert logits.shape == (2, 1, 4, 4) and valid.all()
    assert torch.allclose(torch.sigmoid(logits), task.targets({"image": images, "boxes": boxes}, (4, 4),
                                                              None).clamp(0.01, 0.99))
    view = {"image": images, "boxes": boxes, "has": {}}
    moved = [torch.tensor([[30.0, 30.0, 60.0, 60.0]]), torch.zeros(0, 4)]
    with torch.no_grad():
        a = model(images, sensor=view)["detection"]["conf"]
        b = model(images, sensor=dict(view, boxes=moved))["detection"]["conf"]
        c = model(images)["detection"]["conf"]
    assert not torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a, c)
    assert measured_inputs(model, {"image": images})["sensor"]["image"] is images
