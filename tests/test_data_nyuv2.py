"""NYUv2 preparation from files in the official layout, and the cached dataset."""

import argparse
import json
import os

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from mtlkit.data import nyuv2 as nyu
from mtlkit.data.geometry import normals_from_depth, nyu_intrinsics
from mtlkit.errors import DataError

N, H, W = 6, 24, 32
# Names in the file: a few non-detection classes, the 19 classes in another order.
NAMES = ["wall", "floor"] + list(reversed(nyu.NYU_CLASSES)) + ["cabinet"]
SCENE_TYPES = ["kitchen", "bedroom", "kitchen", "office", "bedroom", "living_room"]
SCENES = ["kitchen_0001", "bedroom_0002", "kitchen_0001", "office_0004", "bedroom_0003", "living_room_0007"]


def value_of(name):
    return NAMES.index(name) + 1


def make_arrays(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(N, H, W, 3), dtype=np.uint8)
    # a tilted plane with a known normal, at a different distance per image
    fx, fy, cx, cy = nyu_intrinsics(H, W)
    n = np.array([0.3, -0.5, -0.8])
    n /= np.linalg.norm(n)
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    ray = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u, dtype=float)], -1)
    depths = np.stack([(-2.0 - 0.3 * i) / (ray @ n) for i in range(N)]).astype(np.float32)
    labels = np.zeros((N, H, W), np.uint16)
    instances = np.zeros((N, H, W), np.uint8)
    labels[:, :3, :] = value_of("wall")  # not a detection class: no box
    instances[:, :3, :] = 1
    # image 0: two chairs and a table; image 2: a night stand; image 3: garbage bin
    labels[0, 5:10, 2:8] = value_of("chair"); instances[0, 5:10, 2:8] = 1
    labels[0, 12:20, 3:5] = value_of("chair"); instances[0, 12:20, 3:5] = 2
    labels[0, 15:22, 20:30] = value_of("table"); instances[0, 15:22, 20:30] = 1
    labels[0, 21, 6] = value_of("chair"); instances[0, 21, 6] = 1  # chair 1 also has a far pixel
    labels[2, 4:6, 10:12] = value_of("night stand"); instances[2, 4:6, 10:12] = 3
    labels[3, 8:9, 0:32] = value_of("garbage bin"); instances[3, 8:9, 0:32] = 1
    return images, depths, labels, instances, n


def write_strings(f, name, values):
    group = f.require_group("#refs#")
    refs = []
    for k, value in enumerate(values):
        # MATLAB char arrays: uint16 codes, stored transposed (len, 1)
        ds = group.create_dataset(f"{name}_{k}", data=np.array([[ord(c)] for c in value], np.uint16))
        ds.attrs["MATLAB_class"] = np.bytes_("char")
        refs.append(ds.ref)
    f.create_dataset(name, data=np.array(refs, dtype=h5py.ref_dtype).reshape(1, -1))


def write_mat(path, arrays=None, drop=(), overrides=None, names=None):
    images, depths, labels, instances, _ = arrays or make_arrays()
    data = {
        "images": images.transpose(0, 3, 2, 1),  # (N, 3, W, H) as MATLAB writes it
        "depths": depths.transpose(0, 2, 1),
        "labels": labels.transpose(0, 2, 1),
        "instances": instances.transpose(0, 2, 1),
    }
    data.update(overrides or {})
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            if key not in drop:
                f.create_dataset(key, data=value)
        for key, values in (("names", names or NAMES), ("sceneTypes", SCENE_TYPES), ("scenes", SCENES)):
            if key not in drop:
                write_strings(f, key, values)
    return path


def write_splits(path, train=(1, 3, 4, 6), test=(2, 5)):
    scipy.io.savemat(path, {"trainNdxs": np.array(train, float).reshape(-1, 1),
                            "testNdxs": np.array(test, float).reshape(-1, 1)})
    return path


@pytest.fixture
def files(tmp_path):
    return str(write_mat(tmp_path / "labeled.mat")), str(write_splits(tmp_path / "splits.mat")), tmp_path


def test_boxes_from_maps_one_box_per_class_instance_pair():
    _, _, labels, instances, _ = make_arrays()
    values = [value_of(c) for c in nyu.NYU_CLASSES]
    boxes, lab = nyu.boxes_from_maps(labels[0], instances[0], values)
    chair, table = nyu.NYU_CLASSES.index("chair") + 1, nyu.NYU_CLASSES.index("table") + 1
    assert lab.tolist() == [chair, chair, table]
    assert boxes.tolist() == [[2, 5, 8, 22], [3, 12, 5, 20], [20, 15, 30, 22]]
    empty, empty_labels = nyu.boxes_from_maps(labels[1], instances[1], values)
    assert empty.shape == (0, 4) and empty_labels.shape == (0,)


def test_normals_from_depth_recovers_a_plane_and_masks_edges():
    _, depths, _, _, n = make_arrays()
    normals, mask = normals_from_depth(depths[0], *nyu_intrinsics(H, W))
    assert mask[2:-2, 2:-2].all() and not mask[:2].any() and not mask[:, -2:].any()
    assert np.allclose(normals[mask], n, atol=1e-4)
    # a frontal step: normals (0, 0, -1) on both sides, invalid across the edge
    step = np.full((H, W), 2.0, np.float32)
    step[:, 16:] = 3.0
    step[6, 6] = 0  # unknown depth
    normals, mask = normals_from_depth(step, *nyu_intrinsics(H, W))
    assert not mask[:, 14:18].any()
    assert mask[9:-5, 4:12].all() and mask[5:-5, 20:28].all()
    assert np.allclose(normals[mask], [0, 0, -1], atol=1e-5)
    # the unknown pixel and the pixels that difference across it
    assert not mask[6, 6] and not mask[6, 4] and not mask[6, 8] and not mask[4, 6] and not mask[8, 6]
    assert mask[6, 5] and mask[5, 6]


def test_prepare_writes_splits_and_dataset_reads_them(files):
    mat, splits, tmp = files
    written = nyu.prepare_nyuv2(mat, splits, str(tmp / "cache"), progress=False)
    assert set(written) == {"train", "test"}
    images, depths, labels, instances, n = make_arrays()
    ds = nyu.NYUv2(str(tmp / "cache"), "train")
    assert len(ds) == 4
    assert ds.classes == list(nyu.NYU_CLASSES)
    assert ds.scenes == sorted(set(SCENE_TYPES))
    s = ds[0]  # the .mat's image 1
    assert s["meta"]["mat_index"] == 1 and s["meta"]["orig_size"] == (H, W)
    assert torch.equal((s["image"] * 255).round().to(torch.uint8), torch.from_numpy(images[0]).permute(2, 0, 1))
    assert torch.allclose(s["depth"][0], torch.from_numpy(depths[0]), atol=6e-4)
    assert s["depth_mask"].all()
    chair, table = nyu.NYU_CLASSES.index("chair") + 1, nyu.NYU_CLASSES.index("table") + 1
    assert s["labels"].tolist() == [chair, chair, table]
    assert s["boxes"].tolist() == [[2, 5, 8, 22], [3, 12, 5, 20], [20, 15, 30, 22]]
    assert ds.scenes[int(s["scene"])] == "kitchen"
    nm = s["normals_mask"][0]
    assert nm[2:-2, 2:-2].all() and not nm[0].any()
    assert torch.allclose(s["normals"][:, nm].T, torch.tensor(n, dtype=torch.float32), atol=0.02)
    assert s["has"] == {"detection": True, "scene": True, "depth": True, "normals": True}
    # train order follows trainNdxs: 1, 3, 4, 6
    assert [ds[i]["meta"]["mat_index"] for i in range(4)] == [1, 3, 4, 6]
    assert ds[2]["labels"].tolist() == [nyu.NYU_CLASSES.index("garbage bin") + 1]
    assert ds[2]["boxes"].tolist() == [[0, 8, 32, 9]]
    test = nyu.NYUv2(str(tmp / "cache"), "test", depth=False)
    assert len(test) == 2 and "depth" not in test[0] and "depth" not in test[0]["has"]
    assert test.scenes[int(test[1]["scene"])] == "bedroom"
    with pytest.raises(IndexError):
        ds[4]


def test_val_split_from_scene_list(files):
    mat, splits, tmp = files
    (tmp / "val.txt").write_text("# held-out scenes\noffice_0004\nliving_room_0007  # a comment\n")
    written = nyu.prepare_nyuv2(mat, splits, str(tmp / "c"), val_scenes=str(tmp / "val.txt"), progress=False)
    assert set(written) == {"train", "val", "test"}
    val = nyu.NYUv2(str(tmp / "c"), "val")
    train = nyu.NYUv2(str(tmp / "c"), "train")
    assert [val[i]["meta"]["mat_index"] for i in range(len(val))] == [4, 6]
    assert [train[i]["meta"]["mat_index"] for i in range(len(train))] == [1, 3]
    (tmp / "bad.txt").write_text("kitchen_9999\n")
    with pytest.raises(DataError, match="bad.txt"):
        nyu.prepare_nyuv2(mat, splits, str(tmp / "d"), val_scenes=str(tmp / "bad.txt"), progress=False)


def test_eigen_normals_folder(files):
    mat, splits, tmp = files
    folder = tmp / "eigen"
    (folder / "normals").mkdir(parents=True)
    (folder / "masks").mkdir()
    expected = np.array([0.0, 0.6, -0.8])
    for k in range(1, N + 1):
        rgb = np.broadcast_to(np.rint((expected + 1) * 127.5).astype(np.uint8), (H, W, 3))
        Image.fromarray(np.ascontiguousarray(rgb)).save(folder / "normals" / f"{k:04d}.png")
        m = np.full((H, W), 255, np.uint8)
        m[:, :k] = 0
        Image.fromarray(m).save(folder / "masks" / f"{k:04d}.png")
    nyu.prepare_nyuv2(mat, splits, str(tmp / "c"), normals=str(folder), progress=False)
    ds = nyu.NYUv2(str(tmp / "c"), "train")
    s = ds[1]  # mat index 3: first 3 columns masked
    mask = s["normals_mask"][0]
    assert not mask[:, :3].any() and mask[:, 3:].all()
    assert torch.allclose(s["normals"][:, mask].T, torch.tensor(expected, dtype=torch.float32), atol=0.01)
    assert (s["normals"][:, ~mask] == 0).all()
    with h5py.File(nyu.cache_path(str(tmp / "c"), "train"), "r") as f:
        assert f.attrs["normals_source"] == "eigen"
    os.remove(folder / "normals" / "0005.png")
    with pytest.raises(DataError, match="image 5"):
        nyu.prepare_nyuv2(mat, splits, str(tmp / "c2"), normals=str(folder), progress=False)


def test_prepare_resumes_after_interruption(files, monkeypatch):
    mat, splits, tmp = files
    reference = nyu.prepare_nyuv2(mat, splits, str(tmp / "ref"), progress=False)
    monkeypatch.setattr(nyu, "FLUSH_EVERY", 1)
    original = nyu.MatSource.labels
    calls = []

    def failing(self, i):
        calls.append(i)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, i)

    monkeypatch.setattr(nyu.MatSource, "labels", failing)
    out = str(tmp / "c")
    with pytest.raises(KeyboardInterrupt):
        nyu.prepare_nyuv2(mat, splits, out, progress=False)
    assert not os.path.exists(nyu.cache_path(out, "train"))
    assert os.path.exists(os.path.join(out, ".nyuv2_train.h5.partial"))
    calls.clear()
    monkeypatch.setattr(nyu.MatSource, "labels", lambda self, i: (calls.append(i), original(self, i))[1])
    nyu.prepare_nyuv2(mat, splits, out, progress=False)
    # resumed: train images 1 and 3 were done, so only 4 and 6 (0-based 3, 5), then test
    assert calls == [3, 5, 1, 4]
    for split in ("train", "test"):
        with h5py.File(reference[split], "r") as a, h5py.File(nyu.cache_path(out, split), "r") as b:
            for key in ("images", "depth", "normals", "normals_mask", "boxes", "labels", "box_offsets", "scene"):
                assert np.array_equal(a[key][()], b[key][()]), key
    # a complete cache with the same inputs is not rewritten
    calls.clear()
    nyu.prepare_nyuv2(mat, splits, out, progress=False)
    assert calls == []


@pytest.mark.parametrize("drop", ["depths", "sceneTypes"])
def test_missing_key(tmp_path, drop):
    mat = write_mat(tmp_path / "m.mat", drop=(drop,))
    with pytest.raises(DataError, match=f"m.mat.*missing key '{drop}'"):
        nyu.prepare_nyuv2(str(mat), str(write_splits(tmp_path / "s.mat")), str(tmp_path / "c"), progress=False)


def test_wrong_shape(tmp_path):
    images, depths, labels, instances, n = make_arrays()
    mat = write_mat(tmp_path / "m.mat", overrides={"labels": labels[:, :, :-1].transpose(0, 2, 1)})
    with pytest.raises(DataError, match="'labels' must have shape"):
        nyu.prepare_nyuv2(str(mat), str(write_splits(tmp_path / "s.mat")), str(tmp_path / "c"), progress=False)
    mat = write_mat(tmp_path / "m2.mat", overrides={"images": images})
    with pytest.raises(DataError, match="'images' must have shape"):
        nyu.prepare_nyuv2(str(mat), str(write_splits(tmp_path / "s.mat")), str(tmp_path / "c"), progress=False)


def test_truncated_file(tmp_path):
    mat = write_mat(tmp_path / "m.mat")
    data = open(mat, "rb").read()
    with open(mat, "wb") as f:
        f.write(data[: len(data) // 3])
    with pytest.raises(DataError, match="m.mat.*truncated"):
        nyu.prepare_nyuv2(str(mat), str(write_splits(tmp_path / "s.mat")), str(tmp_path / "c"), progress=False)
    with pytest.raises(DataError, match="absent.mat does not exist"):
        nyu.prepare_nyuv2(str(tmp_path / "absent.mat"), "x", str(tmp_path / "c"), progress=False)
    # a folder, /dev/null and a pipe (reading one would block) are named, not "not found"
    os.mkfifo(tmp_path / "pipe.mat")
    for path, needle in ((tmp_path, "is a folder"), ("/dev/null", "is a character device such as /dev/null"),
                         (tmp_path / "pipe.mat", r"is a named pipe \(FIFO\)")):
        with pytest.raises(DataError, match=needle + ", expected nyu_depth_v2_labeled.mat"):
            nyu.prepare_nyuv2(str(path), "x", str(tmp_path / "c"), progress=False)
    # an nyuv2_<split>.h5 in --out that is not an mtlkit cache is never replaced
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "nyuv2_train.h5").write_bytes(b"my own file")
    with pytest.raises(DataError, match="nyuv2_train.h5 exists and is not an NYUv2 cache mtlkit wrote"):
        nyu.prepare_nyuv2(str(write_mat(tmp_path / "ok.mat")), str(write_splits(tmp_path / "s2.mat")),
                          str(tmp_path / "c"), progress=False)
    assert (tmp_path / "c" / "nyuv2_train.h5").read_bytes() == b"my own file"


def test_split_index_out_of_range_and_bad_splits(tmp_path):
    mat = str(write_mat(tmp_path / "m.mat"))
    with pytest.raises(DataError, match="trainNdxs.*index 7 out of range 1..6"):
        nyu.prepare_nyuv2(mat, str(write_splits(tmp_path / "s.mat", train=(1, 7))), str(tmp_path / "c"),
                          progress=False)
    with pytest.raises(DataError, match="testNdxs.*out of range"):
        nyu.prepare_nyuv2(mat, str(write_splits(tmp_path / "s.mat", test=(0,))), str(tmp_path / "c"),
                          progress=False)
    with pytest.raises(DataError, match="both"):
        nyu.prepare_nyuv2(mat, str(write_splits(tmp_path / "s.mat", test=(1,))), str(tmp_path / "c"),
                          progress=False)
    scipy.io.savemat(tmp_path / "s2.mat", {"trainNdxs": np.array([[1.0], [2.0]])})
    with pytest.raises(DataError, match="missing key 'testNdxs'"):
        nyu.prepare_nyuv2(mat, str(tmp_path / "s2.mat"), str(tmp_path / "c"), progress=False)


def test_missing_class_name(tmp_path):
    mat = write_mat(tmp_path / "m.mat", names=["wall"] * 30)
    with pytest.raises(DataError, match="class 'bathtub' not found in 'names'"):
        nyu.prepare_nyuv2(str(mat), str(write_splits(tmp_path / "s.mat")), str(tmp_path / "c"), progress=False)


def test_dataset_errors_and_pickling(files):
    mat, splits, tmp = files
    with pytest.raises(DataError, match="mtlkit data nyuv2"):
        nyu.NYUv2(str(tmp / "nothing"), "train")
    nyu.prepare_nyuv2(mat, splits, str(tmp / "c"), progress=False, limit=2)
    ds = nyu.NYUv2(str(tmp / "c"), "train", size=1)
    assert len(ds) == 1
    ds[0]
    import pickle

    clone = pickle.loads(pickle.dumps(ds))  # the open h5py handle is not pickled
    assert torch.equal(clone[0]["image"], ds[0]["image"])


def test_cli_nyuv2(files, capsys):
    from mtlkit.commands import data as cli

    mat, splits, tmp = files
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["nyuv2", "--mat", mat, "--splits", splits, "--out", str(tmp / "c"),
                              "--no-progress", "--compression", "none"])
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "train:" in out and "test:" in out
    with h5py.File(nyu.cache_path(str(tmp / "c"), "test"), "r") as f:
        assert f["images"].shape == (2, H, W, 3) and f["images"].compression is None
        assert json.loads(f.attrs["classes"]) == list(nyu.NYU_CLASSES)


def test_registered_and_built_from_config(files):
    from mtlkit.data import build_dataset

    mat, splits, tmp = files
    nyu.prepare_nyuv2(mat, splits, str(tmp / "c"), progress=False)
    ds = build_dataset({"type": "nyuv2", "root": str(tmp / "c"), "split": "test", "normals": False})
    assert isinstance(ds, nyu.NYUv2) and len(ds) == 2 and "normals" not in ds[0]


def test_loader_with_workers_matches_main_process(files):
    from mtlkit.data import TransformedDataset, build_loader, build_transforms

    mat, splits, tmp = files
    nyu.prepare_nyuv2(mat, splits, str(tmp / "c"), progress=False)
    ds = TransformedDataset(nyu.NYUv2(str(tmp / "c"), "train"), build_transforms({}, (12, 16), train=True), seed=1)
    ds[0]  # the parent opens the file before the workers fork: they must reopen their own
    main = list(build_loader(ds, 2, num_workers=0))
    workers = list(build_loader(ds, 2, num_workers=2))
    assert len(main) == len(workers) == 2
    for a, b in zip(main, workers):
        for key in ("image", "depth", "normals", "normals_mask", "scene"):
            assert torch.equal(a[key], b[key]), key
        assert all(torch.equal(x, y) for x, y in zip(a["boxes"], b["boxes"]))
        assert a["image"].shape == (2, 3, 12, 16)


from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays


@settings(max_examples=40, deadline=None)
@given(labels=arrays(np.uint16, (7, 9), elements=st.integers(0, 5)),
       instances=arrays(np.uint8, (7, 9), elements=st.integers(0, 3)))
def test_boxes_from_maps_matches_brute_force(labels, instances):
    class_values = [4, 2, 5]  # label values of classes 1, 2, 3 (1 and 3 are not classes)
    boxes, lab = nyu.boxes_from_maps(labels, instances, class_values)
    expected = []
    for c, value in enumerate(class_values):
        for inst in range(4):
            ys, xs = np.nonzero((labels == value) & (instances == inst))
            if ys.size:
                expected.append((c + 1, inst, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]))
    expected.sort(key=lambda e: (e[0], e[1]))
    assert lab.tolist() == [e[0] for e in expected]
    assert boxes.tolist() == [e[2] for e in expected]
