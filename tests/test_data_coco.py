"""COCO + modalities, and the concat dataset."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mtlkit.data import build_dataset, collate
from mtlkit.data.coco import COCODetection
from mtlkit.data.concat import ConcatDataset
from mtlkit.errors import ConfigError, DataError

H, W = 12, 16


def make_coco(tmp_path, annotations=None, images=None):
    root = tmp_path / "coco"
    (root / "img").mkdir(parents=True)
    (root / "depth").mkdir()
    (root / "normals").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "img" / name, quality=95)
    # a: 16-bit PNG depth in mm and a PNG normal map; b: .npy depth and normals; c: nothing
    depth_mm = np.full((H, W), 2500, np.uint16)
    depth_mm[0, :] = 0
    Image.fromarray(depth_mm).save(root / "depth" / "a.png")
    npy = np.full((H, W), 1.25, np.float32)
    npy[:, 0] = np.nan
    np.save(root / "depth" / "b.npy", npy)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:] = np.rint((np.array([0.0, -0.6, -0.8]) + 1) * 127.5).astype(np.uint8)
    rgb[:, :2] = 0  # black: no normal
    Image.fromarray(rgb).save(root / "normals" / "a.png")
    nb = np.zeros((3, H, W), np.float32)
    nb[2] = -2.0  # not unit: renormalised
    nb[:, 0, 0] = 0
    np.save(root / "normals" / "b.npy", nb)
    data = {
        "images": images if images is not None else [
            {"id": 10, "file_name": "a.jpg", "width": W, "height": H, "scene": "office"},
            {"id": 20, "file_name": "b.png", "width": W, "height": H, "scene": "bedroom"},
            {"id": 30, "file_name": "c.png", "width": W, "height": H},
        ],
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 3, 4], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [5.5, 1, 2, 2]},
            {"id": 3, "image_id": 20, "category_id": 12, "bbox": [0, 0, 16, 12]},
            {"id": 4, "image_id": 20, "category_id": 12, "bbox": [0, 0, 5, 5], "iscrowd": 1},
        ],
        "categories": [{"id": 7, "name": "chair"}, {"id": 3, "name": "bed"}, {"id": 12, "name": "table"}],
    }
    (root / "ann.json").write_text(json.dumps(data))
    return root


def test_coco_with_modalities(tmp_path):
    root = make_coco(tmp_path)
    ds = COCODetection(str(root / "ann.json"), images=str(root / "img"), depth=str(root / "depth"),
                       normals=str(root / "normals"))
    assert len(ds) == 3
    assert ds.classes == ["bed", "chair", "table"]  # category ids 3, 7, 12 -> labels 1, 2, 3
    assert ds.scenes == ["bedroom", "office"]
    a, b, c = ds[0], ds[1], ds[2]
    assert a["image"].shape == (3, H, W) and a["image"].dtype == torch.float32
    assert a["labels"].tolist() == [2, 1]
    assert a["boxes"].tolist() == [[1, 2, 4, 6], [5.5, 1, 7.5, 3]]
    assert a["meta"]["id"] == 10 and a["meta"]["orig_size"] == (H, W)
    assert ds.scenes[int(a["scene"])] == "office"
    assert torch.allclose(a["depth"][0, 1:], torch.tensor(2.5)) and (a["depth"][0, 0] == 0).all()
    assert torch.equal(a["depth_mask"][0], a["depth"][0] > 0)
    assert not a["normals_mask"][0, :, :2].any() and a["normals_mask"][0, :, 2:].all()
    assert torch.allclose(a["normals"][:, 0, 5], torch.tensor([0.0, -0.6, -0.8]), atol=0.01)
    assert a["has"] == {"detection": True, "scene": True, "depth": True, "normals": True}
    # crowd annotation ignored
    assert b["labels"].tolist() == [3] and b["boxes"].tolist() == [[0, 0, 16, 12]]
    assert not b["depth_mask"][0, :, 0].any() and b["depth_mask"][0, :, 1:].all()
    assert torch.allclose(b["depth"][0, :, 1:], torch.tensor(1.25))
    assert torch.allclose(b["normals"][:, 3, 3], torch.tensor([0.0, 0.0, -1.0]))
    assert not b["normals_mask"][0, 0, 0]
    assert c["has"] == {"detection": True, "scene": False, "depth": False, "normals": False}
    assert "depth" not in c and "scene" not in c
    batch = collate([a, b, c])
    assert batch["has"]["depth"].tolist() == [True, True, False]
    assert batch["has"]["scene"].tolist() == [True, True, False]
    assert (batch["depth"][2] == 0).all() and not batch["depth_mask"][2].any()


def test_coco_scene_list_given_and_defaults_to_json_folder(tmp_path):
    root = make_coco(tmp_path)
    (root / "a.jpg").write_bytes((root / "img" / "a.jpg").read_bytes())
    ds = COCODetection(str(root / "ann.json"), scenes=["office", "kitchen", "bedroom"], size=1)
    assert len(ds) == 1 and int(ds[0]["scene"]) == 0
    assert ds[0]["has"]["depth"] is False


@pytest.mark.parametrize("ann, message", [
    ({"id": 9, "image_id": 10, "category_id": 7}, r"annotations\[1\] has no 'bbox'"),
    ({"id": 9, "image_id": 10, "category_id": 99, "bbox": [0, 0, 1, 1]}, r"annotations\[1\].category_id 99"),
    ({"id": 9, "image_id": 11, "category_id": 7, "bbox": [0, 0, 1, 1]}, r"annotations\[1\].image_id 11"),
    ({"id": 9, "image_id": 10, "category_id": 7, "bbox": [0, 0, 1]}, r"annotations\[1\].bbox must be 4 numbers"),
    ({"id": 9, "image_id": "10", "category_id": 7, "bbox": [0, 0, 1, 1]}, r"annotations\[1\].image_id has the wrong type"),
])
def test_coco_malformed_annotation_names_field_and_index(tmp_path, ann, message):
    good = {"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 3, 4]}
    root = make_coco(tmp_path, annotations=[good, ann])
    with pytest.raises(DataError, match=message):
        COCODetection(str(root / "ann.json"))


def test_coco_malformed_files(tmp_path):
    root = make_coco(tmp_path)
    (root / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        COCODetection(str(root / "bad.json"))
    (root / "bad.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match="missing 'categories'"):
        COCODetection(str(root / "bad.json"))
    with pytest.raises(DataError, match="no such folder"):
        COCODetection(str(root / "ann.json"), depth=str(root / "nope"))
    np.save(root / "depth" / "c.npy", np.ones((3, 3), np.float32))
    ds = COCODetection(str(root / "ann.json"), images=str(root / "img"), depth=str(root / "depth"))
    with pytest.raises(DataError, match=r"c.npy: depth of shape \(3, 3\)"):
        ds[2]
    bad_scene = make_coco(tmp_path / "x", images=[{"id": 1, "file_name": "a.jpg", "scene": 5}], annotations=[])
    with pytest.raises(DataError, match=r"images\[0\].scene"):
        COCODetection(str(bad_scene / "ann.json"), scenes=["a", "b"])


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, n, tag, classes=("a", "b"), scenes=("s",), with_depth=False):
        self.n, self.tag, self.classes, self.scenes, self.with_depth = n, tag, list(classes), list(scenes), with_depth

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        s = {"image": torch.full((3, 4, 4), float(self.tag)), "boxes": torch.zeros((0, 4)),
             "labels": torch.zeros((0,), dtype=torch.int64), "has": {"detection": True},
             "meta": {"id": 100 * self.tag + i, "source": f"list{self.tag}"}}
        if self.with_depth:
            s["depth"] = torch.ones(1, 4, 4)
            s["depth_mask"] = torch.ones(1, 4, 4, dtype=torch.bool)
            s["has"]["depth"] = True
        return s


def test_concat_plain_indexing_keeps_has():
    ds = ConcatDataset([ListDataset(3, 1), ListDataset(7, 2, with_depth=True)])
    assert len(ds) == 10 and ds.classes == ["a", "b"] and ds.scenes == ["s"]
    assert ds[2]["meta"]["source"] == "list1" and ds[3]["meta"]["source"] == "list2"
    assert ds[3]["meta"]["source_id"] == 200 and ds[3]["meta"]["id"] == 3
    assert ds[3]["meta"]["source_index"] == 1
    assert ds[-1]["meta"]["id"] == 9
    batch = collate([ds[0], ds[5]])
    assert batch["has"]["depth"].tolist() == [False, True]
    assert batch["has"]["detection"].tolist() == [True, True]
    assert torch.allclose(ds.sample_weights(), torch.full((10,), 0.1, dtype=torch.float64))
    with pytest.raises(IndexError):
        ds[10]


def test_concat_weights_set_each_epoch_mixture():
    small, big = ListDataset(3, 1), ListDataset(30, 2)
    ds = ConcatDataset([small, big], weights=[0.5, 0.5], size=20, seed=1)
    assert len(ds) == 20
    ids = lambda: [ds[i]["meta"]["id"] for i in range(len(ds))]
    epoch0 = ids()
    # 10 items of each source; the 3-sample source is cycled evenly (each sample 3 or 4 times)
    assert sum(i < 3 for i in epoch0) == 10
    counts = np.bincount([i for i in epoch0 if i < 3], minlength=3)
    assert counts.min() >= 3 and counts.max() <= 4
    # the big source contributes 10 distinct samples, a different subset next epoch
    big0 = {i for i in epoch0 if i >= 3}
    assert len(big0) == 10
    assert ids() == epoch0  # deterministic within an epoch
    ds.set_epoch(1)
    big1 = {i for i in ids() if i >= 3}
    assert len(big1) == 10 and big1 != big0
    ds.set_epoch(0)
    assert ids() == epoch0
    # quotas follow unequal weights exactly
    uneven = ConcatDataset([small, big], weights=[0.75, 0.25], size=40)
    assert uneven.quotas == [30, 10]
    w = uneven.sample_weights()
    assert w[:30].sum().item() == pytest.approx(0.75) and w[30:].sum().item() == pytest.approx(0.25)
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor(list(uneven.sampler(4000, g)))
    assert 0.72 < (draws < 30).float().mean().item() < 0.78
    # the engine's way: any uniform order over the index space gives the mixture
    from mtlkit.data import TransformedDataset

    wrapped = TransformedDataset(ds, None)
    wrapped.set_epoch(1)
    assert ds.epoch == 1


def test_concat_must_agree_on_classes_and_scenes():
    with pytest.raises(ConfigError, match="disagree on classes"):
        ConcatDataset([ListDataset(1, 1), ListDataset(1, 2, classes=("a", "c"))])
    with pytest.raises(ConfigError, match="disagree on scenes"):
        ConcatDataset([ListDataset(1, 1), ListDataset(1, 2, scenes=("t",))])
    # a source without scene labels is compatible
    ok = ConcatDataset([ListDataset(1, 1, scenes=()), ListDataset(1, 2)])
    assert ok.scenes == ["s"]
    with pytest.raises(ConfigError, match="2 weights for 1 sources"):
        ConcatDataset([ListDataset(1, 1)], weights=[1, 2])
    with pytest.raises(ConfigError, match="non-negative"):
        ConcatDataset([ListDataset(1, 1), ListDataset(1, 2)], weights=[1, -1])
    with pytest.raises(ConfigError, match=r"sources\[1\] is empty"):
        ConcatDataset([ListDataset(1, 1), ListDataset(0, 2)], weights=[1, 1])


def test_concat_from_config_through_the_registry(tmp_path):
    root = make_coco(tmp_path)
    src = {"type": "coco", "ann_file": str(root / "ann.json"), "images": str(root / "img"),
           "depth": str(root / "depth")}
    ds = build_dataset({"type": "concat", "sources": [src, dict(src, size=1)], "weights": [1, 1]})
    assert len(ds) == 4 and ds.classes == ["bed", "chair", "table"] and ds.quotas == [2, 2]
    assert [ds[i]["meta"]["source_index"] for i in range(4)] == [0, 0, 1, 1]
    assert ds[3]["meta"]["id"] == 3 and ds[3]["meta"]["source_id"] == 10
    with pytest.raises(ConfigError, match=r"unknown key 'concat.sources\[1\].sise' \(did you mean 'size'\?\)"):
        build_dataset({"type": "concat", "sources": [src, dict(src, sise=1)]})
