"""Template meshes (unit box, cylinder, frustum, sphere) and a builder that
places scaled copies of them to compose furniture.

Templates are built once per process with trimesh and only transformed
afterwards (scale, optional rotation, translation): composing an object costs
a few small numpy operations, no mesh processing.

Conventions: metres, z up. Every template is centred on the origin and spans
[-0.5, 0.5] along each axis, so ``scale`` is the part's full size
(width, depth, height) and ``center`` its centre.
"""

from __future__ import annotations

import functools
from typing import Dict, List, Optional, Tuple

import numpy as np
import trimesh

Mesh = Tuple[np.ndarray, np.ndarray]  # vertices (V, 3) float64, faces (F, 3) int64

#: sections of the round templates: enough to read as round at 640x480, few faces
ROUND_SECTIONS = 16


def _normalise(vertices: np.ndarray) -> np.ndarray:
    """Scale/shift vertices so that their bounds are [-0.5, 0.5] on each axis."""
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    return (vertices - (lo + hi) / 2) / (hi - lo)


def _frustum(top_ratio: float, sections: int = ROUND_SECTIONS) -> Mesh:
    """A closed truncated cone: bottom radius 0.5, top radius ``0.5 * top_ratio``."""
    angles = np.linspace(0, 2 * np.pi, sections, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 0.5
    bottom = np.column_stack([ring, np.full(sections, -0.5)])
    top = np.column_stack([ring * top_ratio, np.full(sections, 0.5)])
    vertices = np.vstack([bottom, top, [[0, 0, -0.5], [0, 0, 0.5]]])
    i = np.arange(sections)
    j = (i + 1) % sections
    cb, ct = 2 * sections, 2 * sections + 1
    side = np.concatenate([np.stack([i, j, sections + j], 1), np.stack([i, sections + j, sections + i], 1)])
    caps = np.concatenate([np.stack([np.full(sections, cb), j, i], 1),
                           np.stack([np.full(sections, ct), sections + i, sections + j], 1)])
    return vertices, np.concatenate([side, caps]).astype(np.int64)


@functools.lru_cache(maxsize=None)
def templates() -> Dict[str, Mesh]:
    """name -> (vertices, faces) unit template, built once per process."""
    box = trimesh.creation.box()
    cylinder = trimesh.creation.cylinder(radius=0.5, height=1.0, sections=ROUND_SECTIONS)
    sphere = trimesh.creation.icosphere(subdivisions=1)
    out = {
        "box": (np.asarray(box.vertices, float), np.asarray(box.faces, np.int64)),
        "cylinder": (_normalise(np.asarray(cylinder.vertices, float)),
                     np.asarray(cylinder.faces, np.int64)),
        "sphere": (_normalise(np.asarray(sphere.vertices, float)), np.asarray(sphere.faces, np.int64)),
    }
    for name, ratio in (("cone", 0.0), ("frustum", 0.6), ("bowl", 1.35)):  # bowl: wider at the top
        v, f = _frustum(ratio)
        out[name] = (_normalise(v), f)
    for v, _ in out.values():
        v.setflags(write=False)
    return out


def rotation_x(angle: float) -> np.ndarray:
    """(3, 3) rotation about the x axis (tilts a part forward / backward)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


class MeshBuilder:
    """Collects transformed template parts into one mesh.

    Each part has a material slot (0: the object's primary material, 1: its
    secondary one), so that e.g. a sofa's cushions can differ from its frame.
    """

    def __init__(self) -> None:
        self._vertices: List[np.ndarray] = []
        self._faces: List[np.ndarray] = []
        self._slots: List[np.ndarray] = []
        self._count = 0

    def add(self, kind: str, size, center, rotation: Optional[np.ndarray] = None,
            slot: int = 0) -> None:
        """Add template ``kind`` scaled to ``size`` (3,), rotated by ``rotation``
        (3, 3) about its own centre, then moved to ``center`` (3,)."""
        vertices, faces = templates()[kind]
        v = vertices * np.asarray(size, float)
        if rotation is not None:
            v = v @ rotation.T
        v = v + np.asarray(center, float)
        self._vertices.append(v)
        self._faces.append(faces + self._count)
        self._slots.append(np.full(len(faces), slot, np.int8))
        self._count += len(v)

    def box(self, x0, y0, z0, x1, y1, z1, slot: int = 0) -> None:
        """An axis-aligned box given by two opposite corners."""
        self.add("box", (x1 - x0, y1 - y0, z1 - z0), ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2),
                 slot=slot)

    def build(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vertices (V, 3), faces (F, 3), material slot per face (F,))."""
        if not self._vertices:
            return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.int8)
        return (np.concatenate(self._vertices), np.concatenate(self._faces),
                np.concatenate(self._slots))
