"""Issue 10, coco_map: ground-truth annotations of unknown images or
categories are refused like such detections are, ids must be integers."""

import pytest

from mtlkit.errors import DataError
from mtlkit.metrics import coco_map


def gt(**ann_changes):
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}
    ann.update(ann_changes)
    return {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 1, "name": "a"}], "annotations": [ann]}


DET = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}]


def test_a_correct_set_still_scores():
    assert coco_map(gt(), DET)["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("change, message", [
    ({"image_id": 7}, r"ground-truth annotation 0: image_id 7 is not the id of any ground-truth image"),
    ({"category_id": 9}, r"ground-truth annotation 0: category_id 9 is not the id of any ground-truth category"),
    ({"image_id": "1"}, r"ground-truth annotation 0: 'image_id' must be an integer id, got str '1'"),
])
def test_bad_ground_truth_annotations_are_refused(change, message):
    with pytest.raises(DataError, match=message):
        coco_map(gt(**change), DET)


def test_string_ids_are_named_as_the_wrong_type():
    bad_images = gt()
    bad_images["images"][0]["id"] = "000001"
    with pytest.raises(DataError, match=r"ground-truth image 0: 'id' must be an integer id, got str '000001'"):
        coco_map(bad_images, DET)
    with pytest.raises(DataError, match=r"detection 0: 'image_id' must be an integer id, got str"):
        coco_map(gt(), [dict(DET[0], image_id="1")])
    with pytest.raises(DataError, match=r"detection 0: 'category_id' must be an integer id, got float"):
        coco_map(gt(), [dict(DET[0], category_id=1.0)])
