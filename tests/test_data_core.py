"""collate, build_dataset / build_split, TransformedDataset, build_loader."""

import pytest
import torch

from mtlkit.data import TransformedDataset, build_dataset, build_loader, build_split, collate
from mtlkit.data.transforms import Resize
from mtlkit.errors import ConfigError, DataError
from mtlkit.registry import get_registry


def sample(i, depth=True, size=(4, 6), boxes=1):
    s = {
        "image": torch.full((3, *size), i / 10),
        "boxes": torch.tensor([[0.0, 0, 2, 2]] * boxes).reshape(-1, 4),
        "labels": torch.ones(boxes, dtype=torch.int64),
        "scene": torch.tensor(i),
        "has": {"detection": True, "scene": True},
        "meta": {"id": i, "source": "t", "orig_size": size},
    }
    if depth:
        s["depth"] = torch.full((1, *size), float(i + 1))
        s["depth_mask"] = torch.ones((1, *size), dtype=torch.bool)
        s["has"]["depth"] = True
    return s


def test_collate_stacks_and_fills_missing_modalities():
    batch = collate([sample(0), sample(1, depth=False, boxes=0), sample(2, boxes=3)])
    assert batch["image"].shape == (3, 3, 4, 6)
    assert batch["scene"].tolist() == [0, 1, 2] and batch["scene"].dtype == torch.int64
    assert batch["depth"].shape == (3, 1, 4, 6)
    assert (batch["depth"][1] == 0).all() and not batch["depth_mask"][1].any()
    assert batch["depth_mask"].dtype == torch.bool and batch["depth_mask"][2].all()
    assert torch.equal(batch["depth"][2], torch.full((1, 4, 6), 3.0))
    assert batch["has"]["depth"].tolist() == [True, False, True]
    assert batch["has"]["scene"].dtype == torch.bool and batch["has"]["scene"].all()
    assert [len(b) for b in batch["boxes"]] == [1, 0, 3]
    assert [b.shape for b in batch["labels"]] == [(1,), (0,), (3,)]
    assert [m["id"] for m in batch["meta"]] == [0, 1, 2]
    no_boxes = dict(sample(3))
    del no_boxes["boxes"], no_boxes["labels"]
    b = collate([no_boxes])
    assert b["boxes"][0].shape == (0, 4) and b["labels"][0].dtype == torch.int64


def test_collate_refuses_mixed_sizes():
    with pytest.raises(DataError, match="image_size"):
        collate([sample(0), sample(1, size=(5, 6))])
    with pytest.raises(ValueError):
        collate([])


class Tiny(torch.utils.data.Dataset):
    classes = ["a"]
    scenes = ["x", "y", "z", "w"]

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return sample(i, size=(8, 10))


def test_transformed_dataset_is_reproducible_per_seed_epoch_index():
    def jitter(s, rng):
        s = dict(s)
        s["image"] = s["image"] + float(rng.random())
        return s

    ds = TransformedDataset(Tiny(), jitter, seed=3)
    assert ds.classes == ["a"] and ds.scenes[1] == "y"  # forwarded
    a = ds[1]["image"]
    assert torch.equal(ds[1]["image"], a)
    # each index draws its own jitter (compared as jitters: the images differ anyway)
    jitter_of = lambda i: float((ds[i]["image"] - Tiny()[i]["image"]).mean())
    assert abs(jitter_of(2) - jitter_of(1)) > 1e-6
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["image"], a)
    ds.set_epoch(0)
    assert torch.equal(ds[1]["image"], a)
    assert not torch.equal(TransformedDataset(Tiny(), jitter, seed=4)[1]["image"], a)
    import pickle

    clone = pickle.loads(pickle.dumps(TransformedDataset(Tiny(), Resize((4, 5)), seed=3)))
    assert clone.seed == 3 and clone.classes == ["a"] and clone[0]["image"].shape == (3, 4, 5)


def test_build_loader_batches_with_collate_and_seeded_shuffle():
    ds = TransformedDataset(Tiny(), Resize((4, 5)))
    order = lambda seed: [int(b["scene"][0]) for b in build_loader(ds, 1, shuffle=True, seed=seed)]
    assert order(0) == order(0)
    assert sorted(order(0)) == [0, 1, 2, 3]
    # shuffled, by the seed: not the dataset order for every seed, not one order for all seeds
    orders = {tuple(order(seed)) for seed in range(8)}
    assert len(orders) > 1 and orders != {(0, 1, 2, 3)}
    batches = list(build_loader(ds, 3, drop_last=False))
    assert batches[0]["image"].shape == (3, 3, 4, 5) and batches[1]["image"].shape[0] == 1
    assert torch.allclose(batches[0]["boxes"][0], torch.tensor([[0.0, 0, 1, 1]]))
    sampler = torch.utils.data.SequentialSampler(range(2))
    assert len(list(build_loader(ds, 1, shuffle=True, sampler=sampler))) == 2


def test_build_dataset_errors():
    with pytest.raises(ConfigError, match="missing 'type'"):
        build_dataset({"root": "x"}, where="data.train")
    with pytest.raises(ConfigError, match=r"data.train.type: unknown dataset 'nyuv3'.*did you mean 'nyuv2'"):
        build_dataset({"type": "nyuv3"}, where="data.train")
    with pytest.raises(ConfigError, match=r"unknown key 'dataset.splt' \(did you mean 'split'\?\)"):
        build_dataset({"type": "nyuv2", "splt": "train"})
    with pytest.raises(ConfigError, match="dataset.depth: expected a boolean, got int 1"):
        build_dataset({"type": "nyuv2", "depth": 1})
    with pytest.raises(ConfigError, match="dataset.depth_scale: expected a number, got str 'mm'"):
        build_dataset({"type": "coco", "ann_file": "x.json", "depth_scale": "mm"})


def test_builtin_datasets_are_registered_with_documented_defaults():
    reg = get_registry()
    for name in ("nyuv2", "coco", "concat"):
        cls = reg.get("dataset", name)
        assert isinstance(cls.defaults, dict) and cls.defaults
        for option in cls.defaults:
            assert option in cls.__doc__, f"{name}: option '{option}' undocumented"
    assert reg.entry("dataset", "nyuv2").origin.distribution == "mtlkit"


def test_build_split_wires_dataset_and_transforms(monkeypatch):
    import types

    from mtlkit import hookimpl
    from mtlkit import registry as registry_module

    @hookimpl
    def mtlkit_register_datasets(registry):
        registry.add("tiny_test_only", Tiny)

    fresh = registry_module.Registry()
    fresh.register_plugin(types.SimpleNamespace(mtlkit_register_datasets=mtlkit_register_datasets), "tiny")
    monkeypatch.setattr(registry_module, "_REGISTRY", fresh)
    cfg = {"train": {"type": "tiny_test_only"}, "val": {"type": "tiny_test_only"},
           "image_size": [4, 5], "augment": {"flip": 1.0, "crop": False, "expand": 0.0, "photometric": 0.0}}
    train = build_split(cfg, "train")
    val = build_split(cfg, "val")
    assert train[0]["image"].shape == (3, 4, 5)
    # train: flipped (flip=1.0); val: only resized
    assert torch.allclose(train[0]["boxes"], torch.tensor([[4.0, 0, 5, 1]]))
    assert torch.allclose(val[0]["boxes"], torch.tensor([[0.0, 0, 1, 1]]))
    with pytest.raises(ConfigError, match="data.test is missing"):
        build_split(cfg, "test")
    with pytest.raises(ConfigError, match="unknown key 'data.augment.flop'"):
        build_split(dict(cfg, augment={"flop": 1}), "train")


def test_build_dataset_by_name_and_a_validated_config_is_built_as_it_is(monkeypatch):
    import types

    from mtlkit import hookimpl
    from mtlkit import registry as registry_module
    from mtlkit.config import resolve_config

    @hookimpl
    def mtlkit_register_datasets(registry):
        registry.add("tiny_test_only", Tiny)

    fresh = registry_module.Registry()
    fresh.register_plugin(types.SimpleNamespace(mtlkit_register_datasets=mtlkit_register_datasets), "tiny")
    monkeypatch.setattr(registry_module, "_REGISTRY", fresh)
    assert isinstance(build_dataset({"name": "tiny_test_only"}), Tiny)
    with pytest.raises(ConfigError, match=r"data.train.name: unknown dataset 'tiny'"):
        build_dataset({"name": "tiny"}, where="data.train")
    data = {"train": {"name": "tiny_test_only"}, "image_size": [4, 5],
            "augment": {"flip": 1.0, "crop": False, "expand": 0.0, "photometric": 0.0}}
    checked = resolve_config({"data": data})
    a = build_split(checked, "train")
    b = build_split(data, "train")
    assert torch.equal(a[0]["image"], b[0]["image"]) and torch.equal(a[0]["boxes"], b[0]["boxes"])
    # the resolved config is built as it is: no second check (its validation made it)
    from mtlkit.options import Schema

    def no_second_check(*args, **kwargs):
        raise AssertionError("validated options checked again")

    monkeypatch.setattr(Schema, "validate", no_second_check)
    build_split(checked, "train")[0]
    with pytest.raises(AssertionError, match="checked again"):  # a plain dict is checked, once
        build_split(data, "train")
