"""Issue 10, the data: COCO file names stay in the images folder, sizes and
boxes are checked, missing images are found at start; NYUv2 float images,
huge depths and --limit."""

import json
import os

import h5py
import numpy as np
import pytest
from PIL import Image

from mtlkit.data import nyuv2 as nyu
from mtlkit.data.coco import COCODetection
from mtlkit.errors import DataError
from test_data_coco import H, W, make_coco
from test_data_nyuv2 import make_arrays, write_mat, write_splits


def _with(root, images=None, annotations=None):
    data = json.loads((root / "ann.json").read_text())
    if images is not None:
        data["images"] = images
    if annotations is not None:
        data["annotations"] = annotations
    (root / "ann.json").write_text(json.dumps(data))
    return str(root / "ann.json")


@pytest.mark.parametrize("name", ["../a.png", "img/../../a.png", "/etc/passwd", "..\\a.png", ""])
def test_coco_file_names_cannot_leave_the_images_folder(tmp_path, name):
    root = make_coco(tmp_path)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "a.png")  # a file outside
    ann = _with(root, images=[{"id": 1, "file_name": name}], annotations=[])
    with pytest.raises(DataError, match=r"images\[0\].file_name .* is not a path inside the images folder"):
        COCODetection(ann, images=str(root / "img"))


def test_coco_missing_images_are_found_at_start(tmp_path):
    root = make_coco(tmp_path)
    os.remove(root / "img" / "b.png")
    os.remove(root / "img" / "c.png")
    with pytest.raises(DataError, match=r"b.png: image 20 of .*ann.json is missing and 1 more of 3"):
        COCODetection(str(root / "ann.json"), images=str(root / "img"))
    with pytest.raises(DataError, match="no such folder"):
        COCODetection(str(root / "ann.json"), images=str(root / "nope"))


def test_coco_real_image_size_must_match_the_json(tmp_path):
    root = make_coco(tmp_path)
    ann = _with(root, images=[{"id": 10, "file_name": "a.jpg", "width": W + 4, "height": H}], annotations=[])
    # found when the set is built (every header is read once), before a run writes anything
    with pytest.raises(DataError, match=rf"a.jpg: the image is {W}x{H} pixels but .* says width {W + 4}"):
        COCODetection(ann, images=str(root / "img"))


@pytest.mark.parametrize("bbox, message", [
    ([float("nan"), 0, 2, 2], "must be finite numbers"),
    ([0, 0, float("inf"), 2], "must be finite numbers"),
    ([0, 0, 1e30, 2], "lies outside its image"),
    ([W + 5, 0, 2, 2], "lies outside its image"),
    ([-3, 0, 2, 2], "lies outside its image"),
])
def test_coco_bad_boxes_are_refused(tmp_path, bbox, message):
    root = make_coco(tmp_path)
    ann = _with(root, annotations=[{"id": 1, "image_id": 10, "category_id": 7, "bbox": bbox}])
    with pytest.raises(DataError, match=r"annotations\[0\].bbox .*" + message.replace("(", r"\(")):
        COCODetection(ann, images=str(root / "img"))


def test_coco_boxes_are_checked_against_the_real_size_without_json_sizes(tmp_path):
    root = make_coco(tmp_path)
    ann = _with(root, images=[{"id": 10, "file_name": "a.jpg"}],
                annotations=[{"id": 1, "image_id": 10, "category_id": 7, "bbox": [0, 0, 3 * W, 2]}])
    with pytest.raises(DataError, match=r"annotations\[0\].bbox .* lies outside its image of width 16"):
        COCODetection(ann, images=str(root / "img"))  # the header is read when the set is built
    # a box a rounding past the border is accepted
    ann = _with(root, annotations=[{"id": 1, "image_id": 10, "category_id": 7, "bbox": [0, 0, W + 0.5, H]}])
    assert COCODetection(ann, images=str(root / "img"))[0]["boxes"].shape == (1, 4)


@pytest.mark.parametrize("size", [0, -1])
def test_coco_size_must_be_positive(tmp_path, size):
    root = make_coco(tmp_path)
    with pytest.raises(DataError, match="'size' must be a positive number"):
        COCODetection(str(root / "ann.json"), images=str(root / "img"), size=size)


# -- NYUv2 --------------------------------------------------------------------------
@pytest.fixture
def arrays():
    return make_arrays()


def _prepare(tmp_path, arrays, overrides, limit=None):
    mat = write_mat(tmp_path / "labeled.mat", arrays, overrides=overrides)
    splits = write_splits(tmp_path / "splits.mat")
    nyu.prepare_nyuv2(str(mat), str(splits), str(tmp_path / "cache"), progress=False, limit=limit)
    return nyu.NYUv2(str(tmp_path / "cache"), "train")


def test_nyuv2_float_images_in_0_1_are_scaled_not_zeroed(tmp_path, arrays):
    images = arrays[0]
    ds = _prepare(tmp_path, arrays, {"images": (images / 255.0).transpose(0, 3, 2, 1)})
    got = (ds[0]["image"] * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(got, images[0]) and got.max() > 0


def test_nyuv2_images_out_of_range_are_refused(tmp_path, arrays):
    images = arrays[0].astype(np.float64) * 2.0
    with pytest.raises(DataError, match=r"pixel values in \[0, 510\], expected 0..255"):
        _prepare(tmp_path, arrays, {"images": images.transpose(0, 3, 2, 1)})


def test_nyuv2_depth_beyond_the_cache_range_is_invalid_not_clipped(tmp_path, arrays):
    depths = arrays[1].copy()
    depths[0, 3, 4] = 1e6  # image 1 of the .mat, pixel (3, 4)
    ds = _prepare(tmp_path, arrays, {"depths": depths.transpose(0, 2, 1)})
    sample = ds[0]
    assert float(sample["depth"][0, 3, 4]) == 0.0 and not bool(sample["depth_mask"][0, 3, 4])
    assert bool(sample["depth_mask"][0, 3, 5])


@pytest.mark.parametrize("limit", [0, -1])
def test_nyuv2_limit_must_be_positive_and_leaves_nothing(tmp_path, arrays, limit):
    with pytest.raises(DataError, match="--limit must be a positive number"):
        _prepare(tmp_path, arrays, None, limit=limit)
    assert not (tmp_path / "cache").exists()


def test_nyuv2_limit_keeps_the_first_images(tmp_path, arrays):
    ds = _prepare(tmp_path, arrays, None, limit=3)
    assert len(ds) == 3
    with pytest.raises(DataError, match="'size' must be a positive number"):
        nyu.NYUv2(str(tmp_path / "cache"), "train", size=-1)
