"""Ray-cast rendering of a :class:`~.layout.Layout` with Embree (through trimesh).

One ray per pixel gives the first triangle hit; from it, with the plane of
that triangle: depth (z in the camera frame), the hit point, the face normal
(turned to face the camera) and the instance owning the face. A second ray
from every hit point towards the point light decides shadows. Shading is
Lambertian (+ ambient, inverse-square fall-off), then sensor effects:
vignetting, a per-channel gain, Gaussian noise, 8-bit quantisation.

Ground truth comes from the same casts: per-instance tight boxes of the
visible pixels, with occlusion-aware dropping (see :func:`visible_boxes`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
from scipy.special import ndtri

from .appearance import OUTSIDE_ROW, SOURCE, Appearance, Streams, expose, light_pixels, light_positions, restyled_shading
from .layout import NYU_INTRINSICS, Layout, wall_length
from .materials import FaceShading, face_shading, shade_albedo
from .primitives import MeshBuilder
from .raycast import RayCaster

OUTSIDE_MARGIN = 4.0  # metres between the walls and the "outside" enclosure
WALL_T = 0.1


def intrinsics(height: int, width: int) -> Tuple[float, float, float, float]:
    """NYUv2 (fx, fy, cx, cy) scaled from 640x480 to ``width x height``
    (pixel centres at integer coordinates)."""
    fx, fy, cx, cy = NYU_INTRINSICS
    sx, sy = width / 640.0, height / 480.0
    return fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5


@functools.lru_cache(maxsize=8)
def pixel_rays(height: int, width: int) -> np.ndarray:
    """(H*W, 3) float32 camera-frame ray directions with z = 1, row-major (read-only)."""
    fx, fy, cx, cy = intrinsics(height, width)
    u, v = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1).reshape(-1, 3)
    rays = rays.astype(np.float32)
    rays.setflags(write=False)
    return rays


@dataclass
class SceneMesh:
    """The whole scene as one triangle soup.

    vertices (V, 3); faces (F, 3); face_instance (F,) int32, 0 for the room and
    k for ``layout.objects[k - 1]``; face_material (F,) int32 rows of
    ``materials`` (M, len(FIELDS)); face_normals (F, 3) unit (world).
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_instance: np.ndarray
    face_material: np.ndarray
    materials: np.ndarray
    face_normals: np.ndarray
    shading: FaceShading


def _room_mesh(layout: Layout) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Floor, ceiling, walls with their openings, and the outside enclosure.
    Returns vertices, faces and the room material row of each face."""
    W, D, H = layout.size
    m = OUTSIDE_MARGIN
    parts = []  # (builder, material row)
    floor = MeshBuilder()
    floor.box(-m, -m, -WALL_T, W + m, D + m, 0.0)
    parts.append((floor, 0))
    walls = MeshBuilder()
    openings = {o.wall: o for o in layout.openings}
    for wall in range(4):
        length = wall_length(layout.size, wall)
        o = openings.get(wall)
        pieces = [(-WALL_T, length + WALL_T, 0.0, H)] if o is None else [
            (-WALL_T, o.u0, 0.0, H), (o.u1, length + WALL_T, 0.0, H),
            (o.u0, o.u1, 0.0, o.z0), (o.u0, o.u1, o.z1, H)]
        for u0, u1, z0, z1 in pieces:
            if u1 - u0 <= 1e-6 or z1 - z0 <= 1e-6:
                continue
            if wall == 0:
                walls.box(u0, -WALL_T, z0, u1, 0.0, z1)
            elif wall == 1:
                walls.box(W, u0, z0, W + WALL_T, u1, z1)
            elif wall == 2:
                walls.box(W - u1, D, z0, W - u0, D + WALL_T, z1)
            else:
                walls.box(-WALL_T, D - u1, z0, 0.0, D - u0, z1)
    parts.append((walls, 1))
    ceiling = MeshBuilder()
    ceiling.box(-WALL_T, -WALL_T, H, W + WALL_T, D + WALL_T, H + WALL_T)
    parts.append((ceiling, 2))
    outside = MeshBuilder()
    outside.box(-m, -m, -WALL_T - 0.01, W + m, D + m, H + 3.0)
    parts.append((outside, OUTSIDE_ROW))
    vs, fs, ms, count = [], [], [], 0
    for builder, row in parts:
        v, f, _ = builder.build()
        vs.append(v)
        fs.append(f + count)
        ms.append(np.full(len(f), row, np.int32))
        count += len(v)
    return np.concatenate(vs), np.concatenate(fs), np.concatenate(ms)


def build_scene_mesh(layout: Layout) -> SceneMesh:
    """Concatenate the room and every placed object (transformed to the world)."""
    rv, rf, rm = _room_mesh(layout)
    vs, fs, inst, mats = [rv], [rf], [np.zeros(len(rf), np.int32)], [rm]
    count = len(rv)
    rows = [layout.room_materials]
    for k, obj in enumerate(layout.objects):
        c, s = np.cos(obj.yaw), np.sin(obj.yaw)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        v = obj.model.vertices @ rot.T + (obj.x, obj.y, obj.z)
        vs.append(v)
        fs.append(obj.model.faces + count)
        inst.append(np.full(len(obj.model.faces), k + 1, np.int32))
        mats.append(4 + 2 * k + obj.model.slots.astype(np.int32))
        rows.append(obj.materials)
        count += len(v)
    vertices, faces = np.concatenate(vs), np.concatenate(fs)
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    normals = normals.astype(np.float32)
    face_material, materials = np.concatenate(mats), np.concatenate(rows)
    return SceneMesh(vertices, faces, np.concatenate(inst), face_material, materials, normals,
                     face_shading(materials, face_material, normals))


def _rotate(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """``points @ rotation.T`` for (N, 3) points (einsum: much faster than a
    BLAS matmul with an inner size of 3)."""
    return np.einsum("ij,kj->ik", points, rotation)


@dataclass
class Frame:
    """Raw render outputs at (H, W)."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres (camera z)
    normals: np.ndarray  # (3, H, W) float32 camera frame, facing the camera
    instances: np.ndarray  # (H, W) int32: 0 room, k object k-1 of the layout
    valid: np.ndarray  # (H, W) bool: a surface was hit
    material: np.ndarray  # (H, W) int32 material row (0-3: floor, walls, ceiling, outside), -1: nothing


def render(layout: Layout, height: int, width: int, rng: np.random.Generator, *,
           shadows: bool = True, noise: float = 0.012, mesh: SceneMesh = None,
           appearance: Optional[Appearance] = None, streams: Optional[Streams] = None) -> Frame:
    """Render ``layout`` at ``height x width``; ``rng`` draws the sensor noise.

    ``appearance`` (None: the source world) changes the lighting, the
    materials' look and the camera (:mod:`.appearance`), drawing what it adds
    from ``streams``; depth, normals, instances and ``rng``'s draws are the
    same whatever it is."""
    mesh = build_scene_mesh(layout) if mesh is None else mesh
    caster = RayCaster(mesh.vertices, mesh.faces)
    cam = layout.camera
    rays_w = _rotate(pixel_rays(height, width), cam.rotation.astype(np.float32))
    position = cam.position.astype(np.float32)
    tri, t = caster.first_hit(np.broadcast_to(position, rays_w.shape), rays_w)  # camera z = 1: t is depth
    valid = tri >= 0
    # the outside enclosure catches every ray, so all pixels are normally valid:
    # then index with a slice (views) instead of the mask (copies)
    sel = slice(None) if valid.all() else valid
    tri_v = tri[sel]
    dirs = rays_w[sel]
    depth_v = t[sel]
    points = position + dirs * depth_v[:, None]

    n_w = mesh.face_normals[tri_v]
    flip = np.einsum("ij,ij->i", n_w, dirs) > 0  # make normals face the camera
    n_w[flip] *= -1
    n_c = _rotate(n_w, cam.rotation.T.astype(np.float32))  # world -> camera

    # -- shading: materials, lights, camera (.appearance; the source world's by default)
    look = SOURCE if appearance is None else appearance
    if streams is None and look.draws:
        raise ValueError("render: this appearance draws random values; pass its streams "
                         "(appearance.appearance_streams)")
    shading = mesh.shading
    if look.restyles_materials:
        shading = restyled_shading(mesh.materials, mesh.face_material, mesh.face_normals, look, streams.materials)
    albedo = shade_albedo(shading, tri_v, points)
    positions = light_positions(look, layout.light, layout.size, None if streams is None else streams.lights)
    # shadows: one occlusion ray per pixel and light (see light_pixels)
    albedo *= light_pixels(look, positions, layout.light_power, layout.ambient, points, n_w,
                           shading.emissive[tri_v], caster.occluded if shadows else None)
    colour = _scatter(albedo, valid, sel, 0.0).reshape(height, width, 3)
    rgb = expose(look, colour, rng, None if streams is None else streams.camera, noise,
                 functools.partial(_vignette, height, width), _GAUSS_LUT)
    return Frame(rgb,
                 _scatter(depth_v, valid, sel, 0.0).reshape(height, width),
                 _scatter(n_c, valid, sel, 0.0).reshape(height, width, 3).transpose(2, 0, 1).copy(),
                 _scatter(mesh.face_instance[tri_v], valid, sel, 0).reshape(height, width),
                 valid.reshape(height, width),
                 _scatter(mesh.face_material[tri_v], valid, sel, -1).reshape(height, width))


def _scatter(values: np.ndarray, valid: np.ndarray, sel, fill) -> np.ndarray:
    """Per-pixel array from the values of the valid pixels (``fill`` elsewhere)."""
    if isinstance(sel, slice):
        return values
    out = np.full((len(valid),) + values.shape[1:], fill, values.dtype)
    out[valid] = values
    return out


#: 256 quantiles of the standard normal: a uint8 draw through it is Gaussian
#: noise (to 1/256 in probability) at a quarter of the cost of standard_normal
_GAUSS_LUT = ndtri((np.arange(256) + 0.5) / 256).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _vignette(height: int, width: int, strength: float = 0.25) -> np.ndarray:
    rays = pixel_rays(height, width).reshape(height, width, 3)
    out = (1.0 / (1.0 + strength * (rays[..., 0] ** 2 + rays[..., 1] ** 2))).astype(np.float32)
    out.setflags(write=False)
    return out


def instance_boxes(instances: np.ndarray, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """Tight boxes of the visible pixels of instances 1..count.

    Returns (boxes (count, 4) float32 xyxy in pixel-edge coordinates: pixel
    (r, c) spans [c, c+1) x [r, r+1); pixels (count,) int64 visible pixel
    counts). Instances without pixels get a zero box.
    """
    h, w = instances.shape
    flat = instances.ravel()
    pixels = np.bincount(flat, minlength=count + 1)[1:count + 1]
    boxes = np.zeros((count, 4), np.float32)
    rows = np.arange(h).repeat(w)
    cols = np.tile(np.arange(w), h)
    order = np.argsort(flat, kind="stable")
    sorted_ids = flat[order]
    starts = np.searchsorted(sorted_ids, np.arange(1, count + 1), side="left")
    ends = np.searchsorted(sorted_ids, np.arange(1, count + 1), side="right")
    for k in range(count):
        if ends[k] > starts[k]:
            sel = order[starts[k]:ends[k]]
            r, c = rows[sel], cols[sel]
            boxes[k] = (c.min(), r.min(), c.max() + 1, r.max() + 1)
    return boxes, pixels


def unoccluded_pixels(mesh: SceneMesh, layout: Layout, k: int, height: int, width: int,
                      box: Tuple[int, int, int, int], stride: int) -> Tuple[int, np.ndarray]:
    """Pixels object ``k`` (1-based) would cover alone, counted on the pixel
    grid of step ``stride`` inside ``box`` (x0, y0, x1, y1); also returns the
    flat indices of those grid pixels."""
    sel = mesh.face_instance == k
    faces = mesh.faces[sel]
    used = np.unique(faces)
    remap = np.zeros(len(mesh.vertices), np.int64)
    remap[used] = np.arange(len(used))
    caster = RayCaster(mesh.vertices[used], remap[faces])
    x0, y0, x1, y1 = box
    ys, xs = np.meshgrid(np.arange(y0, y1, stride), np.arange(x0, x1, stride), indexing="ij")
    flat = (ys * width + xs).ravel()
    rays_w = _rotate(pixel_rays(height, width)[flat], layout.camera.rotation.astype(np.float32))
    hits = caster.first_triangle(np.broadcast_to(layout.camera.position, rays_w.shape), rays_w) >= 0
    return int(hits.sum()), flat


def projected_box(mesh: SceneMesh, layout: Layout, k: int, height: int, width: int):
    """Bounding box (x0, y0, x1, y1) in pixels of object ``k``'s vertices
    projected into the image, clipped to it; the whole image when a vertex is
    behind the camera."""
    verts = mesh.vertices[np.unique(mesh.faces[mesh.face_instance == k])]
    cam = (verts - layout.camera.position) @ layout.camera.rotation  # world -> camera
    if (cam[:, 2] < 0.05).any():
        return 0, 0, width, height
    fx, fy, cx, cy = intrinsics(height, width)
    u = cam[:, 0] / cam[:, 2] * fx + cx
    v = cam[:, 1] / cam[:, 2] * fy + cy
    x0 = int(np.clip(np.floor(u.min() + 0.5), 0, width))
    x1 = int(np.clip(np.ceil(u.max() + 0.5), 0, width))
    y0 = int(np.clip(np.floor(v.min() + 0.5), 0, height))
    y1 = int(np.clip(np.ceil(v.max() + 0.5), 0, height))
    return x0, y0, x1, y1


def visible_boxes(frame: Frame, layout: Layout, mesh: SceneMesh, *, min_visible_fraction: float = 0.2,
                  min_area: float = 0.0005, min_side: int = 2) -> Dict[str, np.ndarray]:
    """Boxes and labels of the objects worth annotating.

    An object is kept when (1) its visible pixels are at least ``min_area`` of
    the image, (2) its box is at least ``min_side`` pixels wide and high, and
    (3) it is not mostly occluded: visible pixels >= ``min_visible_fraction``
    of the pixels it would cover inside the image with nothing in front of it
    (ray-cast against that object alone, on a subsampled grid for large
    images). Objects dropped here stay in the picture, unlabelled.

    Returns ``boxes`` (N, 4) float32, ``labels`` (N,) int64 in 1..C,
    ``instance`` (N,) int64 the instance id in ``frame.instances`` of each.
    """
    height, width = frame.instances.shape
    count = len(layout.objects)
    boxes, pixels = instance_boxes(frame.instances, count)
    keep = []
    stride = max(1, int(round(width / 160)))
    flat_instances = frame.instances.ravel()
    for k in range(1, count + 1):
        b = boxes[k - 1]
        if pixels[k - 1] < min_area * height * width or min(b[2] - b[0], b[3] - b[1]) < min_side:
            continue
        proj = projected_box(mesh, layout, k, height, width)
        # Cheap accept: the unoccluded area can't exceed the projected box
        upper = (proj[2] - proj[0]) * (proj[3] - proj[1])
        if pixels[k - 1] >= min_visible_fraction * upper:
            keep.append(k)
            continue
        alone, flat = unoccluded_pixels(mesh, layout, k, height, width, proj, stride)
        seen = int((flat_instances[flat] == k).sum())
        if alone > 0 and seen >= min_visible_fraction * alone:
            keep.append(k)
    keep_arr = np.array(keep, np.int64)
    labels = np.array([layout.objects[k - 1].cls + 1 for k in keep], np.int64)
    return {"boxes": boxes[keep_arr - 1].reshape(-1, 4) if keep else np.zeros((0, 4), np.float32),
            "labels": labels, "instance": keep_arr}
