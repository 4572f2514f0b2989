"""Drawing helpers and run plots of mtlkit.viz."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mtlkit import viz


def test_to_uint8_image_converts_and_clips():
    t = torch.zeros(3, 4, 5)
    t[0] = 1.0  # red
    t[1, 0, 0] = 2.0  # clipped to 1
    t[2, 0, 1] = -1.0  # clipped to 0
    out = viz.to_uint8_image(t)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert (out[..., 0] == 255).all()
    assert out[0, 0, 1] == 255 and out[0, 1, 2] == 0 and out[1, 1, 1] == 0
    half = viz.to_uint8_image(torch.full((3, 2, 2), 0.5, dtype=torch.bfloat16))
    assert (half == 128).all()
    assert viz.to_uint8_image(out).tolist() == out.tolist()
    with pytest.raises(ValueError):
        viz.to_uint8_image(np.zeros((4, 3, 5), np.float32))


def test_draw_boxes_draws_outline_in_class_colour_and_keeps_input():
    image = np.zeros((60, 80, 3), np.uint8)
    out = viz.draw_boxes(image, torch.tensor([[10.0, 20.0, 50.0, 55.0]]), torch.tensor([3]),
                         torch.tensor([0.9]), ["a", "b", "c"])
    assert image.sum() == 0  # input untouched
    color = viz.class_color(3)
    assert tuple(out[40, 10]) == color  # left edge
    assert tuple(out[54, 30]) == color  # bottom edge
    assert out[40, 30].sum() == 0  # inside stays empty
    # caption drawn above the box (white text on the colour)
    caption = out[5:20, 10:40]
    assert (caption.min(axis=-1) > 200).any()
    empty = viz.draw_boxes(image, np.zeros((0, 4)), np.zeros((0,), np.int64), np.zeros(0), None)
    assert empty.sum() == 0
    with pytest.raises(ValueError):
        viz.draw_boxes(image, np.zeros((2, 4)), np.ones(1, np.int64), None, None)


def test_colorize_depth_orders_colours_and_blacks_out_invalid():
    d = torch.tensor([[1.0, 2.0, 3.0, 0.0]]).reshape(1, 1, 4)
    out = viz.colorize_depth(d)
    assert out.shape == (1, 4, 3)
    assert out[0, 3].sum() == 0  # zero depth invalid without a mask
    # turbo: near blue-ish, far red-ish
    assert out[0, 0, 2] > out[0, 0, 0] and out[0, 2, 0] > out[0, 2, 2]
    masked = viz.colorize_depth(d, mask=torch.tensor([[[True, False, True, True]]]))
    assert masked[0, 1].sum() == 0 and masked[0, 3].sum() > 0
    fixed = viz.colorize_depth(d, vmin=0.0, vmax=10.0)
    assert not np.array_equal(fixed[0, 2], out[0, 2])  # range is honoured
    assert viz.colorize_depth(torch.zeros(3, 3)).sum() == 0


def test_colorize_normals_codes_axes():
    n = torch.zeros(3, 1, 4)
    n[0, 0, 0] = 1.0  # +x
    n[1, 0, 1] = 1.0  # +y
    n[2, 0, 2] = -1.0  # -z (facing the camera)
    out = viz.colorize_normals(n)
    assert tuple(out[0, 0]) == (255, 128, 128)
    assert tuple(out[0, 1]) == (128, 255, 128)
    assert tuple(out[0, 2]) == (128, 128, 0)
    assert tuple(out[0, 3]) == (0, 0, 0)  # zero vector: invalid
    masked = viz.colorize_normals(n, mask=torch.tensor([[False, True, True, True]]))
    assert masked[0, 0].sum() == 0


def test_tile_grid_and_titles():
    a = np.full((10, 20, 3), 10, np.uint8)
    b = np.full((6, 8, 3), 200, np.uint8)
    out = viz.tile([a, b, a], cols=2, pad=2)
    assert out.shape == (2 * 10 + 3 * 2, 2 * 20 + 3 * 2, 3)
    assert (out[2:12, 2:22] == 10).all()
    # b is centred in its cell
    assert (out[2 + 2:2 + 8, 24 + 6:24 + 14] == 200).all()
    titled = viz.tile([a, b], cols=2, titles=["x", "y"])
    assert titled.shape[0] > viz.tile([a, b], cols=2).shape[0]
    with pytest.raises(ValueError):
        viz.tile([a], cols=1, titles=["x", "y"])


def test_text_panel_has_text():
    p = viz.text_panel(["scene: kitchen 0.91"], 60, 200)
    assert p.shape == (60, 200, 3)
    assert (p > 200).any()


def test_training_curves_and_per_class_ap(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with open(path, "w") as f:
        for i in range(1, 6):
            f.write(json.dumps({"event": "train", "iter": i, "loss": 2.0 / i, "lr": 0.01,
                                "losses": {"detection": 1.5 / i, "depth": 0.5 / i}}) + "\n")
        f.write(json.dumps({"event": "eval", "iter": 5,
                            "metrics": {"detection": {"AP": 0.1, "AP50": 0.3}}}) + "\n")
        f.write('{"event": "train", "it')  # a run killed mid-line
    out = tmp_path / "curves.png"
    assert viz.plot_training_curves(path, out)
    img = np.asarray(Image.open(out))
    assert img.shape[0] > 100 and img.shape[1] > 300
    assert not viz.plot_training_curves([], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()

    bar = tmp_path / "ap.png"
    assert viz.plot_per_class_ap({"chair": 0.5, "table": float("nan"), "bed": 0.2}, bar)
    assert Image.open(bar).size[0] > 100
    assert not viz.plot_per_class_ap({}, tmp_path / "x.png")


def test_save_image_roundtrip(tmp_path):
    img = (np.arange(4 * 5 * 3) % 256).astype(np.uint8).reshape(4, 5, 3)
    viz.save_image(img, tmp_path / "a.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), img)
