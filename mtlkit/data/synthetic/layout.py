"""Sampling a scene: the room, its openings, the light, the camera and the objects.

World frame: metres, z up, the room spans ``[0, W] x [0, D] x [0, H]``.
Walls are numbered 0 (y = 0), 1 (x = W), 2 (y = D), 3 (x = 0).

Objects stand on the floor (or on the top of another object) without
interpenetrating: each floor object's footprint is an oriented rectangle and a
candidate pose is rejected when it leaves the room or overlaps a placed
footprint or a reserved area (the camera's spot, door ways, the space under
windows for tall objects); up to :data:`TRIES` candidates per object, after
which the object is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import materials as mat
from .objects import CLASSES, ObjectModel, build_object
from .scenes import RECIPES, SCENES, Item

TRIES = 30
#: a floor pose outside the camera's field of view is re-drawn with this probability
OUT_OF_VIEW_REJECT = 0.7
#: cos of half the horizontal field of view of NYUv2's camera (~62 degrees) plus 10 degrees
VIEW_COS = math.cos(math.radians(31.0 + 10.0))

#: NYUv2 colour camera intrinsics at 640 x 480
NYU_INTRINSICS = (518.857901, 519.469611, 325.582449, 253.736166)

WALL_NORMALS = np.array([[0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [1.0, 0.0]])  # inward
WALL_YAWS = np.array([0.0, np.pi / 2, np.pi, -np.pi / 2])  # yaw turning local +y inward


@dataclass
class Rect:
    """An oriented 2D rectangle: centre (x, y), yaw, half extents; ``max_height``:
    objects at most this tall may overlap it (-1: nothing may)."""

    cx: float
    cy: float
    yaw: float
    hx: float
    hy: float
    max_height: float = -1.0

    def corners(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * (self.hx, self.hy)
        return local @ np.array([[c, s], [-s, c]]) + (self.cx, self.cy)

    def axes(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, s], [-s, c]])


def rects_overlap(a: Rect, b: Rect) -> bool:
    """Separating-axis test of two oriented rectangles (touching counts as apart).

    Plain floats, no numpy: it runs thousands of times per scene on 4 corners.
    """
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if dx * dx + dy * dy >= (math.hypot(a.hx, a.hy) + math.hypot(b.hx, b.hy)) ** 2:
        return False  # bounding circles apart
    ca, sa, cb, sb = math.cos(a.yaw), math.sin(a.yaw), math.cos(b.yaw), math.sin(b.yaw)
    for ux, uy in ((ca, sa), (-sa, ca), (cb, sb), (-sb, cb)):
        # half widths of both rectangles projected on the axis, vs the centres' distance
        ra = a.hx * abs(ca * ux + sa * uy) + a.hy * abs(-sa * ux + ca * uy)
        rb = b.hx * abs(cb * ux + sb * uy) + b.hy * abs(-sb * ux + cb * uy)
        if abs(dx * ux + dy * uy) >= ra + rb:
            return False
    return True


@dataclass
class Opening:
    """A hole in wall ``wall``: from ``u0`` to ``u1`` along it, ``z0`` to ``z1`` high."""

    wall: int
    u0: float
    u1: float
    z0: float
    z1: float
    kind: str  # "window" | "door"


@dataclass
class Camera:
    """Pinhole camera. ``rotation`` (3, 3) maps camera axes (x right, y down,
    z forward) to world axes: ``world = rotation @ cam + position``."""

    position: np.ndarray
    rotation: np.ndarray


@dataclass
class PlacedObject:
    """An object in the world: class index (0-based), its model, its pose and materials."""

    cls: int
    model: ObjectModel
    x: float
    y: float
    z: float
    yaw: float
    materials: np.ndarray  # (2, len(mat.FIELDS)): primary, secondary
    support: int = -1  # index of the object it stands on, -1: the floor

    @property
    def rect(self) -> Rect:
        return Rect(self.x, self.y, self.yaw, *self.model.half_extent)


@dataclass
class Layout:
    """Everything the renderer needs about one scene."""

    scene: int
    size: Tuple[float, float, float]  # W, D, H
    openings: List[Opening]
    camera: Camera
    light: np.ndarray  # (3,) point light position
    light_power: float
    ambient: float
    room_materials: np.ndarray  # (4, F): floor, walls, ceiling, outside
    objects: List[PlacedObject] = field(default_factory=list)


def wall_length(size, wall: int) -> float:
    return size[0] if wall % 2 == 0 else size[1]


def wall_point(size, wall: int, u: float, offset: float) -> np.ndarray:
    """(x, y) at distance ``u`` along wall ``wall`` (counter-clockwise), ``offset`` into the room."""
    W, D = size[0], size[1]
    base = {0: (u, 0.0), 1: (W, u), 2: (W - u, D), 3: (0.0, D - u)}[wall]
    return np.array(base) + WALL_NORMALS[wall] * offset


def _camera(rng, size) -> Tuple[Camera, int]:
    """A camera standing near one wall, 1-1.6 m high, looking into the room, pitched down."""
    wall = int(rng.integers(4))
    length = wall_length(size, wall)
    across = wall_length(size, wall + 1)
    xy = wall_point(size, wall, rng.uniform(0.3, 0.7) * length, rng.uniform(0.25, min(0.8, across * 0.3)))
    height = rng.uniform(1.0, 1.6)
    yaw = np.arctan2(WALL_NORMALS[wall][1], WALL_NORMALS[wall][0]) + rng.uniform(-0.45, 0.45)
    pitch = rng.uniform(0.08, 0.35)  # downwards
    roll = rng.normal(0.0, 0.02)
    forward = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.cross(forward, right)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    return Camera(np.array([xy[0], xy[1], height]), np.column_stack([right, down, forward])), wall


def _openings(rng, size) -> List[Opening]:
    out = []
    walls = list(rng.permutation(4))
    if rng.random() < 0.6:
        wall = int(walls.pop())
        length = wall_length(size, wall)
        width = min(rng.uniform(0.8, 2.0), length - 0.7)
        u0 = rng.uniform(0.3, length - 0.3 - width)
        z0 = rng.uniform(0.75, 1.0)
        out.append(Opening(wall, u0, u0 + width, z0, min(size[2] - 0.2, z0 + rng.uniform(1.0, 1.4)), "window"))
    if rng.random() < 0.5:
        wall = int(walls.pop())
        length = wall_length(size, wall)
        width = rng.uniform(0.8, 0.95)
        u0 = rng.uniform(0.15, length - 0.15 - width)
        out.append(Opening(wall, u0, u0 + width, 0.0, min(size[2] - 0.15, rng.uniform(2.0, 2.15)), "door"))
    return out


def _reserved(size, openings: Sequence[Opening], camera: Camera, camera_wall: int) -> List[Rect]:
    """Areas no object (or no tall object) may cover."""
    out = []
    for o in openings:
        depth = 0.9 if o.kind == "door" else 0.5
        c = wall_point(size, o.wall, (o.u0 + o.u1) / 2, depth / 2)
        out.append(Rect(c[0], c[1], WALL_YAWS[o.wall], (o.u1 - o.u0) / 2, depth / 2,
                        -1.0 if o.kind == "door" else o.z0))
    # the camera's spot and the space just in front of it
    f = camera.rotation[:2, 2] / max(np.linalg.norm(camera.rotation[:2, 2]), 1e-6)
    c = camera.position[:2] + f * 0.35
    out.append(Rect(c[0], c[1], np.arctan2(f[1], f[0]), 0.7, 0.6))
    return out


class _Placer:
    """Rejection sampling of object poses for one room."""

    def __init__(self, rng, size, reserved: List[Rect], camera: Camera, camera_wall: int):
        self.rng = rng
        self.size = size
        self.reserved = reserved
        self.objects: List[PlacedObject] = []
        self.camera_wall = camera_wall
        forward = camera.rotation[:2, 2]
        self._cam_xy = camera.position[:2]
        self._cam_dir = forward / max(float(np.hypot(*forward)), 1e-9)

    def _in_view(self, x: float, y: float) -> bool:
        """Whether (x, y) lies within the camera's horizontal field of view (+10 degrees)."""
        dx, dy = x - self._cam_xy[0], y - self._cam_xy[1]
        dist = math.hypot(dx, dy)
        return dist > 1e-6 and (dx * self._cam_dir[0] + dy * self._cam_dir[1]) / dist > VIEW_COS

    # -- checks ---------------------------------------------------------------
    def _inside(self, rect: Rect) -> bool:
        c, s = abs(math.cos(rect.yaw)), abs(math.sin(rect.yaw))
        ex = rect.hx * c + rect.hy * s  # half extent of the axis-aligned bounds
        ey = rect.hx * s + rect.hy * c
        return (rect.cx - ex > 0.005 and rect.cx + ex < self.size[0] - 0.005
                and rect.cy - ey > 0.005 and rect.cy + ey < self.size[1] - 0.005)

    def _free(self, rect: Rect, height: float) -> bool:
        if not self._inside(rect):
            return False
        for r in self.reserved:
            if height > r.max_height and rects_overlap(rect, r):
                return False
        return not any(o.support < 0 and rects_overlap(rect, o.rect) for o in self.objects)

    # -- candidate poses ------------------------------------------------------
    def _wall_pose(self, model: ObjectModel, corner: bool):
        rng = self.rng
        # the camera's own wall is mostly out of view: use it less
        weights = np.where(np.arange(4) == self.camera_wall, 0.25, 1.0)
        wall = int(rng.choice(4, p=weights / weights.sum()))
        hx, hy = model.half_extent
        length = wall_length(self.size, wall)
        if length < 2 * hx + 0.02:
            return None
        if corner:
            u = hx + 0.02 + rng.uniform(0.0, 0.3)
            if rng.random() < 0.5:
                u = length - u
        else:
            u = rng.uniform(hx + 0.01, length - hx - 0.01)
        xy = wall_point(self.size, wall, u, hy + rng.uniform(0.01, 0.06))
        return xy[0], xy[1], WALL_YAWS[wall] + rng.normal(0, 0.03)

    def _center_pose(self, model: ObjectModel):
        rng = self.rng
        W, D = self.size[0], self.size[1]
        x = W / 2 + rng.uniform(-0.2, 0.2) * W
        y = D / 2 + rng.uniform(-0.2, 0.2) * D
        return x, y, rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.05)

    def _free_pose(self, model: ObjectModel):
        rng = self.rng
        r = max(model.half_extent)
        W, D = self.size[0], self.size[1]
        if W < 2 * r + 0.02 or D < 2 * r + 0.02:
            return None
        return rng.uniform(r, W - r), rng.uniform(r, D - r), rng.uniform(-np.pi, np.pi)

    def _around_pose(self, model: ObjectModel):
        tables = [o for o in self.objects if CLASSES[o.cls] == "table" and o.support < 0]
        if not tables:
            return self._free_pose(model)
        rng = self.rng
        t = tables[int(rng.integers(len(tables)))]
        thx, thy = t.model.half_extent
        side = int(rng.integers(4))  # local +y, +x, -y, -x of the table
        direction = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]][side], float)
        along = thx if side % 2 == 0 else thy
        dist = (thy if side % 2 == 0 else thx) + model.half_extent[1] + rng.uniform(-0.05, 0.1)
        local = direction * dist + np.array([direction[1], -direction[0]]) * rng.uniform(-0.8, 0.8) * max(
            along - model.half_extent[0], 0.0)
        c, s = np.cos(t.yaw), np.sin(t.yaw)
        offset = np.array([c * local[0] - s * local[1], s * local[0] + c * local[1]])
        x, y = t.x + offset[0], t.y + offset[1]
        # the chair's front (+y) faces the table
        facing = np.arctan2(-offset[1], -offset[0])
        return x, y, facing - np.pi / 2 + rng.normal(0, 0.12)

    def place_floor(self, cls: int, model: ObjectModel, place: str, materials: np.ndarray) -> bool:
        for _ in range(TRIES):
            if place in ("wall", "corner"):
                pose = self._wall_pose(model, place == "corner")
            elif place == "center":
                pose = self._center_pose(model)
            elif place == "around":
                pose = self._around_pose(model)
            else:
                pose = self._free_pose(model)
            if pose is None:
                continue
            if not self._in_view(pose[0], pose[1]) and self.rng.random() < OUT_OF_VIEW_REJECT:
                continue  # most furniture goes where the camera sees it
            obj = PlacedObject(cls, model, float(pose[0]), float(pose[1]), 0.0, float(pose[2]), materials)
            if self._free(obj.rect, model.height):
                self.objects.append(obj)
                return True
        return False

    def place_on(self, cls: int, model: ObjectModel, supports: Tuple[str, ...], materials: np.ndarray) -> bool:
        rng = self.rng
        candidates = [i for i, o in enumerate(self.objects)
                      if o.support < 0 and o.model.top is not None and CLASSES[o.cls] in supports]
        if not candidates:
            return False
        hx, hy = model.half_extent
        for _ in range(TRIES):
            si = candidates[int(rng.integers(len(candidates)))]
            s = self.objects[si]
            z, thx, thy = s.model.top
            if thx < hx or thy < hy:
                continue
            lx, ly = rng.uniform(-(thx - hx), thx - hx), rng.uniform(-(thy - hy), thy - hy)
            c, sn = np.cos(s.yaw), np.sin(s.yaw)
            yaw = s.yaw + rng.normal(0, 0.25)
            obj = PlacedObject(cls, model, s.x + c * lx - sn * ly, s.y + sn * lx + c * ly, z, yaw, materials, si)
            # the object must stay on its support and clear of what already stands there
            corners = obj.rect.corners() - (s.x, s.y)
            local = corners @ np.array([[c, -sn], [sn, c]])
            if (np.abs(local[:, 0]) > thx + 0.02).any() or (np.abs(local[:, 1]) > thy + 0.02).any():
                continue
            if any(o.support == si and rects_overlap(obj.rect, o.rect) for o in self.objects):
                continue
            self.objects.append(obj)
            return True
        return False


def sample_layout(rng: np.random.Generator, scene_probs: Optional[np.ndarray] = None) -> Layout:
    """Sample one complete scene. ``scene_probs`` (S,) sums to 1 (uniform if None)."""
    scene = int(rng.choice(len(SCENES), p=scene_probs))
    recipe = RECIPES[SCENES[scene]]
    size = (rng.uniform(*recipe.width), rng.uniform(*recipe.depth), rng.uniform(*recipe.height))
    openings = _openings(rng, size)
    camera, camera_wall = _camera(rng, size)
    light = np.array([rng.uniform(0.2, 0.8) * size[0], rng.uniform(0.2, 0.8) * size[1],
                      size[2] - rng.uniform(0.1, 0.4)])
    room_materials = np.stack([mat.floor_material(rng), mat.wall_material(rng),
                               mat.ceiling_material(rng), mat.outside_material(rng)])
    placer = _Placer(rng, size, _reserved(size, openings, camera, camera_wall), camera, camera_wall)
    for item in recipe.items:
        _place_item(rng, placer, item)
    return Layout(scene, size, openings, camera, light, float(rng.uniform(0.8, 1.3)),
                  float(rng.uniform(0.25, 0.45)), room_materials, placer.objects)


def _place_item(rng, placer: _Placer, item: Item) -> None:
    if rng.random() >= item.p:
        return
    cls = CLASSES.index(item.cls)
    for _ in range(int(rng.integers(item.count[0], item.count[1] + 1))):
        model = build_object(item.cls, rng, item.variant)
        materials = np.stack([mat.object_material(rng), mat.object_material(rng)])
        if item.place == "on":
            placer.place_on(cls, model, item.on, materials)
        else:
            placer.place_floor(cls, model, item.place, materials)
