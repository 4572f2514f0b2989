"""Appearance options of the synthetic rooms (the controlled domain shift of issue 16):
they change how a sample looks and nothing else, deterministically, each in the
direction it names; the defaults are the source world bit for bit."""

from __future__ import annotations

import colorsys
import hashlib
import json

import numpy as np
import pytest
from scipy.ndimage import laplace

from mtlkit.cli import main as cli_main
from mtlkit.data import build_dataset
from mtlkit.data.synthetic import SyntheticRooms, generate_sample, make_options
from mtlkit.data.synthetic.appearance import (DOMAINS, RANGES, SOURCE, Appearance, appearance_streams,
                                               hsv_to_rgb, make_appearance, restyle_materials, rgb_to_hsv,
                                               temperature_rgb)
from mtlkit.data.synthetic.generate import OUTSIDE_ROW, sample_rng
from mtlkit.data.synthetic.layout import sample_layout
from mtlkit.data.synthetic.render import build_scene_mesh, render
from mtlkit.errors import ConfigError

SMALL = (48, 64)
#: what an appearance must never change (kinect_holes on: its mask is drawn from
#: the sample's stream after the camera's draws, so it checks those are the same)
GEOMETRY = ("depth", "depth_mask", "normals", "normals_mask", "boxes", "labels", "scene", "instances",
            "box_instance")
#: one non-default value per option
ONE_CHANGE = {
    "light_temperature": 3000.0, "light_intensity": 0.5, "lights": 3, "ambient_temperature": 10000.0,
    "ambient_intensity": 0.4, "outside_intensity": 0.2, "hue_shift": 120.0, "saturation": 0.3,
    "albedo": 0.7, "texture_scale": 2.0, "texture_contrast": 2.0, "textures": [0, 0, 1, 0, 0, 0],
    "exposure": 1.6, "white_balance": [1.0, 1.0, 0.6], "gamma": 2.2, "vignetting": 1.0, "blur": 10.0,
    "shot_noise": 0.05,
}


def _sample(index=0, seed=5, split="train", size=SMALL, **look):
    return generate_sample(seed, split, index, make_options(size, kinect_holes=True, **look))


def test_every_option_has_a_test_value_and_a_range():
    names = {f for f in Appearance.__dataclass_fields__}
    assert set(ONE_CHANGE) == names
    assert set(RANGES) == names - {"white_balance", "textures"}


def test_defaults_render_the_source_world_bit_for_bit():
    # sha256 of the images of generate_sample before appearance options existed
    # (mtlkit main at 361d964, 48x64, kinect_holes on). If the source world's
    # look changes on purpose, bump GENERATOR_VERSION and update these.
    golden = {(0, "train", 0): "234277cc2db3869b8c855431d5eb98ad9c28daa9fd0906dea911f977c8eb24ff",
              (1000, "val", 5): "d943d27dc583101ef8c624dad11ac44f154bbcdc3bd6e20a216d6741b4d1ed46",
              (7, "test", 2): "f4ab9f25d4ada9f14e270cefa1ddae113f519d64eebea73722e76963736911ae"}
    for (seed, split, index), digest in golden.items():
        image = generate_sample(seed, split, index, make_options(SMALL, kinect_holes=True))["image"]
        assert hashlib.sha256(image.tobytes()).hexdigest() == digest, (seed, split, index)


@pytest.mark.parametrize("look", [{}, {"domain": "source"}, {"appearance": {}},
                                  {"domain": "source", "appearance": {"gamma": 1.4, "lights": 1,
                                                                       "white_balance": [1, 1, 1]}}])
def test_source_spellings_are_the_source_world(look):
    options = make_options(SMALL, **look)
    assert options.appearance is None and options.domain is None
    assert options.to_dict() == make_options(SMALL).to_dict()
    assert "appearance" not in options.to_dict() and "domain" not in options.to_dict()  # cache keys unchanged


@pytest.mark.parametrize("look", [{"domain": d} for d in DOMAINS if d != "source"]
                         + [{"appearance": {k: v}} for k, v in ONE_CHANGE.items()])
def test_appearance_changes_the_image_and_nothing_else(look):
    for index in (0, 3):
        source, target = _sample(index), _sample(index, **look)
        for key in GEOMETRY:
            np.testing.assert_array_equal(target[key], source[key], err_msg=f"{look}: {key} changed")
        changed = np.abs(target["image"].astype(int) - source["image"].astype(int)).mean()
        assert changed > 0.5, f"{look} leaves the image nearly unchanged ({changed:.2f} levels)"


@pytest.mark.parametrize("look", [{"domain": "dusk"}, {"domain": "showroom"},
                                  {"appearance": {"lights": 4, "textures": [1, 1, 1, 1, 1, 1], "shot_noise": 0.1}}])
def test_appearance_is_deterministic_per_seed_and_index(look):
    a = [_sample(i, **look)["image"] for i in (2, 1)]  # another order, other samples in between
    b = [_sample(i, **look)["image"] for i in (1, 2)][::-1]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(_sample(2, seed=6, **look)["image"], a[0])  # the seed matters


def test_appearance_draws_come_from_streams_of_their_own():
    streams = [appearance_streams(5, 0, 3) for _ in range(2)]
    assert streams[0].materials.random() == streams[1].materials.random()
    s = appearance_streams(5, 0, 3)
    draws = {s.materials.random(), s.lights.random(), s.camera.random(),
             appearance_streams(5, 0, 4).materials.random(), sample_rng(5, "train", 3).random()}
    assert len(draws) == 5  # stages, samples and the layout's stream are distinct
    # adding shot noise (camera stage) moves neither the extra lights nor the redrawn textures:
    # the linear light is the same, so without noise the images match exactly
    base = {"lights": 3, "textures": [1, 2, 1, 1, 1, 1]}
    quiet = _sample(1, appearance={**base, "shot_noise": 1e-9})["image"]
    np.testing.assert_array_equal(quiet, _sample(1, appearance=base)["image"])


def _scene(index=2, seed=5):
    layout = sample_layout(sample_rng(seed, "train", index))
    return layout, build_scene_mesh(layout)


def _frame(layout, mesh, look: Appearance, size=(96, 128), index=2, seed=5):
    rng = sample_rng(seed, "train", index)
    sample_layout(rng)  # the layout's draws come first, as in generate_sample
    return render(layout, *size, rng, mesh=mesh, appearance=look, streams=appearance_streams(seed, 0, index))


def _lin(image):
    return (image.astype(float) / 255.0) ** 1.4  # undo the source tone curve (approximately linear)


def _luminance(image):
    return float((_lin(image) @ np.array([0.2126, 0.7152, 0.0722])).mean())


def _ratio_rb(image):
    lin = _lin(image).reshape(-1, 3).mean(0)
    return float(lin[0] / lin[2])


def test_each_option_moves_the_image_the_way_it_names():
    layout, mesh = _scene()
    src = _frame(layout, mesh, SOURCE)
    image = src.rgb

    def look(**kw):
        return _frame(layout, mesh, make_appearance(None, kw)).rgb

    assert _ratio_rb(look(light_temperature=2700.0)) > 1.3 * _ratio_rb(image)  # warmer
    assert _ratio_rb(look(light_temperature=12000.0)) < 0.9 * _ratio_rb(image)  # cooler
    assert _luminance(look(light_intensity=0.3, ambient_intensity=0.3)) < 0.6 * _luminance(image)
    assert _luminance(look(lights=0)) < _luminance(image)  # ambient only
    assert _luminance(look(exposure=2.0)) > 1.3 * _luminance(image)
    assert look(gamma=2.2).astype(float).mean() > image.astype(float).mean() + 10  # lifted mid-tones
    wb = look(white_balance=[1.0, 1.0, 0.5])
    assert wb[..., 2].mean() < image[..., 2].mean() - 10 and abs(wb[..., 1].mean() - image[..., 1].mean()) < 2
    sharp = np.abs(laplace(image.astype(float).mean(-1))).mean()
    assert np.abs(laplace(look(blur=6.0).astype(float).mean(-1))).mean() < 0.6 * sharp
    assert look(vignetting=2.0)[:8, :8].mean() < image[:8, :8].mean() - 5  # darker corners
    # shot noise: zero-mean, and larger on bright pixels than on dark ones
    noisy = look(shot_noise=0.1).astype(float) - image
    assert abs(noisy.mean()) < 1.5 and noisy.std() > 3
    bright = image.mean(-1) > np.percentile(image.mean(-1), 75)
    dark = image.mean(-1) < np.percentile(image.mean(-1), 25)
    assert noisy[bright].std() > noisy[dark].std()
    # the outside (seen through windows and doors) dims with outside_intensity
    outside = (src.instances == 0) & (src.material == OUTSIDE_ROW)
    if outside.any():
        assert look(outside_intensity=0.1)[outside].mean() < image[outside].mean() - 40
    # materials: saturation 0 leaves room and object surfaces grey
    inside = ~outside
    spread = lambda im: float(np.ptp(_lin(im), axis=-1)[inside].mean())  # noqa: E731
    assert spread(look(saturation=0.0)) < 0.5 * spread(image)
    assert _luminance(look(albedo=0.5)) < 0.7 * _luminance(image)


def test_materials_restyle_colours_and_textures_only():
    layout, mesh = _scene()
    rows = mesh.materials
    look = make_appearance(None, {"hue_shift": 90.0, "saturation": 0.5, "texture_scale": 3.0,
                                  "texture_contrast": 0.0, "textures": [0, 0, 0, 0, 0, 1]})
    out = restyle_materials(rows, look, appearance_streams(5, 0, 2).materials)
    assert out.shape == rows.shape and rows is not out
    np.testing.assert_array_equal(out[OUTSIDE_ROW], rows[OUTSIDE_ROW])  # the outside is the lighting's
    others = [r for r in range(len(rows)) if r != OUTSIDE_ROW]
    np.testing.assert_allclose(out[others, 7], rows[others, 7] * 3.0)  # frequencies
    np.testing.assert_array_equal(out[others, 3:6], out[others, 0:3])  # contrast 0: one colour
    assert (out[4:, 6] == 5).all() and (out[:4, 6] == rows[:4, 6]).all()  # objects' textures redrawn
    np.testing.assert_array_equal(out[:, 8:], rows[:, 8:])  # angle, offsets, emissive
    hsv_in, hsv_out = rgb_to_hsv(rows[others, 0:3]), rgb_to_hsv(out[others, 0:3])
    coloured = hsv_in[:, 1] > 0.1
    turned = (hsv_out[coloured, 0] - hsv_in[coloured, 0]) % 1.0
    np.testing.assert_allclose(turned, 0.25, atol=1e-6)
    np.testing.assert_allclose(hsv_out[:, 1], hsv_in[:, 1] * 0.5, atol=1e-9)
    np.testing.assert_allclose(hsv_out[:, 2], hsv_in[:, 2], atol=1e-9)
    assert mesh.materials is rows and np.array_equal(mesh.materials, rows)  # the mesh keeps its own


def test_hsv_matches_colorsys_on_random_and_edge_colours():
    rng = np.random.default_rng(0)
    colours = np.concatenate([rng.random((500, 3)), np.eye(3), [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5],
                                                               [1, 1, 0], [0, 1, 1], [1, 0, 1], [0.2, 0.2, 0.9]]])
    ours = rgb_to_hsv(colours)
    ref = np.array([colorsys.rgb_to_hsv(*c) for c in colours])
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    np.testing.assert_allclose(hsv_to_rgb(ours), colours, atol=1e-12)
    np.testing.assert_allclose(hsv_to_rgb(ref), np.array([colorsys.hsv_to_rgb(*h) for h in ref]), atol=1e-12)


def test_temperature_colours():
    np.testing.assert_array_equal(temperature_rgb(6500.0), np.ones(3, np.float32))
    luminance = np.array([0.2126, 0.7152, 0.0722])
    previous = None
    for kelvin in (1800.0, 2700.0, 4000.0, 5000.0, 9000.0, 20000.0):
        rgb = temperature_rgb(kelvin)
        assert rgb.min() > 0 and abs(float(rgb @ luminance) - 1.0) < 1e-5
        if previous is not None:  # bluer and less red as the temperature rises
            assert rgb[2] / rgb[0] > previous[2] / previous[0]
        previous = rgb
    assert temperature_rgb(2700.0)[0] > temperature_rgb(2700.0)[2] * 2


def test_domains_look_the_way_they_are_named():
    dusk, show, src = [], [], []
    for index in range(6):
        src.append(_sample(index, size=(60, 80))["image"])
        dusk.append(_sample(index, size=(60, 80), domain="dusk")["image"])
        show.append(_sample(index, size=(60, 80), domain="showroom")["image"])
    src, dusk, show = (np.stack(x) for x in (src, dusk, show))
    # dusk: darker and warmer (measured in light, i.e. before the tone curve)
    assert _luminance(dusk) < 0.8 * _luminance(src)
    assert _ratio_rb(dusk) > 1.5 * _ratio_rb(src)
    # showroom: cooler, softer (blur), more colourful (saturated finishes)
    assert _ratio_rb(show) < 0.95 * _ratio_rb(src)
    sharp = lambda x: np.mean([np.abs(laplace(i.astype(float).mean(-1))).mean() for i in x])  # noqa: E731
    assert sharp(show) < 0.85 * sharp(src)
    chroma = lambda x: float((x.max(-1).astype(float) - x.min(-1)).mean())  # noqa: E731
    assert chroma(show) > 1.2 * chroma(src)


@pytest.mark.parametrize("look, message", [
    ({"domain": "dsuk"}, "domain must be one of ['dusk', 'showroom', 'source'], got 'dsuk' (did you mean 'dusk'?)"),
    ({"domain": 3}, "domain must be one of"),
    ({"appearance": "dusk"}, "appearance must be a mapping"),
    ({"appearance": {"gama": 2.0}}, "unknown appearance option 'gama' (did you mean 'gamma'?)"),
    ({"appearance": {"gamma": 0.1}}, "appearance.gamma must be a number in [0.5, 5], got 0.1"),
    ({"appearance": {"gamma": "2"}}, "appearance.gamma must be a number in [0.5, 5], got '2'"),
    ({"appearance": {"gamma": True}}, "appearance.gamma must be a number"),
    ({"appearance": {"lights": 1.5}}, "appearance.lights must be an integer in [0, 8], got 1.5"),
    ({"appearance": {"lights": 9}}, "appearance.lights must be an integer in [0, 8], got 9"),
    ({"appearance": {"light_temperature": 500}}, "appearance.light_temperature must be a number in [1700, 25000]"),
    ({"appearance": {"blur": -1}}, "appearance.blur must be a number in [0, 20], got -1"),
    ({"appearance": {"shot_noise": float("nan")}}, "appearance.shot_noise must be a number in [0, 1], got nan"),
    ({"appearance": {"white_balance": [1, 1]}}, "appearance.white_balance must be a list of 3 numbers"),
    ({"appearance": {"white_balance": [1, 1, 0]}}, "appearance.white_balance must be a number in [0.05, 4]"),
    ({"appearance": {"textures": [1, 1]}}, "appearance.textures must be a list of 6 numbers"),
    ({"appearance": {"textures": [0] * 6}}, "appearance.textures must not be all zeros"),
    ({"appearance": {"textures": [1, -1, 1, 1, 1, 1]}}, "appearance.textures must be a number in [0, 1e+06]"),
])
def test_bad_options_give_one_line_naming_the_option(look, message):
    with pytest.raises(ConfigError) as info:
        SyntheticRooms(size=2, image_size=SMALL, **look)
    text = str(info.value)
    assert message in text and "\n" not in text and text.startswith("synthetic")


def test_options_through_a_config_and_the_cache_key(tmp_path):
    spec = {"type": "synthetic", "split": "val", "size": 2, "seed": 4, "image_size": list(SMALL),
            "domain": "dusk", "appearance": {"blur": 1.0}, "cache_dir": str(tmp_path)}
    dataset = build_dataset(spec)
    assert dataset.config["domain"] == "dusk"
    assert dataset.config["appearance"]["blur"] == 1.0
    assert dataset.config["appearance"]["light_temperature"] == DOMAINS["dusk"]["light_temperature"]
    source = build_dataset({**spec, "domain": None, "appearance": None})
    assert dataset[1]["image"].shape == source[1]["image"].shape
    assert not np.array_equal(dataset[1]["image"].numpy(), source[1]["image"].numpy())
    np.testing.assert_array_equal(dataset[1]["depth"].numpy(), source[1]["depth"].numpy())
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2  # each look renders into a folder of its own
    with pytest.raises(ConfigError, match="synthetic: domain must be one of .* got 1$"):
        build_dataset({**spec, "domain": 1}, where="data.val")


def test_data_synth_cli_writes_a_domain(tmp_path, capsys):
    out = tmp_path / "dusk"
    assert cli_main(["data", "synth", "--out", str(out), "-n", "2", "--size", *map(str, SMALL), "--seed", "4",
                     "--domain", "dusk", "--appearance", "white_balance=[1, 1, 0.8]", "--appearance",
                     "lights=2", "--quiet", "--no-preview"]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["config"]["domain"] == "dusk"
    assert meta["config"]["appearance"]["white_balance"] == [1.0, 1.0, 0.8]
    assert meta["config"]["appearance"]["lights"] == 2
    on_disk = SyntheticRooms(root=str(out))
    live = SyntheticRooms(split="train", size=2, seed=4, image_size=SMALL, domain="dusk",
                          appearance={"white_balance": [1, 1, 0.8], "lights": 2})
    for i in range(2):
        np.testing.assert_array_equal(on_disk.arrays(i)["image"], live.arrays(i)["image"])
    capsys.readouterr()
    for bad, message in ((["--appearance", "gama=2"], "unknown appearance option 'gama'"),
                         (["--appearance", "gamma"], "--appearance expects KEY=VALUE"),
                         (["--appearance", "gamma=[1"], "--appearance gamma: not a YAML value"),
                         (["--domain", "night"], "domain must be one of")):
        assert cli_main(["data", "synth", "--out", str(tmp_path / "bad"), "-n", "1", "--quiet", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_render_refuses_a_drawing_appearance_without_its_streams():
    layout, mesh = _scene()
    with pytest.raises(ValueError, match="streams"):
        render(layout, 24, 32, sample_rng(5, "train", 2), mesh=mesh, appearance=make_appearance(None, {"lights": 2}))


def test_domain_preview(tmp_path):
    from PIL import Image

    from mtlkit.data.synthetic.preview import _main, domain_grid

    grid = domain_grid(1, "val", [0, 2], ["source", "dusk"], (24, 32))
    assert grid.shape == (14 + 2 * 24, 3 * 32, 3) and grid.dtype == np.uint8
    dusk = generate_sample(1, "val", 2, make_options((24, 32), domain="dusk"))["image"]
    np.testing.assert_array_equal(grid[14 + 24:, 32:64], dusk)  # row 2, column 2: the dusk image as rendered
    out = tmp_path / "domains.png"
    assert _main(["--out", str(out), "--indices", "0", "--size", "24", "32", "--domains", "source", "showroom"]) == 0
    with Image.open(out) as picture:
        assert picture.size == (3 * 32, 14 + 24) and picture.mode == "P"
