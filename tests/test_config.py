"""Config loading: _base_ inheritance, overrides, validation with clear errors."""

import os

import pytest
import torch
import yaml

import mtlkit
import mtlkit.registry as registry_module
from mtlkit.config import apply_overrides, load_config, merge, save_config, validate_config
from mtlkit.errors import ConfigError
from mtlkit.fusion import Fusion
from mtlkit.registry import Registry
from mtlkit.task import AuxiliaryTask


# Minimal real components (the registry checks the kind): validation reads
# only their defaults and choices.
class _Residual(Fusion):
    defaults = {}

    def forward(self, x, decoded):  # the registry refuses a fusion without one
        return x


class _Gated(Fusion):
    defaults = {"per": "channel"}
    choices = {"per": ["channel", "pixel"]}

    def forward(self, x, decoded):
        return x


class _Depth(AuxiliaryTask):
    defaults = {"loss": "berhu", "channels": 128}


class _Synthetic(torch.utils.data.Dataset):
    defaults = {"split": "train", "size": 400, "seed": 0}


class _StubPlugin:
    @mtlkit.hookimpl
    def mtlkit_register_fusions(self, registry):
        registry.add("residual", _Residual)
        registry.add("gated", _Gated)

    @mtlkit.hookimpl
    def mtlkit_register_tasks(self, registry):
        registry.add("depth", _Depth)

    @mtlkit.hookimpl
    def mtlkit_register_datasets(self, registry):
        registry.add("synthetic", _Synthetic)


@pytest.fixture
def stub_registry(monkeypatch):
    registry = Registry()
    registry.register_plugin(_StubPlugin(), "stub")
    monkeypatch.setattr(registry_module, "_REGISTRY", registry)
    return registry


def _write(path, data):
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_merge_is_recursive_and_replaces_leaves():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    top = {"a": {"c": [3]}, "e": 2}
    assert merge(base, top) == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # inputs untouched


def test_base_inheritance_in_order_then_file(tmp_path, stub_registry):
    (tmp_path / "_base_").mkdir()
    _write(tmp_path / "_base_" / "one.yaml", {"model": {"fusion": "gated", "tasks": {"depth": {}}},
                                              "data": {"batch_size": 4}})
    _write(tmp_path / "_base_" / "two.yaml", {"data": {"batch_size": 16, "num_workers": 2}})
    path = _write(tmp_path / "rock.yaml", {"_base_": ["_base_/one.yaml", "_base_/two.yaml"],
                                           "model": {"tasks": {"depth": {"weight": 0.5}}}})
    cfg = load_config(path)
    assert cfg["data"]["batch_size"] == 16 and cfg["data"]["num_workers"] == 2
    assert cfg["model"]["fusion"] == {"name": "gated"}
    assert cfg["model"]["tasks"] == {"depth": {"weight": 0.5}}
    assert "_base_" not in cfg


def test_overrides_are_yaml_typed(stub_registry):
    cfg = load_config({"model": {"fusion": "gated"}, "data": {"batch_size": 4}},
                      ["data.batch_size=32", "model.fusion.per=pixel", "data.image_size=[64, 96]"])
    assert cfg["data"]["batch_size"] == 32
    assert cfg["model"]["fusion"] == {"name": "gated", "per": "pixel"}
    assert cfg["data"]["image_size"] == [64, 96]
    assert apply_overrides({}, ["a.b.c=1.5", "a.d=true", "a.e=name"]) == {
        "a": {"b": {"c": 1.5}, "d": True, "e": "name"}}


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        apply_overrides({}, ["data.batch_size"])
    with pytest.raises(ConfigError, match="'data.batch_size' is a int, not a section"):
        apply_overrides({"data": {"batch_size": 4}}, ["data.batch_size.x=1"])


def test_unknown_plugin_name_suggests_the_closest(stub_registry):
    with pytest.raises(ConfigError) as info:
        load_config({"model": {"fusion": "residul"}})
    assert "model.fusion: unknown fusion 'residul' (did you mean 'residual'?)" in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown task 'detph' \(did you mean 'depth'\?\)"):
        load_config({"model": {"tasks": {"detph": {}}}})
    with pytest.raises(ConfigError, match=r"data.train.type: unknown dataset 'synthtic'"):
        load_config({"data": {"train": {"type": "synthtic"}}})


def test_unknown_keys_suggest_the_closest(stub_registry):
    with pytest.raises(ConfigError, match=r"unknown key 'modl' \(did you mean 'model'\?\)"):
        load_config({"modl": {}})
    with pytest.raises(ConfigError, match=r"unknown key 'model.fusoin' \(did you mean 'fusion'\?\)"):
        load_config({"model": {"fusoin": "residual"}})
    with pytest.raises(ConfigError, match=r"unknown key 'model.tasks.depth.los' \(did you mean 'loss'\?\)"):
        load_config({"model": {"tasks": {"depth": {"los": "huber"}}}})
    with pytest.raises(ConfigError, match=r"unknown key 'data.train.sze' \(did you mean 'size'\?\)"):
        load_config({"data": {"train": {"type": "synthetic", "sze": 3}}})


def test_wrong_types_name_field_and_expected_type(stub_registry):
    with pytest.raises(ConfigError, match=r"model.tasks.depth.channels: expected an integer, got str 'x'"):
        load_config({"model": {"tasks": {"depth": {"channels": "x"}}}})
    with pytest.raises(ConfigError, match=r"model.tasks.depth.weight: expected a number, got bool True"):
        load_config({"model": {"tasks": {"depth": {"weight": True}}}})
    with pytest.raises(ConfigError, match=r"data.batch_size: expected an integer"):
        load_config({"data": {"batch_size": 2.5}})
    with pytest.raises(ConfigError, match=r"model.fusion.per: invalid value 'pixl' \(did you mean 'pixel'\?\)"):
        load_config({"model": {"fusion": {"name": "gated", "per": "pixl"}}})
    with pytest.raises(ConfigError, match=r"data.image_size: expected \[height, width\]"):
        load_config({"data": {"image_size": [0, 3]}})
    # an int is a valid float
    assert load_config({"model": {"tasks": {"depth": {"weight": 2}}}})["model"]["tasks"]["depth"]["weight"] == 2


def test_null_task_is_dropped(stub_registry):
    cfg = load_config({"model": {"tasks": {"depth": {"weight": 1.0}}}}, ["model.tasks.depth=null"])
    assert cfg["model"]["tasks"] == {}


def test_file_errors_name_the_file(tmp_path, stub_registry):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = _write(tmp_path / "bad.yaml", "model:\n  fusion: [residual\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line \d+"):
        load_config(bad)
    listy = _write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="a config must be a YAML mapping"):
        load_config(listy)
    missing_base = _write(tmp_path / "mb.yaml", {"_base_": "missing.yaml"})
    with pytest.raises(ConfigError, match="_base_ file not found: missing.yaml"):
        load_config(missing_base)
    _write(tmp_path / "a.yaml", {"_base_": "b.yaml"})
    _write(tmp_path / "b.yaml", {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match="circular _base_ inheritance"):
        load_config(str(tmp_path / "a.yaml"))


def test_unsafe_yaml_is_refused(tmp_path, stub_registry):
    evil = _write(tmp_path / "evil.yaml", "model: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(evil)


def test_save_config_roundtrip(tmp_path, stub_registry):
    cfg = validate_config({"model": {"fusion": "residual"}, "data": {"image_size": (64, 96)}})
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert load_config(str(path)) == {"model": {"fusion": {"name": "residual"}, "tasks": {}},
                                      "data": {"image_size": [64, 96]}}
    assert [p for p in os.listdir(path.parent) if p.endswith(".tmp")] == []


def test_a_dataset_is_selected_by_name_or_by_type_its_alias(stub_registry):
    by_type = validate_config({"data": {"train": {"type": "synthetic", "size": 10}}})
    by_name = validate_config({"data": {"train": {"name": "synthetic", "size": 10}}})
    # the key written is kept (resolved configs of existing runs stay identical)
    assert by_type["data"]["train"] == {"type": "synthetic", "size": 10}
    assert by_name["data"]["train"] == {"name": "synthetic", "size": 10}
    assert validate_config({"data": {"train": "synthetic"}})["data"]["train"] == {"type": "synthetic"}
    # the same messages whichever key selects
    for key in ("type", "name"):
        with pytest.raises(ConfigError, match=rf"data.train.{key}: unknown dataset 'synthetc' "
                                              r"\(did you mean 'synthetic'\?\)"):
            validate_config({"data": {"train": {key: "synthetc"}}})
        with pytest.raises(ConfigError, match=r"unknown key 'data.train.sze' \(did you mean 'size'\?\)"):
            validate_config({"data": {"train": {key: "synthetic", "sze": 3}}})
    with pytest.raises(ConfigError, match="data.train: missing 'name' or 'type'"):
        validate_config({"data": {"train": {"size": 3}}})
    with pytest.raises(ConfigError, match="data.train: name: 'synthetic' and type: 'coco' select different"):
        validate_config({"data": {"train": {"name": "synthetic", "type": "coco"}}})
    assert validate_config({"data": {"train": {"name": "synthetic", "type": "synthetic"}}})


def test_merge_switches_plugin_whichever_selector_each_side_writes():
    base = {"train": {"type": "synthetic", "size": 400}}
    assert merge(base, {"train": {"name": "coco", "ann_file": "a.json"}}) == \
        {"train": {"name": "coco", "ann_file": "a.json"}}
    assert merge(base, {"train": {"name": "synthetic", "size": 5}}) == \
        {"train": {"type": "synthetic", "name": "synthetic", "size": 5}}


def test_the_option_rule_is_imported_by_config_and_data_without_a_cycle():
    import subprocess
    import sys

    code = ("import sys, mtlkit.data.transforms, mtlkit.data.options; "
            "assert 'mtlkit.config' not in sys.modules, 'data imports config'; "
            "import mtlkit.config as c, mtlkit.options as o; assert c.type_ok is o.type_ok")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
