"""Colours and procedural textures.

One pool (:data:`PALETTE`, :data:`TEXTURES`) serves *every* object class, so
an object's colour or texture says nothing about its class. Room surfaces
(floor, walls, ceiling) draw from their own small pools, as real rooms do.

A material is a row of a float array (see :data:`FIELDS`): two colours, a
texture id and its frequency / angle / offset. :func:`shade_albedo` evaluates
materials at surface points: the texture coordinates are the two world
coordinates across the face's dominant normal axis (planar mapping), so
patterns keep a metric scale whatever the object.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: the shared object palette (sRGB in [0, 1]): woods, neutrals, muted and bright colours
PALETTE = np.array([
    [0.55, 0.36, 0.22], [0.72, 0.53, 0.34], [0.40, 0.26, 0.16], [0.85, 0.72, 0.52],
    [0.93, 0.93, 0.90], [0.75, 0.75, 0.75], [0.50, 0.50, 0.52], [0.25, 0.25, 0.27],
    [0.10, 0.10, 0.11], [0.80, 0.78, 0.70], [0.62, 0.58, 0.50], [0.33, 0.40, 0.55],
    [0.20, 0.30, 0.50], [0.55, 0.65, 0.78], [0.30, 0.45, 0.30], [0.52, 0.62, 0.40],
    [0.20, 0.35, 0.22], [0.60, 0.22, 0.20], [0.80, 0.45, 0.35], [0.45, 0.18, 0.25],
    [0.85, 0.70, 0.30], [0.90, 0.82, 0.60], [0.40, 0.30, 0.45], [0.70, 0.60, 0.72],
    [0.15, 0.45, 0.55], [0.88, 0.55, 0.20], [0.95, 0.90, 0.80], [0.35, 0.22, 0.14],
])

#: texture names; the index is the texture id in a material row
TEXTURES = ("solid", "stripes", "checker", "noise", "wood", "grid")

#: columns of a material row
FIELDS = ("r1", "g1", "b1", "r2", "g2", "b2", "texture", "frequency", "angle", "u0", "v0", "emissive")

FLOOR_COLOURS = np.array([
    [0.55, 0.38, 0.24], [0.68, 0.52, 0.36], [0.42, 0.30, 0.20], [0.78, 0.76, 0.72],
    [0.60, 0.60, 0.58], [0.35, 0.33, 0.32], [0.70, 0.64, 0.55], [0.45, 0.40, 0.50],
])
WALL_COLOURS = np.array([
    [0.92, 0.91, 0.88], [0.88, 0.85, 0.78], [0.80, 0.84, 0.86], [0.85, 0.88, 0.80],
    [0.90, 0.82, 0.76], [0.75, 0.75, 0.75], [0.95, 0.95, 0.95], [0.70, 0.78, 0.85],
])


def material(c1, c2, texture: str, frequency: float, angle: float, offset, emissive: float = 0.0):
    """One material row (see :data:`FIELDS`)."""
    return np.array([*c1, *c2, TEXTURES.index(texture), frequency, angle, *offset, emissive], float)


def _jitter(rng, colour, amount=0.06):
    return np.clip(colour * rng.uniform(1 - amount * 2, 1 + amount * 2) + rng.normal(0, amount / 2, 3), 0, 1)


def object_material(rng: np.random.Generator) -> np.ndarray:
    """A material from the pool shared by every object class."""
    c1 = _jitter(rng, PALETTE[rng.integers(len(PALETTE))])
    texture = TEXTURES[rng.choice(len(TEXTURES), p=[0.4, 0.12, 0.08, 0.15, 0.15, 0.1])]
    if rng.random() < 0.5:  # a darker / lighter shade of the same colour
        c2 = np.clip(c1 * rng.uniform(0.55, 0.85), 0, 1)
    else:
        c2 = _jitter(rng, PALETTE[rng.integers(len(PALETTE))])
    return material(c1, c2, texture, rng.uniform(4, 20), rng.uniform(0, np.pi), rng.uniform(0, 10, 2))


def floor_material(rng: np.random.Generator) -> np.ndarray:
    c1 = _jitter(rng, FLOOR_COLOURS[rng.integers(len(FLOOR_COLOURS))])
    texture = ("wood", "checker", "noise", "solid", "grid")[rng.choice(5, p=[0.35, 0.2, 0.2, 0.1, 0.15])]
    c2 = np.clip(c1 * rng.uniform(0.6, 0.9), 0, 1)
    freq = rng.uniform(1.5, 4.0) if texture in ("checker", "grid") else rng.uniform(3, 10)
    angle = rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.01)
    return material(c1, c2, texture, freq, angle, rng.uniform(0, 10, 2))


def wall_material(rng: np.random.Generator) -> np.ndarray:
    c1 = _jitter(rng, WALL_COLOURS[rng.integers(len(WALL_COLOURS))], 0.03)
    texture = ("solid", "noise", "stripes")[rng.choice(3, p=[0.6, 0.25, 0.15])]
    c2 = np.clip(c1 * rng.uniform(0.8, 0.95), 0, 1)
    angle = np.pi / 2 if texture == "stripes" else 0.0
    return material(c1, c2, texture, rng.uniform(4, 12), angle, rng.uniform(0, 10, 2))


def ceiling_material(rng: np.random.Generator) -> np.ndarray:
    c1 = np.clip(np.full(3, rng.uniform(0.85, 0.97)) + rng.normal(0, 0.01, 3), 0, 1)
    return material(c1, c1 * 0.95, "noise", 3.0, 0.0, rng.uniform(0, 10, 2))


def outside_material(rng: np.random.Generator) -> np.ndarray:
    """What windows and doors look onto: bright, unlit (emissive)."""
    c1 = np.clip(np.array([0.70, 0.82, 0.95]) * rng.uniform(0.8, 1.05) + rng.normal(0, 0.03, 3), 0, 1)
    return material(c1, c1 * 0.9, "noise", 0.5, 0.0, rng.uniform(0, 10, 2), emissive=1.0)


NOISE_SIZE = 64  # a power of two (indices wrap with a bit mask)


@functools.lru_cache(maxsize=None)
def noise_table(size: int = NOISE_SIZE) -> np.ndarray:
    """A fixed tileable smooth noise (size, size) in [0, 1], the same in every process."""
    rng = np.random.default_rng(12345)
    freq = np.fft.fftfreq(size)
    fx, fy = np.meshgrid(freq, freq)
    spectrum = np.fft.fft2(rng.normal(size=(size, size))) / (1 + (np.hypot(fx, fy) * size / 3) ** 2)
    field = np.real(np.fft.ifft2(spectrum))
    field = (field - field.min()) / (field.max() - field.min())
    field.setflags(write=False)
    return field


def _noise(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of :func:`noise_table` at (u, v) in table cells (wraps)."""
    table = _noise_flat()
    n = NOISE_SIZE
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
    i0 = u0.astype(np.int64) & (n - 1)
    j0 = (v0.astype(np.int64) & (n - 1)) * n
    i1 = (i0 + 1) & (n - 1)
    j1 = (j0 + n) & (n * n - 1)
    top = table[j0 + i0] * (1 - fu) + table[j0 + i1] * fu
    bottom = table[j1 + i0] * (1 - fu) + table[j1 + i1] * fu
    return top * (1 - fv) + bottom * fv


@functools.lru_cache(maxsize=None)
def _noise_flat() -> np.ndarray:
    return noise_table(NOISE_SIZE).astype(np.float32).ravel()


def pattern(texture: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mix factor in [0, 1] between a material's two colours.

    texture (P,) int texture ids; u, v (P,) coordinates already scaled by the
    material's frequency (one unit = one period).
    """
    out = np.zeros(u.shape, np.float32)
    for tid, name in enumerate(TEXTURES):
        sel = texture == tid
        if tid == 0 or not sel.any():
            continue
        uu, vv = u[sel], v[sel]
        if name == "stripes":
            out[sel] = (np.sin(2 * np.pi * uu) > 0.3).astype(float)
        elif name == "checker":
            out[sel] = ((np.floor(uu) + np.floor(vv)) % 2).astype(float)
        elif name == "noise":
            out[sel] = _noise(uu * 2, vv * 2)
        elif name == "wood":  # rings distorted by noise, stretched along u
            out[sel] = 0.5 + 0.5 * np.sin(2 * np.pi * (vv + 1.5 * _noise(uu * 0.3, vv * 0.6)))
        elif name == "grid":  # tiles with grout lines
            fu, fv = uu - np.floor(uu), vv - np.floor(vv)
            out[sel] = ((fu < 0.06) | (fv < 0.06)).astype(float)
    return out


@dataclass
class FaceShading:
    """Per-face texture data, precomputed once per scene so that shading a
    pixel is a few gathers: ``u = tex_u[f] . p + off[f, 0]`` (likewise v) at a
    world point p, then a mix of the face's two colours.

    tex_u, tex_v (F, 3) float32; off (F, 2); texture (F,) int; colours (F, 2, 3);
    emissive (F,) float32.
    """

    tex_u: np.ndarray
    tex_v: np.ndarray
    off: np.ndarray
    texture: np.ndarray
    colours: np.ndarray
    emissive: np.ndarray


def face_shading(materials: np.ndarray, face_material: np.ndarray, face_normals: np.ndarray) -> FaceShading:
    """Planar texture mapping per face: the coordinates are the two world axes
    across the face's dominant normal axis, rotated by the material's angle and
    scaled by its frequency.

    materials (M, len(FIELDS)); face_material (F,) rows; face_normals (F, 3).
    """
    m = materials[face_material]
    axis = np.argmax(np.abs(face_normals), axis=1)
    eye = np.eye(3)
    a_axis = eye[np.where(axis == 0, 1, 0)]  # first in-plane world axis
    b_axis = eye[np.where(axis == 2, 1, 2)]  # second
    c, s, freq = np.cos(m[:, 8]), np.sin(m[:, 8]), m[:, 7]
    tex_u = (c[:, None] * a_axis - s[:, None] * b_axis) * freq[:, None]
    tex_v = (s[:, None] * a_axis + c[:, None] * b_axis) * freq[:, None]
    return FaceShading(tex_u.astype(np.float32), tex_v.astype(np.float32), m[:, 9:11].astype(np.float32),
                       m[:, 6].astype(np.int64), m[:, 0:6].reshape(-1, 2, 3).astype(np.float32),
                       m[:, 11].astype(np.float32))


def shade_albedo(shading: FaceShading, face: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Albedo (P, 3) float32 at world ``points`` (P, 3) lying on faces ``face`` (P,)."""
    albedo = shading.colours[face, 0]
    textured = np.nonzero(shading.texture[face] != 0)[0]  # solid faces need no coordinates
    if len(textured):
        f = face[textured]
        p = points[textured].astype(np.float32, copy=False)
        off = shading.off[f]
        u = np.einsum("ij,ij->i", shading.tex_u[f], p) + off[:, 0]
        v = np.einsum("ij,ij->i", shading.tex_v[f], p) + off[:, 1]
        t = pattern(shading.texture[f], u, v)[:, None]
        c1 = albedo[textured]
        albedo[textured] = c1 + (shading.colours[f, 1] - c1) * t
    return albedo
