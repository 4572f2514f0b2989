"""Transforms keep every modality consistent with the boxes and with each other."""


import numpy as np
import pytest
import torch

from mtlkit.data.transforms import (
    IMAGENET_MEAN,
    PhotometricJitter,
    RandomExpand,
    RandomHorizontalFlip,
    RandomSSDCrop,
    Resize,
    build_transforms,
    crop,
    expand,
    hflip,
)
from mtlkit.errors import ConfigError
from mtlkit.ops.reference import box_iou

H, W = 60, 80
# label -> (box, depth, normal); boxes do not overlap
OBJECTS = {
    1: ([5, 6, 33, 30], 1.0, (0.6, 0.0, -0.8)),
    2: ([40, 4, 70, 34], 2.0, (0.6, -0.8, 0.0)),
    3: ([10, 36, 38, 58], 3.0, (0.6, 0.48, -0.64)),
    4: ([46, 38, 76, 59], 4.0, (-0.6, 0.0, -0.8)),
}
BACKGROUND_DEPTH = 6.0


def make_sample():
    """A sample where each box has its own depth, normal and colour; a stripe of
    invalid depth/normals; and a `coords` map (original column + 1, row + 1)
    that tells where each output pixel came from (a plugin-like extra map)."""
    image = torch.full((3, H, W), 0.5)
    depth = torch.full((1, H, W), BACKGROUND_DEPTH)
    normals = torch.zeros(3, H, W)
    normals[2] = -1.0
    boxes, labels = [], []
    for label, (box, d, n) in OBJECTS.items():
        x1, y1, x2, y2 = box
        depth[:, y1:y2, x1:x2] = d
        normals[:, y1:y2, x1:x2] = torch.tensor(n).view(3, 1, 1)
        image[:, y1:y2, x1:x2] = torch.tensor([label / 5, 1 - label / 5, 0.3]).view(3, 1, 1)
        boxes.append(box)
        labels.append(label)
    mask = torch.ones(1, H, W, dtype=torch.bool)
    mask[:, :, 0:3] = False  # an invalid stripe at the left border
    depth[~mask] = 0
    normals = normals * mask
    cols = torch.arange(W, dtype=torch.float32).view(1, 1, W).expand(1, H, W) + 1
    rows = torch.arange(H, dtype=torch.float32).view(1, H, 1).expand(1, H, W) + 1
    return {
        "image": image,
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scene": torch.tensor(2),
        "depth": depth,
        "depth_mask": mask.clone(),
        "normals": normals,
        "normals_mask": mask.clone(),
        "coords": torch.cat([cols, rows]),
        "has": {"detection": True, "scene": True, "depth": True, "normals": True},
        "meta": {"id": 0, "source": "test", "orig_size": (H, W)},
    }


def check_consistent(out):
    """Assert the geometric invariants of a transformed sample; return whether it was mirrored."""
    h, w = out["image"].shape[-2:]
    for key in ("depth", "depth_mask", "normals", "normals_mask", "coords"):
        assert out[key].shape[-2:] == (h, w), key
    assert out["depth_mask"].dtype == torch.bool and out["normals_mask"].dtype == torch.bool
    # masks align with their maps: valid <=> value present
    assert torch.equal(out["depth_mask"], out["depth"] > 0)
    norms = out["normals"].norm(dim=0, keepdim=True)
    assert torch.equal(out["normals_mask"], norms > 0.5)
    assert torch.allclose(norms[out["normals_mask"]], torch.ones(1), atol=1e-5)
    boxes = out["boxes"]
    assert len(boxes) == len(out["labels"])
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    # mirrored? read the original columns along a row
    cols = out["coords"][0]
    valid_cols = cols[cols > 0]
    row = cols[int(torch.nonzero(cols > 0)[0, 0])]
    row = row[row > 0]
    flipped = bool(len(row) > 1 and row[0] > row[-1])
    assert len(valid_cols) > 0
    for box, label in zip(boxes.tolist(), out["labels"].tolist()):
        _, d, n = OBJECTS[label]
        cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        src_col = int(out["coords"][0, cy, cx]) - 1
        src_row = int(out["coords"][1, cy, cx]) - 1
        x1, y1, x2, y2 = OBJECTS[label][0]
        assert x1 <= src_col < x2 and y1 <= src_row < y2, "box centre comes from outside its object"
        if src_col >= 3:  # outside the invalid stripe
            assert out["depth"][0, cy, cx].item() == pytest.approx(d)
            expected = torch.tensor(n)
            if flipped:
                expected[0] = -expected[0]
            assert torch.allclose(out["normals"][:, cy, cx], expected, atol=1e-5)
    return flipped


def test_reference_sample_is_consistent():
    assert check_consistent(make_sample()) is False


def test_hflip_mirrors_everything_and_negates_normal_x():
    s = make_sample()
    out = hflip(s)
    assert check_consistent(out) is True
    assert torch.equal(out["boxes"][0], torch.tensor([W - 33.0, 6, W - 5.0, 30]))
    assert torch.equal(out["depth"], s["depth"].flip(-1))
    assert torch.equal(out["depth_mask"], s["depth_mask"].flip(-1))
    assert torch.equal(out["normals"][0], -s["normals"][0].flip(-1))
    assert torch.equal(out["normals"][1:], s["normals"][1:].flip(-1))
    back = hflip(out)
    for key in ("image", "boxes", "depth", "normals", "normals_mask"):
        assert torch.equal(back[key], s[key]), key
    # the input is not modified
    assert torch.equal(s["boxes"], make_sample()["boxes"])


def test_random_flip_probability_extremes():
    s = make_sample()
    rng = np.random.default_rng(0)
    assert RandomHorizontalFlip(0.0)(s, rng) is s
    assert torch.equal(RandomHorizontalFlip(1.0)(s, rng)["boxes"], hflip(s)["boxes"])


def test_crop_keeps_boxes_whose_centre_is_inside_and_clips():
    s = make_sample()
    out = crop(s, 20, 10, 60, 50)
    # box 1 centre (19, 18) outside; box 2 centre (55, 19) inside; box 3 centre (24, 47) inside;
    # box 4 centre (61, 48.5) outside
    assert out["labels"].tolist() == [2, 3]
    assert torch.equal(out["boxes"], torch.tensor([[20.0, 0, 40, 24], [0, 26, 18, 40]]))
    assert out["image"].shape == (3, 40, 40)
    check_consistent(out)


@pytest.mark.parametrize("min_iou", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_ssd_crop_window_overlaps_a_box_by_min_iou(min_iou):
    s = make_sample()
    t = RandomSSDCrop(min_ious=[min_iou], trials=50)
    changed = 0
    for seed in range(8):
        out = t(s, np.random.default_rng(seed))
        check_consistent(out)
        if out["image"].shape == s["image"].shape:
            continue
        changed += 1
        h, w = out["image"].shape[-2:]
        left, top = int(out["coords"][0, 0, 0]) - 1, int(out["coords"][1, 0, 0]) - 1
        window = torch.tensor([[left, top, left + w, top + h]], dtype=torch.float32)
        assert box_iou(s["boxes"], window).max() >= min_iou - 1e-6
        assert 0.3 * W - 1 <= w <= W and 0.3 * H - 1 <= h <= H
        assert 0.5 <= h / w * (1 + 1e-6) and h / w <= 2.0 * (1 + 1e-6) + 0.1
        assert len(out["boxes"]) >= 1
    if min_iou < 0.9:  # a 0.9 window around these small boxes is rarely found in 50 trials
        assert changed > 0


def test_ssd_crop_none_mode_keeps_sample_and_no_box_samples_are_cropped():
    s = make_sample()
    assert RandomSSDCrop(min_ious=[None])(s, np.random.default_rng(0)) is s
    empty = make_sample()
    empty["boxes"] = torch.zeros((0, 4))
    empty["labels"] = torch.zeros((0,), dtype=torch.int64)
    out = RandomSSDCrop(min_ious=[0.9])(empty, np.random.default_rng(0))
    assert out["image"].shape != empty["image"].shape
    assert out["boxes"].shape == (0, 4)


def test_expand_fills_image_with_mean_and_modalities_as_invalid():
    s = make_sample()
    out = expand(s, 2 * H, 3 * W, 7, 11)
    check_consistent(out)
    assert out["image"].shape == (3, 2 * H, 3 * W)
    assert torch.allclose(out["image"][:, 0, 0], torch.tensor(IMAGENET_MEAN))
    assert torch.equal(out["image"][:, 7:7 + H, 11:11 + W], s["image"])
    assert not out["depth_mask"][:, :7].any() and not out["normals_mask"][:, :, :11].any()
    assert (out["depth"][:, :7] == 0).all() and (out["normals"][:, :, :11] == 0).all()
    assert torch.equal(out["boxes"], s["boxes"] + torch.tensor([11.0, 7, 11, 7]))
    r = RandomExpand(max_ratio=3.0, p=1.0)(s, np.random.default_rng(3))
    check_consistent(r)
    assert r["image"].shape[-1] >= W and r["image"].shape[-2] >= H


def test_resize_scales_boxes_and_keeps_depth_values_unblended():
    s = make_sample()
    out = Resize((30, 120))(s)
    check_consistent(out)
    assert out["image"].shape == (3, 30, 120)
    assert torch.allclose(out["boxes"][0], torch.tensor([7.5, 3.0, 49.5, 15.0]))
    # nearest: no depth value that was not in the input (no blending across edges)
    assert set(out["depth"].unique().tolist()) <= set(s["depth"].unique().tolist())
    assert out["depth_mask"].dtype == torch.bool
    assert Resize((H, W))(s) is s


def test_photometric_changes_only_the_image():
    s = make_sample()
    out = PhotometricJitter(p=1.0)(s, np.random.default_rng(1))
    assert not torch.equal(out["image"], s["image"])
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    for key in ("boxes", "depth", "normals", "depth_mask", "coords"):
        assert out[key] is s[key]
    # a grey image stays grey under saturation and hue changes
    grey = dict(s, image=torch.full((3, 4, 4), 0.4))
    g = PhotometricJitter(brightness=0, contrast=0, saturation=0.5, hue=0.2, p=1.0)(grey, np.random.default_rng(2))
    assert torch.allclose(g["image"], grey["image"], atol=1e-5)


def test_hue_rotation_by_full_turn_is_identity():
    s = make_sample()
    t = PhotometricJitter(brightness=0, contrast=0, saturation=0, hue=1.0, p=1.0)

    class FixedRng:
        def random(self):
            return 0.0

        def uniform(self, lo, hi):
            return 1.0  # one full turn

    out = t(s, FixedRng())
    assert torch.allclose(out["image"], s["image"], atol=1e-4)


@pytest.mark.parametrize("seed", range(12))
def test_full_training_pipeline_keeps_geometry(seed):
    t = build_transforms({"photometric": 0.5}, (48, 64), train=True)
    out = t(make_sample(), np.random.default_rng(seed))
    assert out["image"].shape == (3, 48, 64)
    check_consistent(out)
    assert out["scene"].item() == 2 and out["has"]["depth"]


def test_pipeline_is_deterministic_given_the_generator():
    t = build_transforms({}, (48, 64), train=True)
    a = t(make_sample(), np.random.default_rng(5))
    b = t(make_sample(), np.random.default_rng(5))
    for key in ("image", "boxes", "labels", "depth", "normals", "normals_mask"):
        assert torch.equal(a[key], b[key])
    flips = {check_consistent(t(make_sample(), np.random.default_rng(s))) for s in range(16)}
    assert flips == {True, False}


def test_eval_pipeline_only_resizes():
    t = build_transforms({"flip": 1.0}, (30, 40), train=False)
    out = t(make_sample(), np.random.default_rng(0))
    assert check_consistent(out) is False
    assert torch.allclose(out["boxes"][0], torch.tensor([2.5, 3.0, 16.5, 15.0]))
    assert len(build_transforms({"enabled": False}, None, train=True).transforms) == 0


def test_build_transforms_rejects_unknown_and_mistyped_options():
    with pytest.raises(ConfigError, match=r"flipp.*did you mean 'flip'"):
        build_transforms({"flipp": 0.5}, None, train=True)
    with pytest.raises(ConfigError, match="crop"):
        build_transforms({"crop": "yes"}, None, train=True)
    with pytest.raises(ConfigError, match="image_size"):
        build_transforms({}, [10, 20, 30], train=False)


from hypothesis import given, settings, strategies as st


@settings(max_examples=30, deadline=None)
@given(x1=st.integers(0, 70), y1=st.integers(0, 50), w=st.integers(4, 40), h=st.integers(4, 40),
       seed=st.integers(0, 2**31), size=st.sampled_from([(30, 40), (64, 48), (60, 80)]))
def test_random_box_depth_follows_its_box(x1, y1, w, h, seed, size):
    """A box of constant depth anywhere: after the full pipeline, its depth is
    still under its box and the box stays inside the image."""
    x2, y2 = min(x1 + w, W), min(y1 + h, H)
    depth = torch.full((1, H, W), 9.0)
    depth[:, y1:y2, x1:x2] = 1.5
    s = {"image": torch.rand(3, H, W), "boxes": torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32),
         "labels": torch.tensor([1]), "depth": depth, "depth_mask": torch.ones(1, H, W, dtype=torch.bool),
         "has": {"detection": True, "depth": True}}
    out = build_transforms({}, size, train=True)(s, np.random.default_rng(seed))
    assert out["image"].shape[-2:] == size
    b = out["boxes"]
    assert len(b) == 1  # the crop always keeps at least one box
    bx1, by1, bx2, by2 = b[0].tolist()
    assert 0 <= bx1 < bx2 <= size[1] and 0 <= by1 < by2 <= size[0]
    assert torch.equal(out["depth_mask"], out["depth"] > 0)
    if bx2 - bx1 < 2 or by2 - by1 < 2:
        # zoomed out to under 2 px (e.g. 4 px x 4 zoom-out / 2 resize = 0.5 px): nearest
        # resampling may keep none of its pixels, so there is no depth to follow
        return
    cx, cy = int((bx1 + bx2) / 2), int((by1 + by2) / 2)
    assert out["depth"][0, cy, cx].item() == 1.5


@pytest.mark.parametrize("seed", range(40))
def test_fused_expand_crop_equals_expand_then_crop(seed):
    from mtlkit.data.transforms import Compose, RandomExpandCrop

    e, c = RandomExpand(max_ratio=4.0, p=0.7), RandomSSDCrop()
    s = make_sample()
    sequential = Compose([e, c])(s, np.random.default_rng(seed))
    fused = RandomExpandCrop(e, c)(s, np.random.default_rng(seed))
    assert sequential.keys() == fused.keys()
    for key, value in sequential.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == fused[key].dtype and torch.equal(value, fused[key]), key
    check_consistent(fused)
