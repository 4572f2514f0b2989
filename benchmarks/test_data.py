"""Speed of the synthetic rooms generator (pytest-benchmark).

    python -m pytest benchmarks/test_data.py --benchmark-only -q

Samples per second at 320x240 and 640x480 are in each benchmark's
``extra_info``. The assertions are ratios against baselines measured in the
same run, so they hold on any machine:

* a whole sample (layout, meshes, BVH, primary + shadow rays, shading, ground
  truth) costs at most 6x one bare Embree primary cast of the same image: the
  Python side must stay a small multiple of the unavoidable ray casting;
* a 640x480 sample costs at most 7x a 320x240 one (4x the pixels): nothing
  grows much faster than the pixel count (the per-pixel numpy work leaves the
  CPU caches at 640x480, hence the margin).
"""

from __future__ import annotations

import itertools
import timeit

import numpy as np
import pytest

from mtlkit.data.synthetic import generate_sample, make_options
from mtlkit.data.synthetic.generate import sample_rng
from mtlkit.data.synthetic.layout import sample_layout
from mtlkit.data.synthetic.raycast import RayCaster
from mtlkit.data.synthetic.render import _rotate, build_scene_mesh, pixel_rays

SIZES = {"320x240": (240, 320), "640x480": (480, 640)}


def _sample_loop(size):
    options = make_options(size)
    counter = itertools.count()
    generate_sample(0, "train", 10_000, options)  # warm caches (templates, rays)
    return lambda: generate_sample(0, "train", next(counter), options)


@pytest.mark.parametrize("name", list(SIZES))
def test_synthetic_sample(benchmark, name):
    step = _sample_loop(SIZES[name])
    rounds = 30 if name == "320x240" else 8
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info["samples_per_s"] = 1.0 / benchmark.stats.stats.mean
    benchmark.extra_info["image_size"] = name


def _min_time(fn, number: int, repeat: int = 5) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def _mean_sample_time(size, indices) -> float:
    options = make_options(size)
    generate_sample(0, "train", 10_000, options)

    def run():
        for i in indices:
            generate_sample(0, "train", i, options)

    return _min_time(run, number=1, repeat=3) / len(indices)


def _bare_cast_time(size, indices) -> float:
    """One primary Embree cast per image over the same scenes (BVH prebuilt)."""
    h, w = size
    casts = []
    for i in indices:
        layout = sample_layout(sample_rng(0, "train", i))
        mesh = build_scene_mesh(layout)
        caster = RayCaster(mesh.vertices, mesh.faces)
        rays = _rotate(pixel_rays(h, w), layout.camera.rotation.astype(np.float32))
        origins = np.broadcast_to(layout.camera.position.astype(np.float32), rays.shape)
        casts.append((caster, origins, rays))

    def run():
        for caster, origins, rays in casts:
            caster.first_triangle(origins, rays)

    return _min_time(run, number=1, repeat=3) / len(indices)


def test_synthetic_speed_ratios(benchmark):
    indices = range(12)
    small, large = SIZES["320x240"], SIZES["640x480"]
    sample_small = _mean_sample_time(small, indices)
    cast_small = _bare_cast_time(small, indices)
    sample_large = _mean_sample_time(large, range(4))
    sample_small_4 = _mean_sample_time(small, range(4))
    benchmark.extra_info.update({
        "sample_320x240_ms": sample_small * 1e3,
        "samples_per_s_320x240": 1 / sample_small,
        "bare_cast_320x240_ms": cast_small * 1e3,
        "sample_640x480_ms": sample_large * 1e3,
        "samples_per_s_640x480": 1 / sample_large,
    })
    benchmark.pedantic(lambda: None, rounds=1)
    assert sample_small / cast_small <= 6.0, (sample_small, cast_small)
    assert sample_large / sample_small_4 <= 7.0, (sample_large, sample_small_4)
