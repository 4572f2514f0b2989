"""Issue 19, part 2: configs accepted but wrong, or refused unclearly. YAML
(a key given twice, YAML 1.1 number forms, an alias bomb, a nesting thousands
deep, a pipe as the config), values (negative task weights, NaN / infinite
numbers, extreme image sizes, seeds, sizes), and what the run's data must
allow (an empty split, a batch larger than the split, evaluations without a
validation split): one ConfigError line, before anything is written."""

import copy
import os
import threading

import pytest

from mtlkit.config import load_config, run_config
from mtlkit.engine import train
from mtlkit.errors import ConfigError, DataError
from _engine_fakes import ENGINE_CFG, fake_parts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROCK = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")


def _write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- YAML -------------------------------------------------------------------------------------
def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    path = _write(tmp_path, "train:\n  iters: 10\n  seed: 1\n  iters: 20\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: invalid YAML at line 4, column 3: the key 'iters' is given "
                                          r"twice in one mapping \(first at line 2\)"):
        load_config(path)


def test_merge_keys_still_work(tmp_path):
    path = _write(tmp_path, "train:\n  optimizer: &opt {name: sgd, lr: 0.1}\n"
                            "eval: {}\nname: x\ndescription: y\n")
    assert load_config(path)["train"]["optimizer"]["lr"] == 0.1


@pytest.mark.parametrize("text, meant", [("1:30", 90), ("0x10", 16), ("017", 15), ("0b101", 5)])
def test_yaml_1_1_number_forms_are_not_numbers(tmp_path, text, meant):
    path = _write(tmp_path, f"train: {{iters: {text}}}\n")
    with pytest.raises(ConfigError, match=f"train.iters: expected an integer, got str '{text}'"):
        load_config(path)
    with pytest.raises(ConfigError, match=f"train.iters: expected an integer, got str '{text}'"):
        load_config({}, [f"train.iters={text}"])


def test_json_and_yaml_1_2_numbers_still_read_as_numbers(tmp_path):
    path = _write(tmp_path, "train: {iters: 2e2, seed: -0, optimizer: {lr: .5e-2, weight_decay: 1.}}\n")
    cfg = load_config(path)
    assert cfg["train"]["iters"] == 200 and cfg["train"]["optimizer"]["lr"] == 0.005
    assert cfg["train"]["optimizer"]["weight_decay"] == 1.0


def _bomb(levels=9):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\ndescription: *a{levels - 1}\n"


def _within(seconds, fn):
    """Run ``fn``; fail (not hang) when it takes longer than ``seconds``."""
    result = {}

    def target():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return result.get("error")


def test_an_alias_bomb_is_refused_not_a_hang(tmp_path):
    path = _write(tmp_path, _bomb())
    error = _within(30, lambda: load_config(path))
    assert isinstance(error, ConfigError) and "expands to more than 100,000 values" in str(error), error
    error = _within(30, lambda: load_config({}, ["description=" + _bomb().replace("\n", ", ")
                                                 .join("{}").replace("description: ", "d: ")]))
    assert isinstance(error, ConfigError), error


def test_a_self_referencing_alias_is_refused(tmp_path):
    path = _write(tmp_path, "description: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="refers to a mapping or list that contains it"):
        load_config(path)


def test_deep_nesting_is_a_config_error_not_a_recursion_error(tmp_path):
    path = _write(tmp_path, "description: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: not a config: it is nested more than 64 levels deep"):
        load_config(path)
    with pytest.raises(ConfigError, match="nested more than 64 levels deep"):
        load_config({}, ["description=" + "[" * 3000 + "]" * 3000])


def test_a_pipe_as_the_config_is_named_not_read(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    error = _within(20, lambda: load_config(str(fifo)))
    assert isinstance(error, ConfigError) and "is a named pipe (FIFO), expected a config YAML file" in str(error)
    base = _write(tmp_path, f"_base_: {fifo}\n", name="child.yaml")
    error = _within(20, lambda: load_config(base))
    assert isinstance(error, ConfigError) and "named pipe" in str(error), error


# -- values -------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, needle", [
    ("model.tasks.scene.weight=-1", "model.tasks.scene.weight: expected a number >= 0, got -1"),
    ("train.optimizer.lr=.inf", "train.optimizer.lr: expected a finite number, got inf"),
    ("train.clip_grad_norm=-.inf", "train.clip_grad_norm: expected a finite number, got -inf"),
    ("data.train.scene_weights=[.nan,1,1,1,1,1]", r"data.train.scene_weights\[0\]: expected a number, got NaN"),
    ("data.train.scene_weights=[1,-1,1,1,1,1]", "data.train.scene_weights: expected a number >= 0"),
    ("data.image_size=[1,100000]", r"data.image_size: \[1, 100000\] is no picture a detector learns from"),
    ("data.image_size=[10000,10000]", "expected sides up to 8192 pixels"),
    ("train.seed=-1", r"train.seed: expected a number in \[0, 9223372036854775807\], got -1"),
    ("train.seed=100000000000000000000000", "train.seed: expected a number in"),
    ("data.train.size=100000000000000", r"data.train.size: expected a number in \[0, 10000000\]"),
    ("data.train.seed=-3", "data.train.seed: expected a number in"),
])
def test_values_accepted_before_are_refused_naming_the_field(override, needle):
    with pytest.raises(ConfigError, match=needle):
        run_config(ROCK, [override])


@pytest.mark.parametrize("flags, needle", [
    (["--checkpoint-every", "-1"], "train.checkpoint_every: expected a number >= 0, got -1"),
    (["--seed", "-1"], "train.seed: expected a number in"),
    (["--seed", str(2 ** 70)], "train.seed: expected a number in"),
])
def test_train_flags_are_checked_like_overrides(tmp_path, capsys, flags, needle):
    from mtlkit import cli

    out = tmp_path / "run"
    assert cli.main(["train", ROCK, "--out", str(out), "--iters", "1", *flags]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


# -- the run's data -----------------------------------------------------------------------------
def cfg_with(**train_options):
    cfg = copy.deepcopy(ENGINE_CFG)
    cfg["train"].update(train_options)
    return cfg


def test_a_batch_larger_than_the_split_is_refused_before_anything(tmp_path):
    parts = fake_parts(n_train=3)
    with pytest.raises(ConfigError, match=r"data.batch_size is 4 but data.train holds 3 sample\(s\): a batch "
                                          r"never fills; lower data.batch_size to at most 3"):
        train(cfg_with(iters=2), tmp_path / "run", **parts)
    assert not (tmp_path / "run").exists()


def test_empty_splits_are_refused_before_anything(tmp_path):
    with pytest.raises(DataError, match="data.train holds no sample"):
        train(cfg_with(iters=2), tmp_path / "run", **fake_parts(n_train=0))
    with pytest.raises(DataError, match=r"data.val \(the split evaluated, eval.split\) holds no sample"):
        train(cfg_with(iters=2), tmp_path / "run", **fake_parts(n_val=0))
    assert not (tmp_path / "run").exists()


def test_a_split_of_one_batch_trains(tmp_path):
    train(cfg_with(iters=2), tmp_path / "run", **fake_parts(n_train=4))
    assert (tmp_path / "run" / "last.pt").is_file()


def test_eval_every_without_a_validation_split_is_refused(tmp_path):
    parts = fake_parts()
    parts["val_dataset"] = None
    with pytest.raises(ConfigError, match=r"train.eval_every is 2 but there is no data.val to evaluate on"):
        train(cfg_with(iters=4, eval_every=2), tmp_path / "run", **parts)
    assert not (tmp_path / "run").exists()
    train(cfg_with(iters=2), tmp_path / "run", **parts)  # no evaluation asked: trains
