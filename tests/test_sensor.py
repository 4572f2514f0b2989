"""The simulated depth sensor of the synthetic rooms (mtlkit/data/synthetic/sensor.py):
deterministic per (seed, split, index), nothing else of a sample changes, and each
degradation does what the docs say (noise growing with distance, quantised
disparity, range, projector shadows, dark / glossy holes, normals from the
degraded depth)."""

import numpy as np
import pytest
import torch

from mtlkit.data import collate
from mtlkit.data.synthetic import SyntheticRooms, generate_sample, make_options
from mtlkit.data.synthetic import sensor as S
from mtlkit.data.synthetic.generate import SPLITS, sample_rng
from mtlkit.data.synthetic.render import intrinsics, pixel_rays
from mtlkit.data.synthetic.storage import Pack, load_sample, write_pack
from mtlkit.data.transforms import Resize, hflip
from mtlkit.errors import ConfigError

SIZE = (60, 80)


@pytest.fixture(scope="module")
def pair():
    """Samples 0..2 of a split with and without the sensor."""
    with_sensor = make_options(SIZE, sensor="kinect")
    without = make_options(SIZE)
    return ([generate_sample(7, "train", i, with_sensor) for i in range(3)],
            [generate_sample(7, "train", i, without) for i in range(3)])


def test_sensor_is_deterministic_per_seed_split_and_index(pair):
    sensed, _ = pair
    options = make_options(SIZE, sensor="kinect")
    again = generate_sample(7, "train", 1, options)
    for key in S.SENSOR_KEYS:
        assert np.array_equal(again[key], sensed[1][key]), key
    # another index, split or seed: another measurement
    assert not np.array_equal(sensed[0]["sensor_depth"], sensed[1]["sensor_depth"])
    other_split = generate_sample(7, "val", 1, options)
    other_seed = generate_sample(8, "train", 1, options)
    assert not np.array_equal(other_split["sensor_depth"], sensed[1]["sensor_depth"])
    assert not np.array_equal(other_seed["sensor_depth"], sensed[1]["sensor_depth"])


def test_sensor_noise_comes_from_its_own_stream_of_seed_split_and_index():
    """On one and the same frame, the measurement is a function of (seed, split,
    index) alone: the same stream gives the same depth and holes whatever the
    global RNGs hold, another seed, split or index another draw of the noise."""
    frame = _flat_wall(z=3.0)
    h, w = frame[0].shape
    rays = pixel_rays(h, w).reshape(h, w, 3)
    options = S.SensorOptions(glossy_fraction=0.3, edge_dropout=0.5)

    def measure(seed, split, index):
        return S.degrade(*frame, rays, intrinsics(h, w)[0], options, S.sensor_rng(seed, split, index))

    np.random.seed(1)
    torch.manual_seed(1)
    first = measure(7, 0, 1)
    np.random.seed(2)
    torch.manual_seed(2)
    np.random.random(100)
    again = measure(7, 0, 1)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    for other in ((8, 0, 1), (7, 1, 1), (7, 0, 2)):
        assert not np.array_equal(measure(*other)[0], first[0]), other
    # the sample's own stream is another one: the sensor does not shift the scene's draws
    assert not np.array_equal(S.sensor_rng(7, SPLITS["train"], 1).random(8), sample_rng(7, "train", 1).random(8))


def test_sensor_changes_nothing_else_of_the_sample(pair):
    sensed, plain = pair
    for a, b in zip(sensed, plain):
        assert set(a) == set(b) | set(S.SENSOR_KEYS)
        for key in b:
            assert np.array_equal(a[key], b[key]), key
    # and the options' dict (the key of caches and rendered folders) is unchanged without a sensor
    assert "sensor" not in make_options(SIZE).to_dict()
    assert make_options(SIZE, sensor="kinect").to_dict()["sensor"]["max_range"] == 5.0


def test_sensor_depth_is_close_where_valid_with_holes_and_normals_from_it(pair):
    sensed, _ = pair
    for s in sensed:
        mask, depth = s["sensor_depth_mask"], s["sensor_depth"]
        assert mask.dtype == bool and depth.dtype == np.float32
        assert 0.3 < mask.mean() < 1.0  # holes, but mostly measured
        assert np.all(depth[~mask] == 0)
        rel = np.abs(depth[mask] - s["depth"][mask]) / s["depth"][mask]
        assert np.median(rel) < 0.02 and rel.max() < 0.2
        # sensor normals are unit vectors where valid, computed only where the depth is
        n, nm = s["sensor_normals"], s["sensor_normals_mask"]
        assert n.shape == (3,) + SIZE
        assert np.allclose(np.linalg.norm(n[:, nm], axis=0), 1, atol=1e-4)
        assert not np.any(nm & ~mask)


def _flat_wall(h=60, w=80, z=2.0, reflectance=0.8, texture=0.0):
    """A fronto-parallel wall at ``z`` metres: everything degrade() needs."""
    depth = np.full((h, w), z)
    normals = np.zeros((3, h, w), np.float32)
    normals[2] = -1.0
    material = np.zeros((h, w), np.int64)
    materials = np.zeros((5, 12))
    materials[:, 0:3] = reflectance
    materials[:, 6] = texture
    return depth, np.ones((h, w), bool), normals, material, materials, np.zeros((h, w), bool)


def _degrade(depth, valid, normals, material, materials, outside, options=None, seed=0):
    h, w = depth.shape
    rays = pixel_rays(h, w).reshape(h, w, 3)
    return S.degrade(depth, valid, normals, material, materials, outside, rays, intrinsics(h, w)[0],
                     options or S.SensorOptions(glossy_fraction=0.0), np.random.default_rng(seed))


def test_noise_grows_with_distance_and_depth_is_quantised():
    errors = {}
    options = S.SensorOptions(glossy_fraction=0.0, min_signal=0.0, edge_dropout=0.0)
    for z in (1.0, 4.0):
        wall = _flat_wall(z=z)
        measured, mask = _degrade(*wall, options=options)
        assert mask.mean() > 0.99
        errors[z] = float(np.std(measured[mask] - z))
        # quantised disparity: depth takes few distinct values, z^2 / (f b) / 8 apart
        fb = options.focal_px * options.baseline
        disparity = fb / measured[mask].astype(np.float64)
        steps = disparity / options.disparity_step
        assert np.allclose(steps, np.round(steps), atol=1e-3)
    # quadratic in z: 16x farther -> about 16x the error (noise + quantisation)
    assert errors[4.0] > 8 * errors[1.0]
    assert 0.01 < errors[4.0] < 0.08


def test_range_limits_make_holes():
    options = S.SensorOptions(glossy_fraction=0.0, min_signal=0.0)
    near = _degrade(*_flat_wall(z=0.3), options=options)[1]
    far = _degrade(*_flat_wall(z=6.0), options=options)[1]
    assert not near.any() and not far.any()


def test_dark_surfaces_and_grazing_angles_lose_the_pattern():
    bright = _degrade(*_flat_wall(z=3.0, reflectance=0.8))[1].mean()
    dark = _degrade(*_flat_wall(z=3.0, reflectance=0.05))[1].mean()
    assert bright > 0.95 and dark < 0.2
    # a bright wall 4 m away seen at 85 degrees: cos 0.09 -> weak signal
    depth, valid, normals, material, materials, outside = _flat_wall(z=4.0)
    normals[:] = 0
    normals[0] = -np.sin(np.radians(85))
    normals[2] = -np.cos(np.radians(85))
    grazing = _degrade(depth, valid, normals, material, materials, outside)[1]
    centre = grazing[:, 35:45]  # where the rays run straight ahead (cos = 0.09 there)
    assert centre.mean() < 0.2


def test_glossy_materials_have_holes_in_patches_and_a_specular_spot():
    wall = list(_flat_wall(120, 160, z=2.0))
    wall[3] = np.full(wall[0].shape, 4, np.int64)  # an object material (rows 1, 2: matte walls, ceiling)
    glossy = S.SensorOptions(glossy_fraction=1.0, glossy_dropout=0.3)
    valid = _degrade(*wall, options=glossy)[1]
    matte = _degrade(*wall, options=S.SensorOptions(glossy_fraction=0.0))[1]
    assert matte.mean() > 0.95
    assert valid.mean() < matte.mean() - 0.2
    h, w = valid.shape
    cy, cx = intrinsics(h, w)[3], intrinsics(h, w)[2]
    assert not valid[int(round(cy)), int(round(cx))]  # looking straight at it: saturated
    # patches, not salt and pepper: neighbours agree far more often than
    # independent pixels would (p^2 + (1 - p)^2 for a hole fraction p)
    holes = ~valid
    p = holes.mean()
    same = (holes[:, 1:] == holes[:, :-1]).mean()
    assert same > p * p + (1 - p) * (1 - p) + 0.2
    # the walls' own material row is never glossy
    wall[3] = np.full(wall[0].shape, 1, np.int64)
    assert _degrade(*wall, options=glossy)[1].mean() > 0.95


def test_projector_shadow_is_as_wide_as_the_parallax():
    h, w = 20, 80
    depth = np.full((h, w), 3.0)
    depth[:, :30] = 1.0  # a near surface on the left
    focal, baseline = 100.0, 0.075
    shadow = S.shadow_holes(depth, focal, baseline, 0.05)
    width = focal * baseline * (1 / 1.0 - 1 / 3.0)  # 5 px
    assert shadow[:, 30:30 + int(round(width))].all()
    assert not shadow[:, 30 + int(round(width)):].any() and not shadow[:, :30].any()
    # far on the left, near on the right: no shadow (the projector sees that edge)
    assert not S.shadow_holes(depth[:, ::-1].copy(), focal, baseline, 0.05).any()


def test_kinect_holes_option_is_unchanged_and_applies_to_labels():
    options = make_options(SIZE, kinect_holes=True)
    sample = generate_sample(3, "train", 0, options)
    assert not sample["depth_mask"].all()
    # the sensor keeps the labels' clean targets
    both = generate_sample(3, "train", 0, make_options(SIZE, kinect_holes=True, sensor="kinect"))
    assert np.array_equal(both["depth_mask"], sample["depth_mask"])
    assert np.array_equal(both["depth"], sample["depth"])


@pytest.mark.parametrize("spec, message", [
    ("kinnect", "sensor must be one of kinect"),
    ({"max_rang": 4}, "unknown sensor parameter 'max_rang' (did you mean 'max_range'?)"),
    ({"max_range": -1}, "sensor.max_range must be >= 0.0"),
    ({"min_range": 3, "max_range": 2}, "must exceed sensor.min_range"),
    ({"edge_dropout": "a lot"}, "sensor.edge_dropout must be a number"),
    (3, "sensor must be a preset name"),
])
def test_bad_sensor_options_are_one_clear_line(spec, message):
    with pytest.raises(ConfigError, match="synthetic: ") as info:
        make_options(SIZE, sensor=spec)
    assert message in str(info.value)


def test_dataset_sample_carries_sensor_maps_that_move_with_the_image(tmp_path):
    ds = SyntheticRooms(split="train", size=2, seed=5, image_size=list(SIZE), sensor={"max_range": 4.0})
    sample = ds[0]
    assert sample["sensor_depth"].shape == (1,) + SIZE and sample["sensor_normals"].shape == (3,) + SIZE
    assert sample["has"]["sensor_depth"] and sample["has"]["sensor_normals"]
    assert float(sample["sensor_depth"].max()) <= 4.0
    assert torch.equal(sample["depth"], SyntheticRooms(split="train", size=2, seed=5,
                                                       image_size=list(SIZE))[0]["depth"])
    flipped = hflip(sample)  # sensor normals are a vector field: x negated by the flip
    assert torch.equal(flipped["sensor_normals"][0], -sample["sensor_normals"][0].flip(-1))
    assert torch.equal(flipped["sensor_depth"], sample["sensor_depth"].flip(-1))
    small = Resize((30, 40))(sample)
    assert small["sensor_depth"].shape == (1, 30, 40) and small["sensor_depth_mask"].dtype == torch.bool
    batch = collate([sample, ds[1]])
    assert batch["sensor_depth"].shape == (2, 1) + SIZE and batch["has"]["sensor_depth"].all()


def test_cache_and_pack_keep_the_sensor_maps(tmp_path):
    from mtlkit.data.synthetic.cli import write_set

    options = make_options(SIZE, sensor="kinect")
    write_set(str(tmp_path / "set"), 3, 2, "test", options, progress=False, preview=True, pack=True)
    direct = generate_sample(2, "test", 1, options)
    stored = load_sample(str(tmp_path / "set" / "samples" / "000001.npz"))
    packed = Pack(str(tmp_path / "set")).sample(1)
    for key in S.SENSOR_KEYS:
        assert np.array_equal(stored[key], direct[key]) and np.array_equal(packed[key], direct[key]), key
    ds = SyntheticRooms(root=str(tmp_path / "set"))
    assert torch.equal(ds[1]["sensor_depth"][0], torch.from_numpy(direct["sensor_depth"]))
    # a set without a sensor packs and reads as before
    write_set(str(tmp_path / "plain"), 2, 2, "test", make_options(SIZE), progress=False, preview=False)
    write_pack(str(tmp_path / "plain"), 2)
    assert "sensor_depth" not in Pack(str(tmp_path / "plain")).sample(0)
    assert "sensor_depth" not in SyntheticRooms(root=str(tmp_path / "plain"))[0]


def test_ideal_preset_measures_the_exact_depth_except_through_openings():
    exact = generate_sample(7, "train", 0, make_options(SIZE))
    ideal = generate_sample(7, "train", 0, make_options(SIZE, sensor="ideal"))
    mask = ideal["sensor_depth_mask"]
    assert np.array_equal(ideal["sensor_depth"][mask], exact["depth"][mask])
    assert mask.mean() > 0.8
    kinect = generate_sample(7, "train", 0, make_options(SIZE, sensor="kinect"))
    assert mask.mean() > kinect["sensor_depth_mask"].mean()
