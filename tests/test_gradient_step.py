"""The gradient step (mtlkit/engine/gradient_step.py) on a tiny three-task
model (tests/_gradient_fakes.py): the update each place prescribes, per-sample
masks, accumulation, non-finite gradients, the GradScaler, logging, exact
resume, and the trainer's choice of step."""

import copy
import json
import math
import os

import pytest
import torch

from _gradient_fakes import GRAD_CFG, LabelledSet, ThreeTaskModel, grad_parts
from mtlkit.engine import train
from mtlkit.engine.gradient_step import GradientStep, Partition, reached_parameters, replayed
from mtlkit.engine.hooks import HookBase
from mtlkit.engine.step import TrainStep
from mtlkit.engine.trainer import Trainer
from mtlkit.engine.runtime import run_config
from mtlkit.errors import ConfigError
from plugins.gradient_weightings import GRADIENT_WEIGHTINGS

TASKS = ("reg", "cls", "rec")
TRUNK = ("backbone.",)
#: what each task's loss reaches in the fake model: the backbone (all), the
#: neck (reg, cls), the heads
SHARED_AT_PARAMETERS = ("backbone.", "neck.")
GRADIENT_METHODS = [n for n, c in GRADIENT_WEIGHTINGS.items() if c.needs_gradients]
LOSS_LEVEL = [n for n, c in GRADIENT_WEIGHTINGS.items() if not c.needs_gradients]


def options_for(name):
    """Options that make a random method reproducible."""
    return {"seed": 0} if GRADIENT_WEIGHTINGS[name].randomised else {}


class Capture(HookBase):
    """Per step: the weights before it, the batch, the gradients and the
    step's combination (the gradients are still in .grad after the update)."""

    def __init__(self):
        self.steps = []

    def before_step(self):
        self._before = copy.deepcopy(self.state.core.state_dict())

    def after_step(self):
        core = self.state.core
        self.steps.append({
            "before": self._before, "batch": self.state.batch,
            "grads": {n: (p.grad.clone() if p.grad is not None else None) for n, p in core.named_parameters()},
            "combination": self.trainer.step.combination})


def run(tmp_path, name, iters=2, hooks=(), overrides=(), **options):
    parts = grad_parts(name, **options)
    cfg = run_config(copy.deepcopy(GRAD_CFG), [f"train.iters={iters}", *overrides])
    trainer = Trainer(cfg, str(tmp_path), hooks=hooks, **parts)
    trainer.run()
    return trainer


def reference_grads(name, options, before, batch, result, place):
    """The gradients the step must produce, computed by hand from the
    coefficients: sum_t c_t dL_t on the shared part, head_weight_t dL_t on the
    rest (place: the trunk below R, or the shared parameters)."""
    model = ThreeTaskModel(name, **options)
    model.load_state_dict(before)
    model.train()
    losses = model.losses(model(batch["image"]), batch)
    names = list(model.named_parameters())
    expected = {}
    shared_prefixes = TRUNK if place == "representation" else SHARED_AT_PARAMETERS
    c = result.coefficients.tolist()
    combined = sum(c[i] * losses[t] for i, t in enumerate(TASKS) if c[i] != 0.0)
    heads = sum(result.head_weights[t] * losses[t] for t in result.head_weights)
    for pname, p in names:
        target = combined if pname.startswith(shared_prefixes) else heads
        if not torch.is_tensor(target) or not target.requires_grad:
            expected[pname] = None
            continue
        g, = torch.autograd.grad(target, p, retain_graph=True, allow_unused=True)
        expected[pname] = g
    return expected


def reference_coefficients(name, options, before, batch, place):
    """The method's coefficients computed by hand: per-task gradients at the
    place (R: the backbone's map; or the shared parameters), the weighting
    in its state before the step."""
    model = ThreeTaskModel(name, **options)
    model.load_state_dict(before)
    model.train()
    images = batch["image"]
    if place == "representation":
        rep = model.backbone(images)[0].detach().requires_grad_()
        losses = model.losses(model.above(rep), batch)
        rows = {t: torch.autograd.grad(losses[t], rep, retain_graph=True)[0].flatten() for t in TASKS}
    else:
        losses = model.losses(model(images), batch)
        shared = [p for n, p in model.named_parameters() if n.startswith(SHARED_AT_PARAMETERS)]
        rows = {t: torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in
                              zip(torch.autograd.grad(losses[t], shared, retain_graph=True, allow_unused=True),
                                  shared)])
                for t in TASKS}
    present = {t: bool(model.tasks[t].sample_mask(batch, images.shape[0]).any()) for t in TASKS}
    rows = {t: r for t, r in rows.items() if present[t]}
    return model.weighting.combine(rows, losses, present).coefficients


def assert_grads_match(got, expected, label):
    for pname, exp in expected.items():
        if exp is None or not exp.abs().sum():
            assert got[pname] is None or not got[pname].abs().sum(), f"{label}: {pname} should have no gradient"
            continue
        assert got[pname] is not None, f"{label}: {pname} has no gradient"
        torch.testing.assert_close(got[pname], exp, rtol=1e-4, atol=1e-6, msg=f"{label}: {pname}")


# ---------------------------------------------------------------------------
# The trainer's choice
# ---------------------------------------------------------------------------

def test_the_trainer_chooses_the_gradient_step_by_the_weighting(tmp_path):
    from _engine_fakes import ENGINE_CFG, fake_parts

    trainer = Trainer(run_config(copy.deepcopy(ENGINE_CFG), []), str(tmp_path / "fixed"), **fake_parts())
    assert type(trainer.default_step(trainer._model)) is TrainStep  # a loss weighting: the step of before
    parts = grad_parts("gcs")
    assert isinstance(Trainer(run_config(copy.deepcopy(GRAD_CFG), []), str(tmp_path / "g"),
                              **parts).default_step(parts["model"]), GradientStep)


# ---------------------------------------------------------------------------
# The update of each place
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("place", ["representation", "parameters"])
@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_each_place_applies_the_methods_coefficients(tmp_path, name, place):
    """After each step, .grad holds exactly sum_t c_t dL_t on the shared part
    (trunk below R; or the parameters two tasks reach) and head_weight_t dL_t
    elsewhere, with c the step's coefficients."""
    options = {"place": place, **options_for(name)}
    capture = Capture()
    run(tmp_path, name, iters=3, hooks=[capture], **options)
    for i, step in enumerate(capture.steps):
        result = step["combination"]
        assert result is not None and result.active
        torch.testing.assert_close(result.coefficients,
                                   reference_coefficients(name, options, step["before"], step["batch"], place),
                                   rtol=1e-5, atol=1e-8)
        expected = reference_grads(name, options, step["before"], step["batch"], result, place)
        assert_grads_match(step["grads"], expected, f"{name}/{place} step {i}")


@pytest.mark.parametrize("name", LOSS_LEVEL)
def test_loss_level_methods_take_the_gradient_of_the_weighted_loss(tmp_path, name):
    capture = Capture()
    options = options_for(name)
    run(tmp_path, name, iters=3, hooks=[capture], **options)
    for i, step in enumerate(capture.steps):
        result = step["combination"]
        assert sum(result.coefficients.tolist()) == pytest.approx(1.0)
        model = ThreeTaskModel(name, **options)
        model.load_state_dict(step["before"])
        losses = model.losses(model(step["batch"]["image"]), step["batch"])
        total = sum(result.head_weights[t] * losses[t] for t in result.head_weights)
        for pname, p in model.named_parameters():
            exp, = torch.autograd.grad(total, p, retain_graph=True)
            torch.testing.assert_close(step["grads"][pname], exp, rtol=1e-4, atol=1e-6,
                                       msg=f"{name} step {i}: {pname}")
