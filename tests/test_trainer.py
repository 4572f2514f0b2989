"""The training loop on a tiny fake model (tests/_engine_fakes.py):
outputs, exact resume, SIGINT, NaN guard, accumulation, EMA, schedules."""

import copy
import json
import os
import signal

import pytest
import torch

from mtlkit.engine import RunExists, TrainingDiverged, evaluate, train
from mtlkit.engine.optim import LRSchedule, build_optimizer, lr_factor, milestones
from mtlkit.engine.schema import TRAIN_DEFAULTS
from mtlkit.engine.trainer import resolve_config, with_defaults
from _engine_fakes import ENGINE_CFG, FakeDataset, FakeModel, StopAt, fake_parts, final_weights


@pytest.fixture(autouse=True)
def one_thread():
    """Bit-exact comparisons need the same intra-op parallelism in every run."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cfg_with(**train):
    cfg = copy.deepcopy(ENGINE_CFG)
    cfg["train"].update(train)
    return cfg


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_train_writes_run_directory_and_learns(tmp_path):
    parts = fake_parts()
    before = {k: v.clone() for k, v in parts["model"].state_dict().items()}
    metrics = train(cfg_with(iters=30, eval_every=10, log_every=5, plots=True), tmp_path, **parts)
    assert set(metrics) == {"reg", "cls"}
    assert metrics["reg"]["count"] == 10  # every validation sample, once
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "metrics.json", "curves.png"):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "detections.json").exists()  # no detection task in the fake
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train_records = [r for r in records if r["event"] == "train"]
    assert [r["iter"] for r in train_records] == [5, 10, 15, 20, 25, 30]
    assert [r["iter"] for r in records if r["event"] == "eval"] == [10, 20, 30]
    assert train_records[-1]["loss"] < train_records[0]["loss"]
    assert train_records[0]["images_per_s"] > 0
    assert set(train_records[0]["losses"]) == {"reg", "cls"}
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 30
    # 30 batches consumed, 8 batches per epoch: epoch 3, batch 6
    assert (ckpt["data"]["epoch"], ckpt["data"]["batch"]) == (3, 6)
    assert ckpt["meta"]["classes"] == ["thing", "stuff"]
    assert any(not torch.equal(before[k], ckpt["model"][k]) for k in before)
    saved = json.load(open(tmp_path / "metrics.json"))
    assert saved["iteration"] == 30 and saved["metrics"]["cls"]["accuracy"] == metrics["cls"]["accuracy"]
    # the resolved config is complete and valid
    from mtlkit.config import load_config

    reloaded = load_config(str(tmp_path / "config.yaml"))
    assert reloaded["train"]["iters"] == 30 and reloaded["train"]["optimizer"]["name"] == "sgd"


def test_data_position_in_checkpoint(tmp_path):
    train(cfg_with(iters=10), tmp_path, **fake_parts())
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    # 32 samples, batch 4 -> 8 batches per epoch; 10 batches consumed
    assert (ckpt["data"]["epoch"], ckpt["data"]["batch"]) == (1, 2)


def test_existing_run_needs_resume(tmp_path):
    train(cfg_with(iters=2), tmp_path, **fake_parts())
    with pytest.raises(RunExists, match="--resume"):
        train(cfg_with(iters=2), tmp_path, **fake_parts())


def _interrupt_after(dataset, items):
    """Make ``dataset`` send SIGINT to this process when it serves item number ``items``."""
    original = dataset.__getitem__
    count = {"n": 0}

    class Interrupting(type(dataset)):
        def __getitem__(self, index):
            count["n"] += 1
            if count["n"] == items:
                signal.raise_signal(signal.SIGINT)
            return original(index)

    dataset.__class__ = Interrupting
    return dataset


def test_sigint_saves_and_resume_is_exact(tmp_path):
    cfg = cfg_with(iters=12, eval_every=5, schedule={"name": "multistep", "milestones": [0.5],
                                                     "warmup_iters": 3})
    straight = tmp_path / "straight"
    train(cfg, straight, **fake_parts(dropout=0.3))

    parts = fake_parts(dropout=0.3)
    _interrupt_after(parts["train_dataset"], 4 * 7 - 1)  # during iteration 7
    interrupted = tmp_path / "interrupted"
    # the handler in place before the run (SIG_IGN, not Python's default, in a background shell)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, interrupted, **parts)
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    ckpt = torch.load(interrupted / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 7  # the iteration in flight finished, then saved
    resumed = train(cfg, interrupted, resume=True, **fake_parts(dropout=0.3))
    assert_same_state(final_weights(straight)[0], final_weights(interrupted)[0])
    a, b = final_weights(straight)[1], final_weights(interrupted)[1]
    assert_same_state(a["optimizer"]["state"][0], b["optimizer"]["state"][0])
    assert resumed == json.load(open(straight / "metrics.json"))["metrics"]
    # the log of the resumed run has each iteration once
    iters = [json.loads(line)["iter"] for line in open(interrupted / "metrics.jsonl")
             if json.loads(line)["event"] == "train"]
    assert iters == list(range(1, 13))


def test_nan_loss_stops_naming_the_task_and_keeps_last_checkpoint(tmp_path):
    parts = fake_parts(nan_after=5)
    with pytest.raises(TrainingDiverged, match=r"iteration 6: the loss of task 'cls' is nan") as err:
        train(cfg_with(iters=10, checkpoint_every=2), tmp_path, **parts)
    assert "iteration 4" in str(err.value)  # the last good checkpoint
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert records[-1]["event"] == "diverged" and records[-1]["task"] == "cls"


def test_accumulation_equals_larger_batch(tmp_path):
    cfg_big = cfg_with(iters=5, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
    cfg_big["data"]["batch_size"] = 4
    cfg_acc = cfg_with(iters=5, accumulate=2, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
    cfg_acc["data"]["batch_size"] = 2
    train(cfg_big, tmp_path / "big", **fake_parts())
    train(cfg_acc, tmp_path / "acc", **fake_parts())
    a, b = final_weights(tmp_path / "big")[0], final_weights(tmp_path / "acc")[0]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_ema_and_clipping_and_adamw(tmp_path, monkeypatch):
    from mtlkit.engine.ema import ModelEMA

    cfg = cfg_with(iters=8, clip_grad_norm=0.01, ema={"enabled": True, "decay": 0.9},
                   optimizer={"name": "adamw", "lr": 0.01, "no_decay_norm_bias": True})
    parts = fake_parts()
    initial = {k: v.detach().clone().double() for k, v in parts["model"].state_dict().items()}
    raw_after_step = []  # the weights each EMA update sees
    real_update = ModelEMA.update
    monkeypatch.setattr(ModelEMA, "update", lambda self, model: (
        raw_after_step.append({k: v.detach().clone().double() for k, v in model.state_dict().items()}),
        real_update(self, model))[1])
    train(cfg, tmp_path, **parts)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["ema"]["updates"] == 8 and len(raw_after_step) == 8
    ema_w, raw_w = ckpt["ema"]["weights"]["reg.weight"], ckpt["model"]["reg.weight"]
    assert not torch.equal(ema_w, raw_w)
    # the documented formula: ema = d_n * ema + (1 - d_n) * w after update n (0-based), from the
    # initial weights, with the warm-up d_n = min(decay, (1 + n) / (10 + n))
    expected = dict(initial)
    for n, weights in enumerate(raw_after_step):
        d = min(0.9, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * weights[k] for k in expected}
    for key, value in ckpt["ema"]["weights"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value.double(), expected[key], rtol=1e-5, atol=1e-7)
    # evaluation uses the EMA weights
    model = FakeModel()
    model.load_state_dict(ckpt["ema"]["weights"])
    ema_metrics = evaluate(cfg, None, model=model, dataset=FakeDataset(10, seed=2, augment=False),
                           collate_fn=None)
    assert json.load(open(tmp_path / "metrics.json"))["metrics"]["reg"]["mse"] == \
        pytest.approx(ema_metrics["reg"]["mse"])


def test_clipping_bounds_the_update(tmp_path):
    base = fake_parts()["model"].state_dict()
    cfg = cfg_with(iters=1, clip_grad_norm=1e-3, schedule={"name": "constant"},
                   optimizer={"name": "sgd", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0})
    train(cfg, tmp_path, **fake_parts())
    after = final_weights(tmp_path)[0]
    step = torch.sqrt(sum(((after[k] - base[k]) ** 2).sum() for k in base))
    assert step == pytest.approx(1e-3, rel=1e-3)


def test_lr_schedules():
    sched = with_defaults(TRAIN_DEFAULTS["schedule"], {"name": "multistep", "milestones": [0.5, 75],
                                                       "gamma": 0.1, "warmup_iters": 10,
                                                       "warmup_factor": 0.1})
    assert milestones(sched, 100) == [50, 75]
    assert lr_factor(0, 100, sched) == pytest.approx(0.1)
    assert lr_factor(5, 100, sched) == pytest.approx(0.55)
    assert lr_factor(10, 100, sched) == 1.0
    assert lr_factor(49, 100, sched) == 1.0
    assert lr_factor(50, 100, sched) == pytest.approx(0.1)
    assert lr_factor(99, 100, sched) == pytest.approx(0.01)
    cos = with_defaults(TRAIN_DEFAULTS["schedule"], {"name": "cosine", "min_lr_factor": 0.1})
    assert lr_factor(0, 100, cos) == 1.0
    assert lr_factor(50, 100, cos) == pytest.approx(0.55)
    assert lr_factor(100, 100, cos) == pytest.approx(0.1)
    const = with_defaults(TRAIN_DEFAULTS["schedule"], {"name": "constant"})
    assert lr_factor(77, 100, const) == 1.0

    model = FakeModel()
    opt = build_optimizer(model, with_defaults(TRAIN_DEFAULTS["optimizer"], {"lr": 0.2}))
    s = LRSchedule(opt, 100, sched)
    assert s.step(60) == pytest.approx(0.02)


def test_optimizers_and_param_groups():
    model = FakeModel()
    sgd = build_optimizer(model, with_defaults(TRAIN_DEFAULTS["optimizer"], {"nesterov": True}))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"]
    adam = build_optimizer(model, with_defaults(TRAIN_DEFAULTS["optimizer"],
                                                {"name": "adam", "betas": [0.8, 0.9]}))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["betas"] == (0.8, 0.9)
    split = build_optimizer(model, with_defaults(TRAIN_DEFAULTS["optimizer"],
                                                 {"name": "adamw", "no_decay_norm_bias": True}))
    assert isinstance(split, torch.optim.AdamW)
    decay, no_decay = split.param_groups
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3  # the 3 biases
    assert len(decay["params"]) == 3


def test_resolve_config_fills_defaults_without_losing_values():
    cfg = resolve_config({"train": {"optimizer": {"lr": 0.5}, "ema": {"enabled": True}}})
    assert cfg["train"]["optimizer"]["lr"] == 0.5
    assert cfg["train"]["optimizer"]["momentum"] == TRAIN_DEFAULTS["optimizer"]["momentum"]
    assert cfg["train"]["ema"] == {**TRAIN_DEFAULTS["ema"], "enabled": True}
    assert cfg["eval"]["top_k"] == 200


def test_config_validation_of_train_section():
    from mtlkit.config import validate_config
    from mtlkit.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'optimizer'"):
        validate_config({"train": {"optimiser": {}}})
    with pytest.raises(ConfigError, match="train.schedule.name"):
        validate_config({"train": {"schedule": {"name": "cosin"}}})
    with pytest.raises(ConfigError, match="train.iters: expected an integer"):
        validate_config({"train": {"iters": 1.5}})
    with pytest.raises(ConfigError, match="eval.top_k"):
        validate_config({"eval": {"top_k": "many"}})


def test_amp_on_cpu_autocasts_in_bfloat16_with_a_note_for_float16(tmp_path, capsys):
    a = train(cfg_with(iters=3, amp=True, amp_dtype="float16"), tmp_path / "amp", **fake_parts())
    assert "train.amp_dtype=float16 is CUDA-only: autocast on CPU uses bfloat16" in capsys.readouterr().err
    b = train(cfg_with(iters=3, amp=True, amp_dtype="bfloat16"), tmp_path / "bf16", **fake_parts())
    assert a == b  # the float16 request ran the same bfloat16 autocast
    assert torch.load(tmp_path / "amp" / "last.pt", weights_only=True)["scaler"] is None


def test_evaluate_api_writes_outputs(tmp_path):
    parts = fake_parts()
    train(cfg_with(iters=2, eval_at_end=False), tmp_path / "run", **parts)
    assert not (tmp_path / "run" / "metrics.json").exists()
    values = evaluate(cfg_with(), None, out_dir=str(tmp_path / "ev"), model=parts["model"],
                      dataset=FakeDataset(7, seed=2, augment=False))
    assert values["reg"]["count"] == 7
    saved = json.load(open(tmp_path / "ev" / "metrics.json"))
    assert saved["metrics"] == values


def test_data_workers_do_not_change_the_result(tmp_path):
    cfg0 = cfg_with(iters=5)
    cfg2 = cfg_with(iters=5)
    cfg2["data"]["num_workers"] = 2
    train(cfg0, tmp_path / "w0", **fake_parts())
    train(cfg2, tmp_path / "w2", **fake_parts())
    assert_same_state(final_weights(tmp_path / "w0")[0], final_weights(tmp_path / "w2")[0])


def test_resuming_a_finished_run_returns_its_metrics(tmp_path):
    first = train(cfg_with(iters=3), tmp_path, **fake_parts())
    mtime = os.path.getmtime(tmp_path / "last.pt")
    again = train(cfg_with(iters=3), tmp_path, resume=True, **fake_parts())
    assert again == first
    assert os.path.getmtime(tmp_path / "last.pt") == mtime  # nothing retrained or rewritten


def test_trainer_calls_the_weighting_hooks(tmp_path):
    """Gradient-based and epoch-based weightings rely on these hooks."""
    from mtlkit.weighting import LossWeighting

    class Recording(LossWeighting):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.calls = []

        def forward(self, losses):
            return sum(losses.values()), {k: 1.0 for k in losses}

        def after_backward(self, model, losses):
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            self.calls.append(("after_backward", bool(grads), sorted(losses)))

        def on_iteration_end(self, iteration):
            self.calls.append(("iteration", iteration))

        def on_epoch_end(self, epoch):
            self.calls.append(("epoch", epoch))

    parts = fake_parts()
    recorder = Recording()
    # FakeModel.weighting is a method: shadow it on the instance
    object.__setattr__(parts["model"], "weighting", recorder)
    train(cfg_with(iters=10), tmp_path, **parts)
    backward = [c for c in recorder.calls if c[0] == "after_backward"]
    assert backward == [("after_backward", True, ["cls", "reg"])] * 10
    assert [c[1] for c in recorder.calls if c[0] == "iteration"] == list(range(1, 11))
    # 8 batches per epoch: epoch 0 ends during iteration 9
    assert [c[1] for c in recorder.calls if c[0] == "epoch"] == [0]


def test_num_threads_option_sets_torch_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        train(cfg_with(iters=1, num_threads=1), tmp_path, **fake_parts())
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        train(cfg_with(iters=1, num_threads=0), tmp_path / "b", **fake_parts())
        assert torch.get_num_threads() == 2  # 0 leaves torch's setting alone
    finally:
        torch.set_num_threads(before)


# -- the hooks and the step (mtlkit.engine.hooks, mtlkit.engine.step) ---------------
def test_hooks_are_called_around_every_iteration(tmp_path):
    from mtlkit.engine.hooks import HookBase

    calls = []

    class Recorder(HookBase):
        def before_train(self):
            calls.append(("before_train", self.state.iter, self.state.start_iter))

        def before_step(self):
            calls.append(("before_step", self.state.iter, self.state.lr))

        def after_step(self):
            calls.append(("after_step", self.state.iter, sorted(self.state.result.losses)))

        def after_train(self):
            calls.append(("after_train", self.state.iter, self.state.outcome))

    train(cfg_with(iters=3, schedule={"name": "constant"}), tmp_path, hooks=[Recorder()], **fake_parts())
    assert calls == [("before_train", 0, 0),
                     ("before_step", 0, 0.05), ("after_step", 1, ["cls", "reg"]),
                     ("before_step", 1, 0.05), ("after_step", 2, ["cls", "reg"]),
                     ("before_step", 2, 0.05), ("after_step", 3, ["cls", "reg"]),
                     ("after_train", 3, "finished")]


def test_a_hook_state_is_checkpointed_and_restored(tmp_path):
    from mtlkit.engine.hooks import HookBase

    class Counter(HookBase):
        def __init__(self):
            self.steps = 0

        def after_step(self):
            self.steps += 1

        def state_dict(self):
            return {"steps": self.steps}

        def load_state_dict(self, state):
            self.steps = state["steps"]

    first = Counter()
    train(cfg_with(iters=4), tmp_path, hooks=[first], **fake_parts())
    assert torch.load(tmp_path / "last.pt", weights_only=True)["hooks"] == {"Counter": {"steps": 4}}
    second = Counter()
    train(cfg_with(iters=6), tmp_path, resume=True, hooks=[second], **fake_parts())
    assert second.steps == 6  # 4 restored + 2 run


def test_a_hook_can_stop_the_run_like_a_signal(tmp_path):
    straight = tmp_path / "straight"
    train(cfg_with(iters=8), straight, **fake_parts(dropout=0.3))
    with pytest.raises(KeyboardInterrupt):
        train(cfg_with(iters=8), tmp_path / "b", hooks=[StopAt(3)], **fake_parts(dropout=0.3))
    # agreed in the next step's reduction: that step runs, then the checkpoint
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["iteration"] == 4
    train(cfg_with(iters=8), tmp_path / "b", resume=True, **fake_parts(dropout=0.3))
    assert_same_state(final_weights(straight)[0], final_weights(tmp_path / "b")[0])


def test_a_step_chooses_its_parameters_and_its_loss(tmp_path):
    """What issue-16-like adaptation needs: only chosen parameters move, and the
    step minimises the losses it chooses (here the auxiliary 'cls' only)."""
    from mtlkit.engine.step import Losses, TrainStep

    class AuxiliaryOnly(TrainStep):
        def setup(self, state):
            for name, p in state.core.named_parameters():
                p.requires_grad_(name.startswith("cls."))

        def loss_names(self, state):
            return ["cls"]

        def forward(self, state, batch):
            tasks = state.core.losses(state.model(batch["image"]), batch)
            return Losses(tasks={"cls": tasks["cls"]}, total=tasks["cls"])

    parts = fake_parts()
    before = {k: v.clone() for k, v in parts["model"].state_dict().items()}
    train(cfg_with(iters=4), tmp_path, step=AuxiliaryOnly(), **parts)
    after, ckpt = final_weights(tmp_path)
    assert {k for k in before if not torch.equal(before[k], after[k])} == {"cls.weight", "cls.bias"}
    assert len(ckpt["optimizer"]["param_groups"][0]["params"]) == 2
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert set(records[0]["losses"]) == {"cls"}


def test_a_step_without_optimiser(tmp_path):
    """A statistics-only step (BN refresh in issue 16's terms): no optimiser, no
    lr, the weights unchanged, still logged, checkpointed and resumable."""
    from mtlkit.engine.step import StepOutput, TrainStep, agree

    class Forward(TrainStep):
        uses_optimizer = False

        def __call__(self, state):
            with torch.no_grad():
                batch = state.stream.next()
                tasks = state.core.losses(state.model(batch["image"]), batch)
            return agree(state, StepOutput(losses={k: float(v) for k, v in tasks.items()},
                                           total=float(sum(tasks.values()))))

    parts = fake_parts()
    before = {k: v.clone() for k, v in parts["model"].state_dict().items()}
    train(cfg_with(iters=3), tmp_path, step=Forward(), **parts)
    after, ckpt = final_weights(tmp_path)
    assert_same_state(before, after)
    assert ckpt["optimizer"] is None and ckpt["scheduler"] is None and ckpt["iteration"] == 3
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["lr"] for r in records if r["event"] == "train"] == [None] * 3
    assert train(cfg_with(iters=3), tmp_path, resume=True, step=Forward(), **fake_parts()) == \
        json.load(open(tmp_path / "metrics.json"))["metrics"]


def test_flags_are_overrides_checked_by_the_one_validation(tmp_path):
    from mtlkit.errors import ConfigError

    with pytest.raises(ConfigError, match="train.iters"):
        train(cfg_with(), tmp_path / "a", iters=-1, **fake_parts())
    assert not (tmp_path / "a").exists()
    train(cfg_with(iters=50), tmp_path / "b", iters=2, seed=7, checkpoint_every=1, progress=False,
          overrides=["train.seed=5"], **fake_parts())
    import yaml

    saved = yaml.safe_load(open(tmp_path / "b" / "config.yaml"))["train"]
    assert (saved["iters"], saved["seed"], saved["checkpoint_every"], saved["progress"]) == (2, 7, 1, False)


def test_a_trainer_subclass_chooses_the_step_by_the_model(tmp_path):
    """default_step(model) runs once the model is built (how a gradient-level
    weighting gets its own step without the caller naming it)."""
    from mtlkit.engine.runtime import run_config
    from mtlkit.engine.step import TrainStep
    from mtlkit.engine.trainer import Trainer

    seen = []

    class Counting(TrainStep):
        def __call__(self, state):
            seen.append(state.iter)
            return super().__call__(state)

    class ByModel(Trainer):
        def default_step(self, model):
            return Counting() if model.primary == "reg" else TrainStep()

    ByModel(run_config(cfg_with(iters=3)), str(tmp_path), **fake_parts()).run()
    assert seen == [0, 1, 2]
