"""The gradient step (mtlkit/engine/gradient_step.py) on a tiny three-task
model (tests/_gradient_fakes.py): the update each place prescribes, per-sample
masks, accumulation, non-finite gradients, the GradScaler, logging, exact
resume, and the trainer's choice of step."""

import copy
import json
import os

import pytest
import torch

from _engine_fakes import StopAt
from _gradient_fakes import GRAD_CFG, LabelledSet, ThreeTaskModel, grad_parts
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


# ---------------------------------------------------------------------------
# Accumulation, per-sample masks, the planning pass
# ---------------------------------------------------------------------------

ACCUMULATION_CASES = [("gcs", "representation"), ("gcs", "parameters"), ("pcgrad", "representation"),
                      ("mgda", "parameters"), ("olaux", "representation"), ("famo", None), ("rlw", None)]


@pytest.mark.parametrize("name,place", ACCUMULATION_CASES)
def test_accumulation_equals_the_whole_batch(tmp_path, name, place):
    """train.accumulate = 2 with batches of 2 takes the steps one batch of 4
    takes: the parameters place sums per-task gradients, the representation
    place and FAMO plan on the whole step first."""
    options = {**options_for(name), **({"place": place} if place else {})}
    whole = run(tmp_path / "whole", name, iters=4, **options)
    split = run(tmp_path / "split", name, iters=4, overrides=["data.batch_size=2", "train.accumulate=2"],
                **options)
    a, b = whole.state.core.state_dict(), split.state.core.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_the_planning_pass_puts_back_randomness_and_statistics():
    """What the planning pass runs leaves the RNG and the BatchNorm
    statistics as they were: the forward after it is the one before it."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5)).train()
    x = torch.randn(8, 4)
    with replayed(net, torch.device("cpu")):
        first = net(x)
        net(x)
    again = net(x)
    assert torch.equal(first, again)
    assert int(net[1].num_batches_tracked) == 1


def test_an_absent_task_contributes_no_gradient(tmp_path):
    """A batch without a task's label: the task is absent, its head gets no
    gradient (None, so the optimiser leaves it as it is), the other tasks'
    coefficients are those of the method on them alone."""
    capture = Capture()
    parts = grad_parts("gcs")
    parts["train_dataset"] = LabelledSet(16, missing_cls=1)  # cls never labelled
    cfg = run_config(copy.deepcopy(GRAD_CFG), ["train.iters=2"])
    Trainer(cfg, str(tmp_path), hooks=[capture], **parts).run()
    for step in capture.steps:
        result = step["combination"]
        assert result.absent == ("cls",) and "cls" not in result.active
        assert result.weights["cls"] == 0.0
        assert step["grads"]["cls.weight"] is None and step["grads"]["cls.bias"] is None
        assert step["grads"]["reg.weight"] is not None and step["grads"]["backbone.conv.weight"] is not None
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert all(r["absent"] == ["cls"] for r in records if r["event"] == "weighting")


def test_reached_parameters_and_the_partition():
    model = ThreeTaskModel("gcs", place="parameters")
    batch = torch.utils.data.default_collate([LabelledSet(4)[i] for i in range(4)])
    losses = model.losses(model(batch["image"]), batch)
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    reach = {t: {names[i] for i in reached_parameters(losses[t], params)} for t in TASKS}
    assert reach["rec"] == {"backbone.conv.weight", "backbone.conv.bias", "rec.weight", "rec.bias"}
    assert reach["reg"] == {"backbone.conv.weight", "backbone.conv.bias", "neck.weight", "neck.bias",
                            "reg.weight", "reg.bias"}
    part = Partition.of([losses[t] for t in TASKS], params)
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert [by_id[id(p)] for p in part.params[:part.shared]] == ["backbone.conv.weight", "backbone.conv.bias",
                                                                 "neck.weight", "neck.bias"]
    assert part.n_shared == sum(p.numel() for p in part.params[:part.shared]) and part.complete
    assert {by_id[id(part.params[j])] for j in part.own[2]} == {"rec.weight", "rec.bias"}


# ---------------------------------------------------------------------------
# Non-finite gradients, the GradScaler
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("place", ["representation", "parameters"])
def test_a_non_finite_task_gradient_is_dropped_never_applied(tmp_path, place):
    """rec's gradient is NaN (its loss is finite): each step runs on the
    other tasks, rec's head never moves, every weight stays finite, and the
    weighting records name the task."""
    capture = Capture()
    run(tmp_path, "pcgrad", iters=3, hooks=[capture], place=place, seed=0, nan_gradient="rec")
    start = capture.steps[0]["before"]
    final = capture.trainer.state.core.state_dict()
    for step in capture.steps:
        result = step["combination"]
        assert result.nonfinite == ("rec",) and "rec" not in result.active and result.weights["rec"] == 0.0
        assert step["grads"]["rec.weight"] is None
        assert all(g is None or torch.isfinite(g).all() for g in step["grads"].values())
    assert torch.equal(final["rec.weight"], start["rec.weight"])
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())
    assert not torch.equal(final["backbone.conv.weight"], start["backbone.conv.weight"])
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["nonfinite"] for r in records if r["event"] == "weighting"] == [["rec"]] * 3


def test_a_loss_level_method_skips_a_step_whose_gradient_is_not_finite(tmp_path, monkeypatch):
    """FAMO sees no per-task gradient: a NaN in the combined gradient is
    caught before the optimiser, the step is skipped and recorded, and too
    many skips in a row stop the run."""
    capture = Capture()
    run(tmp_path / "a", "famo", iters=2, hooks=[capture], nan_gradient="rec")
    final = capture.trainer.state.core.state_dict()
    for key, value in capture.steps[0]["before"].items():
        if key.startswith(("backbone", "neck", "reg", "cls", "rec")):
            assert torch.equal(final[key], value), key  # no step was taken
    records = [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")]
    assert all(r["skipped"].startswith("non-finite") for r in records if r["event"] == "weighting")
    monkeypatch.setattr(GradientStep, "MAX_SKIPS", 3)
    with pytest.raises(Exception, match="not finite in 3 consecutive steps"):
        run(tmp_path / "b", "famo", iters=5, nan_gradient="rec")


class CpuScaler(HookBase):
    """A float16-style GradScaler on the CPU (the trainer builds one on CUDA
    only), so the scaled path runs here."""

    def __init__(self, scale):
        self.scale = scale

    def before_train(self):
        self.state.scaler = torch.amp.GradScaler("cpu", init_scale=self.scale, growth_interval=1000)


@pytest.mark.parametrize("name,place", [("gcs", "representation"), ("mgda", "parameters"), ("famo", None)])
def test_a_gradient_scaler_gives_the_unscaled_update(tmp_path, name, place):
    """Per-task gradients of s * L_t with grad_scale=s: the coefficients and
    the steps are those of the unscaled run."""
    options = {"place": place} if place else {}
    plain = run(tmp_path / "plain", name, iters=3, **options)
    scaled = run(tmp_path / "scaled", name, iters=3, hooks=[CpuScaler(2.0 ** 12)], **options)
    a, b = plain.state.core.state_dict(), scaled.state.core.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("place", ["representation", "parameters"])
def test_an_overflow_skips_the_step_and_lowers_the_scale(tmp_path, place):
    """With a GradScaler a non-finite task gradient is an overflow: the
    method flags skip_step, no parameter and no method state moves (OL-AUX's
    step count included), the scaler backs off, the record says so."""
    capture = Capture()
    trainer = run(tmp_path, "olaux", iters=2, hooks=[capture, CpuScaler(2.0 ** 12)], place=place,
                  nan_gradient="rec")
    assert all(step["combination"].skip_step for step in capture.steps)
    final = trainer.state.core.state_dict()
    for key, value in capture.steps[0]["before"].items():
        assert torch.equal(final[key], value), key
    assert int(final["weighting.steps"]) == 0
    assert trainer.state.scaler.get_scale() == 2.0 ** 10
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    skips = [r for r in records if r["event"] == "weighting"]
    assert [r["skipped"].startswith("fp16 overflow") for r in skips] == [True, True]
    assert [r["grad_scale"] for r in skips] == [2.0 ** 11, 2.0 ** 10]


# ---------------------------------------------------------------------------
# Logging, resume, errors
# ---------------------------------------------------------------------------

def test_each_step_records_the_methods_coefficients(tmp_path):
    run(tmp_path, "gcs", iters=3, overrides=["train.log_every=2"])
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    weighting = [r for r in records if r["event"] == "weighting"]
    assert [r["iter"] for r in weighting] == [1, 2, 3]
    for r in weighting:
        assert r["method"] == "GradientCosineSimilarity" and r["place"] == "representation"
        assert set(r["weights"]) == set(TASKS) and r["weights"]["reg"] == 1.0
        assert set(r["info"]) == {"cos/cls", "cos/rec"} and r["skipped"] is None
        # gate mode: an auxiliary task is kept exactly when its cosine with the primary is positive
        for aux in ("cls", "rec"):
            assert r["weights"][aux] == (1.0 if r["info"][f"cos/{aux}"] > 0 else 0.0)
    train_records = [r for r in records if r["event"] == "train"]
    assert [r["iter"] for r in train_records] == [2, 3]
    assert train_records[-1]["weights"] == weighting[-1]["weights"]


@pytest.mark.parametrize("name,place", [("pcgrad", "representation"), ("olaux", "parameters"),
                                        ("famo", None), ("rlw", None), ("gradnorm", "representation")])
def test_a_stopped_and_resumed_run_ends_bit_for_bit_as_an_uninterrupted_one(tmp_path, name, place):
    """The method's state (buffers: pcgrad's and rlw's generators, OL-AUX's
    sums and step count, FAMO's logits and previous losses, GradNorm's
    weights) is in the checkpoint: a run stopped at iteration 3 and resumed
    ends with the same weights and state as one that was not."""
    options = {**options_for(name), **({"place": place} if place else {})}
    straight = run(tmp_path / "straight", name, iters=6, **options).state.core.state_dict()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", name, iters=6, hooks=[StopAt(3)], **options)
    parts = grad_parts(name, **options)
    cfg = run_config(copy.deepcopy(GRAD_CFG), ["train.iters=6"])
    resumed = Trainer(cfg, str(tmp_path / "resumed"), resume=True, **parts)
    resumed.run()
    final = resumed.state.core.state_dict()
    assert any(k.startswith("weighting.") for k in final) or name == "pcgrad"
    for key in straight:
        assert torch.equal(straight[key], final[key]), key
    weighting = [json.loads(line)["iter"] for line in open(tmp_path / "resumed" / "metrics.jsonl")
                 if json.loads(line)["event"] == "weighting"]
    assert weighting == [1, 2, 3, 4, 5, 6]  # each step recorded once


def test_resuming_with_another_method_or_place_is_refused(tmp_path):
    run(tmp_path, "gcs", iters=1)
    step = GradientStep()
    step._method, step._place = "GradientCosineSimilarity", "parameters"
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["step"]
    assert saved == {"method": "GradientCosineSimilarity", "place": "representation", "skips": 0}
    with pytest.raises(ConfigError, match="trained with model.weighting GradientCosineSimilarity at place "
                                          "representation"):
        step.load_state_dict(saved)


def test_the_representation_place_needs_a_backbone(tmp_path):
    parts = grad_parts("gcs")
    del parts["model"].backbone  # the model's forward is not run: setup refuses first
    parts["model"].backbone = None
    cfg = run_config(copy.deepcopy(GRAD_CFG), [])
    with pytest.raises(ConfigError, match="no backbone module; use place: parameters"):
        Trainer(cfg, str(tmp_path), **parts).run()
    assert not os.path.exists(tmp_path / "config.yaml")  # refused before --out was written


# ---------------------------------------------------------------------------
# Every method on the synthetic ROCK config
# ---------------------------------------------------------------------------

ROCK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "synthetic",
                    "rock.yaml")
TINY_ROCK = ["data.train={type: synthetic, split: train, size: 4, seed: 0}", "data.val=null", "data.test=null",
             "data.image_size=[64, 96]", "data.batch_size=2", "data.num_workers=0", "train.iters=2",
             "train.log_every=1", "train.progress=false", "train.eval_at_end=false", "train.plots=false",
             "train.num_threads=1"]


@pytest.mark.parametrize("name,place", [(n, None) for n in GRADIENT_WEIGHTINGS]
                         + [(n, "parameters") for n in ("gcs", "pcgrad", "mgda")])
def test_every_method_trains_the_rock_config(tmp_path, name, place):
    """The synthetic ROCK config (resnet_small, four tasks, bf16 autocast on
    CPU, channels_last) with ``-o model.weighting=<name>``: the gradient step
    runs, records every step, and moves the trained parameters (and only
    those: the frozen stages stay), all finite."""
    options = {**options_for(name), **({"place": place} if place else {})}
    value = name if not options else "{" + ", ".join([f"name: {name}"]
                                                     + [f"{k}: {v}" for k, v in options.items()]) + "}"
    capture = Capture()
    cfg = run_config(ROCK, TINY_ROCK + [f"model.weighting={value}"])
    trainer = Trainer(cfg, str(tmp_path), hooks=[capture])
    trainer.run()
    assert isinstance(trainer.step, GradientStep) and trainer.state.amp_dtype == torch.bfloat16
    core = trainer.state.core
    final = core.state_dict()
    before = capture.steps[0]["before"]
    trained = {n for n, p in core.named_parameters() if p.requires_grad}
    assert "backbone.layer4.0.conv1.weight" in trained and "backbone.conv1.weight" not in trained
    assert not torch.equal(final["backbone.layer4.0.conv1.weight"], before["backbone.layer4.0.conv1.weight"])
    assert torch.equal(final["backbone.conv1.weight"], before["backbone.conv1.weight"])
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    weighting = [r for r in records if r["event"] == "weighting"]
    assert [r["iter"] for r in weighting] == [1, 2] and all(r["skipped"] is None for r in weighting)
    assert set(weighting[0]["weights"]) == {"detection", "scene", "depth", "normals"}
    expected_place = (place or "representation") if GRADIENT_WEIGHTINGS[name].needs_gradients else None
    assert weighting[0]["place"] == expected_place
