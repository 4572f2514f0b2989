"""A structured-light depth sensor (Kinect v1-like) for the synthetic rooms.

The renderer gives exact depth; a real RGB-D camera does not. :func:`degrade`
turns the exact depth of a rendered frame into what such a sensor would
measure, from the physics of active triangulation (projector and IR camera
``baseline`` metres apart, disparity d = f b / z):

* **range**: nothing closer than ``min_range`` or farther than ``max_range``;
* **noise growing with distance**: Gaussian noise of ``disparity_noise``
  pixels on the disparity (at the sensor's native 640-pixel width), so the
  depth error grows as z^2 (about 2 mm at 1 m, 3 cm at 4 m with the defaults,
  Khoshelham & Elberink 2012, Nguyen et al. 2012);
* **quantisation**: the disparity is rounded to ``disparity_step`` pixels (1/8
  on a Kinect), so depth takes discrete values z^2 / (f b) / 8 apart;
* **holes**:

  - *openings*: windows and doors (glass, or beyond range), as
    :func:`kinect_holes`;
  - *projector shadows*: the far side of every depth discontinuity where the
    near surface hides the projector's pattern, as wide as the parallax
    f b (1/z_near - 1/z_far) pixels (the band ``kinect_holes`` draws 1-3 px wide);
  - *edges*: pixels next to a discontinuity are dropped with probability
    ``edge_dropout`` (mixed, "flying" pixels the sensor's filter removes);
  - *dark surfaces and grazing angles*: the returned IR signal is
    reflectance x cos(incidence) / z^2; below ``min_signal`` (with a
    log-normal jitter of ``signal_jitter`` correlated over patches) there is
    no measurement;
  - *glossy surfaces*: each material of the objects and the floor is glossy
    with probability ``glossy_fraction`` (walls and ceiling are matte); a
    glossy surface seen within ``specular_angle`` degrees of head-on saturates
    the camera (the projector sits beside it), and elsewhere loses
    ``glossy_dropout`` of its area in patches.

Sensor normals are computed from the degraded depth
(:func:`mtlkit.data.geometry.normals_from_depth`, central differences
``normals_step`` pixels apart), as a user of a real sensor would. Everything random comes from the sample's own sensor stream
(:func:`sensor_rng`), so the sensor is deterministic per (seed, split, index)
and turning it on changes nothing else of the sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import ndtri

from mtlkit.data.geometry import normals_from_depth
from mtlkit.errors import ConfigError, did_you_mean

#: the sensor's native image width: disparities (noise, quantisation) are in its pixels
NATIVE_WIDTH = 640
#: spawn-key element of the sensor's random stream (the sample's is (split, index))
SENSOR_STREAM = 1
#: material rows that are never glossy: walls and ceiling (matte paint; rows of render._room_mesh)
MATTE_ROWS = (1, 2)
#: the sample keys a sensor adds: the measurement in the label's format, prefixed
SENSOR_KEYS = ("sensor_depth", "sensor_depth_mask", "sensor_normals", "sensor_normals_mask")


@dataclass(frozen=True)
class SensorOptions:
    """The sensor model's parameters (see the module docstring).

    The defaults are a Kinect v1: 7.5 cm baseline, 580 px focal length at
    640x480, 1/8-pixel disparity steps, 0.5-5 m range."""

    baseline: float = 0.075
    focal_px: float = 580.0
    min_range: float = 0.5
    max_range: float = 5.0
    disparity_noise: float = 0.08
    disparity_step: float = 0.125
    edge_threshold: float = 0.05
    edge_dropout: float = 0.5
    min_signal: float = 0.008
    signal_jitter: float = 0.3
    glossy_fraction: float = 0.15
    specular_angle: float = 6.0
    glossy_dropout: float = 0.3
    normals_step: int = 2

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


#: named presets of the ``sensor`` option: ``kinect`` (the defaults), and
#: ``ideal``, a sensor without noise, quantisation, range limits or holes but
#: through windows and doors (its depth is the exact depth there; its normals
#: still come from that depth), for measuring what the degradations cost
PRESETS: Dict[str, SensorOptions] = {
    "kinect": SensorOptions(),
    "ideal": SensorOptions(min_range=0.0, max_range=1e6, disparity_noise=0.0, disparity_step=0.0,
                           edge_threshold=1.0, edge_dropout=0.0, min_signal=0.0, glossy_fraction=0.0),
}

_RANGES = {
    "baseline": (0.0, None), "focal_px": (0.0, None), "min_range": (0.0, None), "max_range": (0.0, None),
    "disparity_noise": (0.0, None), "disparity_step": (0.0, None), "edge_threshold": (0.0, 1.0),
    "edge_dropout": (0.0, 1.0), "min_signal": (0.0, None), "signal_jitter": (0.0, None),
    "glossy_fraction": (0.0, 1.0), "specular_angle": (0.0, 90.0), "glossy_dropout": (0.0, 1.0),
}


def make_sensor(spec: Any) -> Optional[SensorOptions]:
    """The ``sensor`` option -> :class:`SensorOptions` or None.

    ``spec``: None / False (no sensor), True or a preset name (``"kinect"``),
    or a mapping of parameters over the Kinect defaults, optionally with
    ``preset``. Raises :class:`ConfigError` naming the parameter."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return PRESETS["kinect"]
    if isinstance(spec, SensorOptions):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ConfigError(f"synthetic: sensor must be one of {', '.join(PRESETS)}, a mapping of "
                              f"sensor parameters or null; got {spec!r}")
        return PRESETS[spec]
    if not isinstance(spec, Mapping):
        raise ConfigError(f"synthetic: sensor must be a preset name ({', '.join(PRESETS)}), a mapping of "
                          f"sensor parameters or null; got {spec!r}")
    spec = dict(spec)
    base = make_sensor(spec.pop("preset", "kinect"))
    known = {f.name: f.type for f in fields(SensorOptions)}
    values = base.to_dict()
    for key, value in spec.items():
        if key not in known:
            raise ConfigError(f"synthetic: unknown sensor parameter '{key}'{did_you_mean(key, known)}; "
                              f"parameters: preset, {', '.join(known)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ConfigError(f"synthetic: sensor.{key} must be a number, got {value!r}")
        low, high = _RANGES.get(key, (1, None))
        if value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise ConfigError(f"synthetic: sensor.{key} must be {bound}, got {value!r}")
        values[key] = int(value) if key == "normals_step" else float(value)
    if values["max_range"] <= values["min_range"]:
        raise ConfigError(f"synthetic: sensor.max_range ({values['max_range']}) must exceed "
                          f"sensor.min_range ({values['min_range']})")
    if values["normals_step"] < 1:
        raise ConfigError(f"synthetic: sensor.normals_step must be >= 1, got {values['normals_step']}")
    return SensorOptions(**values)


def sensor_rng(seed: int, split_id: int, index: int) -> np.random.Generator:
    """The sensor's random stream of sample ``index`` of split ``split_id``
    (disjoint from the sample's own stream, ``SeedSequence(seed, (split, index))``)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(split_id), int(index),
                                                                                SENSOR_STREAM)))


def kinect_holes(depth: np.ndarray, outside: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Validity mask (H, W) bool of the ``kinect_holes`` option (applied to the
    *labels*): False through openings and in a 1-3 px band on the far side of
    depth discontinuities (where a Kinect's projector is shadowed). The
    sensor's :func:`shadow_holes` draws that band at its physical width."""
    valid = ~outside
    h, w = depth.shape
    band = max(1, int(round(w / 320)))
    jump = np.zeros_like(valid)
    dx = depth[:, 1:] - depth[:, :-1]
    far_right = dx > 0.08 * depth[:, 1:]  # the right pixel is much farther
    for k in range(band + int(rng.integers(0, 2))):
        jump[:, 1 + k:] |= far_right[:, :w - 1 - k]
    dy = depth[1:] - depth[:-1]
    jump[1:] |= np.abs(dy) > 0.08 * depth[1:]
    return valid & ~jump


def shadow_holes(depth: np.ndarray, focal: float, baseline: float, threshold: float) -> np.ndarray:
    """(H, W) bool, True in the projector's shadow: right of every place where
    the depth jumps away by more than ``threshold`` (relative), over the
    parallax width ``focal * baseline * (1/z_near - 1/z_far)`` pixels
    (``focal`` in pixels of this image). The projector sits to the side of
    the camera along +x, so the shadow falls right of near objects."""
    h, w = depth.shape
    near, far = depth[:, :-1], depth[:, 1:]
    jump = far - near > threshold * far
    width = np.where(jump, focal * baseline * (1.0 / np.maximum(near, 1e-6) - 1.0 / np.maximum(far, 1e-6)),
                     0.0)
    reach = np.floor(width + 0.5).astype(np.int64)  # pixels shadowed right of the near pixel
    shadow = np.zeros((h, w), bool)
    for k in range(1, int(reach.max(initial=0)) + 1):
        shadow[:, k:] |= reach[:, :w - k] >= k
    return shadow


def edge_pixels(depth: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) bool: pixels with a 4-neighbour more than ``threshold`` (relative) away in depth."""
    edge = np.zeros(depth.shape, bool)
    rel = threshold * depth
    dx = np.abs(depth[:, 1:] - depth[:, :-1])
    dy = np.abs(depth[1:] - depth[:-1])
    edge[:, 1:] |= dx > rel[:, 1:]
    edge[:, :-1] |= dx > rel[:, :-1]
    edge[1:] |= dy > rel[1:]
    edge[:-1] |= dy > rel[:-1]
    return edge


def smooth_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W) standard-normal noise correlated over patches about 1/40 of the
    width (drawn on a coarse grid, upsampled bilinearly and rescaled to unit
    variance): holes of a real sensor come in blobs, not single pixels."""
    cell = max(1.0, w / 40.0)
    coarse = rng.standard_normal((int(np.ceil(h / cell)) + 1, int(np.ceil(w / cell)) + 1))
    field = F.interpolate(torch.from_numpy(coarse)[None, None], size=(h, w), mode="bilinear",
                          align_corners=True)[0, 0].numpy()
    return field / max(float(field.std()), 1e-6)


def _normal_quantile(p: float) -> float:
    """x with P(N(0, 1) < x) = p (p in [0, 1])."""
    return float(ndtri(min(max(p, 1e-12), 1 - 1e-12))) if 0 < p < 1 else (-np.inf if p <= 0 else np.inf)


def material_reflectance(materials: np.ndarray) -> np.ndarray:
    """(M,) IR reflectance of each material row (:mod:`.materials` FIELDS): the
    luminance of its first colour, averaged with its second one when the
    material is textured."""
    lum = np.array([0.299, 0.587, 0.114])
    first = materials[:, 0:3] @ lum
    second = materials[:, 3:6] @ lum
    textured = materials[:, 6] > 0
    return np.where(textured, 0.5 * (first + second), first)


def degrade(depth: np.ndarray, valid: np.ndarray, normals: np.ndarray, material: np.ndarray,
            materials: np.ndarray, outside: np.ndarray, rays: np.ndarray, fx: float,
            options: SensorOptions, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """What the sensor measures of a rendered frame.

    :param depth: (H, W) exact depth in metres (camera z).
    :param valid: (H, W) bool, a surface was hit.
    :param normals: (3, H, W) camera-frame unit normals facing the camera.
    :param material: (H, W) int material row of each pixel (-1: none).
    :param materials: (M, F) material rows (:mod:`.materials`).
    :param outside: (H, W) bool, seen through a window or door.
    :param rays: (H, W, 3) camera-frame ray directions (z = 1).
    :param fx: focal length in pixels of this image.
    :returns: (sensor depth (H, W) float32 metres, 0 in holes; mask (H, W) bool).
    """
    o = options
    h, w = depth.shape
    z = np.where(valid, depth, 0.0).astype(np.float64)
    ok = valid & ~outside & (z >= o.min_range) & (z <= o.max_range)

    # where the pattern cannot be seen: shadows, edges, weak or saturated returns
    ok &= ~shadow_holes(z, fx, o.baseline, o.edge_threshold)
    if o.edge_dropout > 0:
        ok &= ~(edge_pixels(z, o.edge_threshold) & (rng.random((h, w)) < o.edge_dropout))
    cos = np.abs(np.einsum("chw,hwc->hw", normals.astype(np.float64), rays.astype(np.float64)))
    cos /= np.maximum(np.linalg.norm(rays, axis=-1), 1e-12)
    rows = np.clip(material, 0, len(materials) - 1)
    reflectance = material_reflectance(materials)[rows]
    signal = reflectance * cos / np.maximum(z, 1e-6) ** 2
    jitter = np.exp(o.signal_jitter * smooth_field(rng, h, w)) if o.signal_jitter > 0 else 1.0
    ok &= signal * jitter >= o.min_signal
    glossy_rows = rng.random(len(materials)) < o.glossy_fraction
    glossy_rows[list(MATTE_ROWS)] = False
    glossy = glossy_rows[rows] & (material >= 0)
    specular = glossy & (cos >= np.cos(np.radians(o.specular_angle)))
    # glossy surfaces lose the pattern in patches, not in single pixels
    patches = smooth_field(rng, h, w) < _normal_quantile(o.glossy_dropout)
    ok &= ~specular & ~(glossy & patches)

    # what it reads where it sees: noisy, quantised disparity at the native width
    fb = o.focal_px * o.baseline
    disparity = fb / np.maximum(z, 1e-6) + o.disparity_noise * rng.standard_normal((h, w))
    if o.disparity_step > 0:
        disparity = np.round(disparity / o.disparity_step) * o.disparity_step
    ok &= disparity > 0
    measured = np.where(ok, fb / np.maximum(disparity, 1e-9), 0.0)
    ok &= (measured >= o.min_range) & (measured <= o.max_range)
    measured = np.where(ok, measured, 0.0)
    return measured.astype(np.float32), ok


def sensor_arrays(depth: np.ndarray, valid: np.ndarray, normals: np.ndarray, material: np.ndarray,
                  materials: np.ndarray, outside: np.ndarray, intrinsics: Tuple[float, float, float, float],
                  rays: np.ndarray, options: SensorOptions, rng: np.random.Generator
                  ) -> Dict[str, np.ndarray]:
    """The arrays a sensor adds to a sample (:data:`SENSOR_KEYS`): the degraded
    depth and its mask, and normals computed from it with their mask
    ((3, H, W) float32, 0 where invalid)."""
    fx, fy, cx, cy = intrinsics
    measured, mask = degrade(depth, valid, normals, material, materials, outside, rays, fx, options, rng)
    sensor_normals, normals_mask = normals_from_depth(measured, fx, fy, cx, cy, step=options.normals_step)
    return {
        "sensor_depth": measured,
        "sensor_depth_mask": mask,
        "sensor_normals": np.ascontiguousarray(sensor_normals.transpose(2, 0, 1)),
        "sensor_normals_mask": normals_mask,
    }
