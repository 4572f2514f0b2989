"""How the synthetic rooms look, apart from what they are: a controlled domain shift.

An :class:`Appearance` changes the lighting, the materials' colours and
textures and the camera's response, and nothing else: the layout (room,
objects, camera pose, scene type), and so depth, normals, instances, boxes and
labels, are the same for every appearance. Named target domains
(:data:`DOMAINS`, e.g. ``dusk``) are sets of option values; a dataset selects
one with ``domain: dusk`` and may override single values with
``appearance: {gamma: 2.0}`` (see docs/synthetic.md).

Options (defaults: the source world, rendered bit for bit as without them):

* lighting: ``light_temperature`` (K, 6500 = white), ``light_intensity``
  (scale of the lights' power), ``lights`` (number of point lights sharing
  that power; extra ones are placed like the first, under the ceiling),
  ``ambient_temperature``, ``ambient_intensity`` (scale of the ambient term),
  ``outside_intensity`` (brightness of what windows and doors look onto);
* materials: ``hue_shift`` (degrees), ``saturation`` and ``albedo`` (scales),
  ``texture_scale`` (scale of the pattern frequencies), ``texture_contrast``
  (scale of the difference between a material's two colours), ``textures``
  (new probabilities of the six textures of :data:`~.materials.TEXTURES`,
  redrawn for every object material; null keeps them);
* camera: ``exposure`` (gain), ``white_balance`` (per-channel gains),
  ``gamma`` (tone curve x ** (1 / gamma); the source camera's is 1.4),
  ``vignetting`` (fall-off strength), ``blur`` (Gaussian sigma in pixels of a
  640-pixel-wide image, scaled to the render), ``shot_noise`` (signal-dependent
  noise: sigma = shot_noise * sqrt(intensity)).

Randomness: the sample's own stream (:func:`~.generate.sample_rng`) draws the
layout and then exactly the same sensor draws (gain, read noise) under every
appearance, so what comes after in it (e.g. Kinect holes) is unchanged too;
what an appearance adds (texture redraws, extra lights' positions, shot noise)
comes from streams of its own, :func:`appearance_streams`, one per stage, so
changing one stage's options does not move another's draws.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import numpy as np
from scipy.ndimage import gaussian_filter

from mtlkit.errors import ConfigError

from .materials import TEXTURES, FaceShading, face_shading

#: spawn-key element of the appearance streams (the sample's stream is (split, index);
#: the depth sensor's (split, index, 1))
APPEARANCE_STREAM = 2
#: material rows of the room in a scene mesh (render._room_mesh): floor, walls, ceiling, outside;
#: objects follow, two rows each
ROOM_ROWS = 4
#: the "outside" row: its look is the lighting's (outside_intensity), not a material's
OUTSIDE_ROW = 3
#: the width (pixels) at which ``blur`` is given
BLUR_REFERENCE_WIDTH = 640
#: the temperature (K) rendered as white light
WHITE_K = 6500.0


@dataclass(frozen=True)
class Appearance:
    """Appearance options; the defaults are the source world (module docstring)."""

    # lighting
    light_temperature: float = WHITE_K
    light_intensity: float = 1.0
    lights: int = 1
    ambient_temperature: float = WHITE_K
    ambient_intensity: float = 1.0
    outside_intensity: float = 1.0
    # materials
    hue_shift: float = 0.0
    saturation: float = 1.0
    albedo: float = 1.0
    texture_scale: float = 1.0
    texture_contrast: float = 1.0
    textures: Optional[Tuple[float, ...]] = None
    # camera
    exposure: float = 1.0
    white_balance: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.4
    vignetting: float = 0.25
    blur: float = 0.0
    shot_noise: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["white_balance"] = list(self.white_balance)
        d["textures"] = None if self.textures is None else list(self.textures)
        return d

    @property
    def draws(self) -> bool:
        """Whether rendering with it draws random values (from :func:`appearance_streams`)."""
        return self.lights > 1 or self.textures is not None or self.shot_noise > 0

    @property
    def restyles_materials(self) -> bool:
        return (self.hue_shift % 360.0 != 0.0 or self.saturation != 1.0 or self.albedo != 1.0
                or self.texture_scale != 1.0 or self.texture_contrast != 1.0 or self.textures is not None)


SOURCE = Appearance()

#: the named target domains: option values over the source's. Chosen on the
#: tuning data seed 1000 so that a source-trained detector loses >= 5 mAP@0.5
#: (docs/synthetic.md, "Target domains").
DOMAINS: Dict[str, Dict[str, Any]] = {
    "source": {},
    # evening: one dim, warm lamp; dark bluish windows; a camera turning its
    # gain up (noisier) and a warm cast it does not fully correct
    "dusk": {
        "light_temperature": 2700.0, "light_intensity": 0.55, "ambient_temperature": 12000.0,
        "ambient_intensity": 0.35, "outside_intensity": 0.12, "exposure": 1.5,
        "white_balance": [1.05, 1.0, 0.9], "shot_noise": 0.04,
    },
    # a refurnished showroom under cool light from several ceiling lamps, seen
    # by another camera: turned, more saturated finishes with more and finer
    # patterns, a flatter tone curve, a cool white balance and a softer lens
    "showroom": {
        "light_temperature": 5000.0, "lights": 3, "light_intensity": 1.3, "ambient_intensity": 1.2,
        "hue_shift": 140.0, "saturation": 1.5, "texture_scale": 1.8, "texture_contrast": 1.5,
        "textures": [0.15, 0.25, 0.2, 0.1, 0.1, 0.2], "gamma": 2.2,
        "white_balance": [0.92, 1.0, 1.1], "blur": 4.0,
    },
}

#: allowed range of each numeric option (inclusive), for the errors
RANGES: Dict[str, Tuple[float, float]] = {
    "light_temperature": (1700.0, 25000.0), "light_intensity": (0.0, 10.0), "lights": (0, 8),
    "ambient_temperature": (1700.0, 25000.0), "ambient_intensity": (0.0, 10.0),
    "outside_intensity": (0.0, 10.0), "hue_shift": (-360.0, 360.0), "saturation": (0.0, 4.0),
    "albedo": (0.0, 4.0), "texture_scale": (0.05, 20.0), "texture_contrast": (0.0, 4.0),
    "exposure": (0.01, 16.0), "gamma": (0.5, 5.0), "vignetting": (0.0, 4.0), "blur": (0.0, 20.0),
    "shot_noise": (0.0, 1.0),
}


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _number(value: Any, where: str, lo: float, hi: float, integer: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if integer:
        ok = ok and float(value) == int(value)
    if not ok or not lo <= float(value) <= hi:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where} must be {kind} in [{lo:g}, {hi:g}], got {value!r}")
    return int(value) if integer else float(value)


def _numbers(value: Any, where: str, count: int, lo: float, hi: float) -> Tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != count:
        raise ConfigError(f"{where} must be a list of {count} numbers in [{lo:g}, {hi:g}], got {value!r}")
    return tuple(_number(v, where, lo, hi) for v in value)


def make_appearance(domain: Optional[str] = None, appearance: Optional[Mapping[str, Any]] = None,
                    where: str = "synthetic") -> Optional[Appearance]:
    """The validated :class:`Appearance` of ``domain`` (a name of :data:`DOMAINS`;
    None: ``source``) with the ``appearance`` option values on top; ``None``
    when that is the source's (rendered exactly as without options).

    :raises ConfigError: one line naming the option and what it expects.
    """
    name = "source" if domain is None else domain
    if not isinstance(name, str) or name not in DOMAINS:
        hint = _did_you_mean(name, DOMAINS) if isinstance(name, str) else ""
        raise ConfigError(f"{where}: domain must be one of {sorted(DOMAINS)}, got {domain!r}{hint}")
    if appearance is not None and not isinstance(appearance, Mapping):
        raise ConfigError(f"{where}: appearance must be a mapping of option: value "
                          f"(options: {', '.join(f.name for f in fields(Appearance))}), got {appearance!r}")
    values = {**DOMAINS[name], **(appearance or {})}
    known = {f.name for f in fields(Appearance)}
    checked: Dict[str, Any] = {}
    for key, value in values.items():
        at = f"{where}: appearance.{key}"
        if key not in known:
            raise ConfigError(f"{where}: unknown appearance option '{key}'{_did_you_mean(key, known)}; "
                              f"known options: {', '.join(sorted(known))}")
        if key == "white_balance":
            checked[key] = _numbers(value, at, 3, 0.05, 4.0)
        elif key == "textures":
            if value is not None:
                weights = _numbers(value, at, len(TEXTURES), 0.0, 1e6)
                if sum(weights) <= 0:
                    raise ConfigError(f"{at} must not be all zeros (one weight per texture {list(TEXTURES)})")
                checked[key] = weights
            else:
                checked[key] = None
        else:
            lo, hi = RANGES[key]
            checked[key] = _number(value, at, lo, hi, integer=key == "lights")
    look = replace(SOURCE, **checked)
    return None if look == SOURCE else look


class Streams(NamedTuple):
    """The random streams of one sample's appearance, one per stage."""

    materials: np.random.Generator
    lights: np.random.Generator
    camera: np.random.Generator


def appearance_streams(seed: int, split_id: int, index: int) -> Streams:
    """Streams of sample ``index`` of split ``split_id``: ``SeedSequence(seed,
    spawn_key=(split_id, index, APPEARANCE_STREAM, stage))``."""
    return Streams(*(np.random.default_rng(np.random.SeedSequence(
        int(seed), spawn_key=(int(split_id), int(index), APPEARANCE_STREAM, stage))) for stage in range(3)))


# -- colour ------------------------------------------------------------------------------------------

def temperature_rgb(kelvin: float) -> np.ndarray:
    """(3,) float32 linear RGB of black-body light at ``kelvin``, relative to
    :data:`WHITE_K` (which gives exactly (1, 1, 1)), at equal luminance.

    The chromaticity is the Planckian locus in CIE xy (the cubic-spline fit of
    Kim et al., US patent 7,024,034, valid 1667-25000 K), turned into linear
    sRGB with the standard XYZ -> sRGB (D65) matrix.
    """
    if kelvin == WHITE_K:
        return np.ones(3, np.float32)
    rgb = _planck_rgb(float(kelvin)) / _planck_rgb(WHITE_K)
    rgb /= float(rgb @ np.array([0.2126, 0.7152, 0.0722]))
    return rgb.astype(np.float32)


def _planck_rgb(kelvin: float) -> np.ndarray:
    t = kelvin
    if t <= 4000:
        x = -0.2661239e9 / t ** 3 - 0.2343589e6 / t ** 2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t ** 3 + 2.1070379e6 / t ** 2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x ** 3 - 1.34811020 * x ** 2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x ** 3 - 1.37418593 * x ** 2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x ** 3 - 5.87338670 * x ** 2 + 3.75112997 * x - 0.37001483
    xyz = np.array([x / y, 1.0, (1.0 - x - y) / y])
    to_srgb = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    return np.clip(to_srgb @ xyz, 1e-4, None)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] -> (..., 3) HSV, hue in [0, 1)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    c = v - rgb.min(-1)
    s = np.where(v > 0, c / np.maximum(v, 1e-12), 0.0)
    safe = np.maximum(c, 1e-12)
    h = np.where(v == r, ((g - b) / safe) % 6.0, np.where(v == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    h = np.where(c > 0, h / 6.0, 0.0)
    return np.stack([h % 1.0, s, v], -1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv[..., 0] * 6.0, hsv[..., 1], hsv[..., 2]
    k = np.stack([(5.0 + h) % 6.0, (3.0 + h) % 6.0, (1.0 + h) % 6.0], -1)
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


# -- materials ---------------------------------------------------------------------------------------

def restyle_materials(materials: np.ndarray, look: Appearance, rng: np.random.Generator) -> np.ndarray:
    """New material rows (M, len(FIELDS)) of a scene mesh (rows of
    ``render.build_scene_mesh``): colours turned by ``hue_shift``, scaled by
    ``saturation`` and ``albedo``, second colours pushed from the first by
    ``texture_contrast``, frequencies scaled by ``texture_scale``; with
    ``textures``, every object material gets a texture drawn from ``rng``.
    The outside row is left to the lighting."""
    out = np.array(materials, dtype=float, copy=True)
    rows = np.array([r for r in range(len(out)) if r != OUTSIDE_ROW], dtype=np.int64)
    colours = out[rows, 0:6].reshape(-1, 2, 3)
    hsv = rgb_to_hsv(colours)
    hsv[..., 0] = (hsv[..., 0] + look.hue_shift / 360.0) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] * look.saturation, 0.0, 1.0)
    colours = np.clip(hsv_to_rgb(hsv) * look.albedo, 0.0, 1.0)
    first = colours[:, 0]
    colours[:, 1] = np.clip(first + (colours[:, 1] - first) * look.texture_contrast, 0.0, 1.0)
    out[rows, 0:6] = colours.reshape(-1, 6)
    out[rows, 7] *= look.texture_scale
    objects = np.arange(ROOM_ROWS, len(out))
    if look.textures is not None and len(objects):
        weights = np.asarray(look.textures, float)
        out[objects, 6] = rng.choice(len(TEXTURES), size=len(objects), p=weights / weights.sum())
    return out


def restyled_shading(materials: np.ndarray, face_material: np.ndarray, face_normals: np.ndarray,
                     look: Appearance, rng: np.random.Generator) -> FaceShading:
    """The :class:`FaceShading` of a scene under ``look`` (the mesh's own
    materials are not touched: only how they are rendered changes)."""
    return face_shading(restyle_materials(materials, look, rng), face_material, face_normals)


# -- lighting ----------------------------------------------------------------------------------------

def light_positions(look: Appearance, first: np.ndarray, size, rng: np.random.Generator) -> np.ndarray:
    """(L, 3) positions of the ``look.lights`` point lights: the layout's
    light first, the others placed the way the layout places it (0.2-0.8 of
    the room's width and depth, 0.1-0.4 m under the ceiling)."""
    if look.lights == 0:
        return np.zeros((0, 3), np.float32)
    extra = [(rng.uniform(0.2, 0.8) * size[0], rng.uniform(0.2, 0.8) * size[1], size[2] - rng.uniform(0.1, 0.4))
             for _ in range(look.lights - 1)]
    return np.array([np.asarray(first, float)] + extra, np.float32).reshape(-1, 3)


def light_pixels(look: Appearance, positions: np.ndarray, power: float, ambient: float, points: np.ndarray,
                 normals: np.ndarray, emissive: np.ndarray, occluded=None) -> np.ndarray:
    """(P, 3) float32 light reaching ``points`` (P, 3) float32 of world ``normals``
    (P, 3): coloured ambient + every light's Lambertian term with an
    inverse-square fall-off (clamped at 2; ``power`` shared by the lights);
    ``emissive`` (P,) faces show the outside's brightness instead.
    ``occluded(starts, to_light, reach)`` -> (P,) bool casts the shadow rays
    (None: no shadows). With the source's options this is, operation for
    operation, the renderer's original single white light."""
    each = power * look.light_intensity / max(look.lights, 1)
    total = np.zeros(len(points), np.float32)
    for position in positions:
        to_light = position - points
        dist = np.sqrt(np.einsum("ij,ij->i", to_light, to_light))
        lambert = np.einsum("ij,ij->i", normals, to_light) / np.maximum(dist, 1e-6)
        np.clip(lambert, 0.0, None, out=lambert)
        if occluded is not None:
            # the direction is not normalised, so distance 1 is the light itself;
            # unlit pixels get a zero-length ray, which Embree skips
            starts = points + normals * np.float32(2e-3)
            reach = np.where(lambert > 0, np.float32(0.999), np.float32(0.0))
            lambert[occluded(starts, to_light, reach)] = 0.0
        total += lambert * np.minimum(each * 6.0 / (1.0 + dist ** 2), 2.0)
    light = (ambient * look.ambient_intensity) * temperature_rgb(look.ambient_temperature) \
        + total[:, None] * temperature_rgb(look.light_temperature)
    light += (np.float32(look.outside_intensity) - light) * emissive[:, None]
    return light


# -- camera ------------------------------------------------------------------------------------------

def expose(look: Appearance, colour: np.ndarray, rng: np.random.Generator, camera_rng: np.random.Generator,
           noise: float, vignette_of, gauss_lut: np.ndarray) -> np.ndarray:
    """The camera: linear ``colour`` (H, W, 3) float32 (modified) -> (H, W, 3) uint8.

    The sample's ``rng`` draws exactly what the source camera draws (a gain and
    white balance jitter, then the read noise through ``gauss_lut``); the shot
    noise comes from ``camera_rng``. ``vignette_of(strength)`` -> (H, W) factors.
    """
    height, width = colour.shape[:2]
    gain = (rng.uniform(0.92, 1.08, 3) * rng.uniform(0.85, 1.15)).astype(np.float32)
    gain *= np.float32(look.exposure) * np.asarray(look.white_balance, np.float32)
    colour *= vignette_of(look.vignetting)[..., None] * gain
    if look.blur > 0:
        sigma = look.blur * width / BLUR_REFERENCE_WIDTH
        colour = gaussian_filter(colour, sigma=(sigma, sigma, 0.0), mode="nearest")
    colour += gauss_lut[rng.integers(0, 256, colour.shape, dtype=np.uint8)] * np.float32(noise)
    if look.shot_noise > 0:
        scale = np.sqrt(np.clip(colour, 0.0, None)) * np.float32(look.shot_noise)
        colour += scale * camera_rng.standard_normal(colour.shape, dtype=np.float32)
    lut = tone_lut(look.gamma)
    return lut[np.clip(colour * (len(lut) - 1) + 0.5, 0, len(lut) - 1).astype(np.int32)]


@functools.lru_cache(maxsize=16)
def tone_lut(gamma: float, steps: int = 4096) -> np.ndarray:
    """[0, 1] linear intensity (``steps`` steps) -> 8-bit value through x ** (1 / gamma)."""
    lut = np.round(np.linspace(0.0, 1.0, steps) ** (1 / gamma) * 255).astype(np.uint8)
    lut.setflags(write=False)
    return lut


__all__ = ["APPEARANCE_STREAM", "Appearance", "DOMAINS", "RANGES", "SOURCE", "Streams", "appearance_streams",
           "expose", "hsv_to_rgb", "light_pixels", "light_positions", "make_appearance",
           "restyle_materials", "restyled_shading", "rgb_to_hsv", "temperature_rgb", "tone_lut"]
