"""Issue 10: a fuzz test over the config loader: random keys, types and
overrides give a validated config or one ConfigError line, never anything else."""

import os

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlkit.config import load_config, validate_config
from mtlkit.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROCK = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")
BASE = load_config(ROCK)
RAW = load_config(ROCK, validate=False)  # merged, not validated: overrides go on top of it

KEYS = ["train.iters", "train.optimizer.lr", "train.optimizer.name", "train.optimizer.betas",
        "train.schedule.milestones", "train.ema.decay", "train.device", "train.accumulate",
        "data.batch_size", "data.num_workers", "data.image_size", "data.train.size", "data.vall.size",
        "data.train.type", "data.augment", "eval.iou_threshold", "eval.top_k", "eval.split",
        "model.fusion", "model.fusion.name", "model.backbone", "model.tasks.detection.num_classes",
        "model.tasks.detection.iou_threshold", "model.tasks.depth", "model.tasks.scene.num_classes",
        "model.block.channels", "name", "train", "model", "data"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.integers(-3, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.sampled_from(["1e-3", "5E4", ".nan", "-.inf", "residual", "gated", "sgd", "val", "[1, 2]",
                     "{a: 1}", "null", "~", "yes", "0x10", "1_000", "[64, 96]", "'quoted'", "{", "]"]),
    st.text(max_size=6),
)
key_strategy = st.one_of(st.sampled_from(KEYS), st.text(min_size=0, max_size=12))


def _as_text(value):
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _clear(exc):
    message = str(exc)
    return isinstance(exc, ConfigError) and message and "\n" not in message and "Traceback" not in message


@SETTINGS
@given(overrides=st.lists(st.tuples(key_strategy, scalars), max_size=4))
def test_fuzz_overrides(overrides):
    texts = [f"{k}={_as_text(v)}" for k, v in overrides]
    try:
        cfg = load_config(RAW, texts)
    except ConfigError as exc:
        assert _clear(exc), repr(exc)
        return
    assert isinstance(cfg, dict)
    # a validated config validates again to itself (normalised)
    assert validate_config(cfg) == cfg


json_like = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=3),
    st.dictionaries(st.one_of(st.sampled_from(["model", "data", "train", "eval", "name", "type",
                                               "backbone", "tasks", "detection", "optimizer", "lr",
                                               "train", "val", "size", "split", "fusion"]),
                              st.text(max_size=5)), children, max_size=4)), max_leaves=12)


@SETTINGS
@given(section=st.sampled_from(["model", "data", "train", "eval"]), value=json_like)
def test_fuzz_sections(section, value):
    cfg = dict(BASE)
    cfg[section] = value
    try:
        validate_config(cfg)
    except ConfigError as exc:
        assert _clear(exc), repr(exc)


@SETTINGS
@given(text=st.text(max_size=60))
def test_fuzz_yaml_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert _clear(exc), repr(exc)
