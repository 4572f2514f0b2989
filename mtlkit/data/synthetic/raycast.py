"""Embree ray casting (through embreex), the renderer's only intersection code.

trimesh's ``RayMeshIntersector`` wraps the same embreex scene, but per call it
copies and rescales the rays in float64 and cannot ask Embree for hit
distances or for occlusion up to a distance (a shadow ray must ignore what is
beyond the light). Calling the embreex scene directly gives the first hit's
triangle and distance in one query and cheap occlusion queries, for about
half the time per frame.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import trimesh

try:
    from embreex import rtcore_scene
    from embreex.mesh_construction import TriangleMesh
except ImportError:  # pragma: no cover - checked in RayCaster
    rtcore_scene = None


def has_embree() -> bool:
    """True when Embree ray casting is available (embreex installed)."""
    return rtcore_scene is not None and bool(trimesh.ray.has_embree)


class RayCaster:
    """A BVH over a triangle mesh (built on construction).

    vertices (V, 3) and faces (F, 3); coordinates in metres (float32 precision
    is ample for rooms of a few metres).
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        if not has_embree():
            raise RuntimeError("the synthetic renderer needs Embree: pip install embreex")
        self.scene = rtcore_scene.EmbreeScene()
        # keep references: Embree reads the buffers in place
        self._vertices = np.ascontiguousarray(vertices, np.float32)
        self._faces = np.ascontiguousarray(faces, np.int32)
        TriangleMesh(scene=self.scene, vertices=self._vertices, indices=self._faces)

    def first_hit(self, origins: np.ndarray, directions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """First hit along each ray.

        origins, directions (N, 3) (directions need not be unit). Returns
        (triangle (N,) int32, -1 on a miss; t (N,) float32 hit distance in units
        of the direction's length, +inf on a miss).
        """
        out = self.scene.run(np.ascontiguousarray(origins, np.float32),
                             np.ascontiguousarray(directions, np.float32), output=1)
        tri = np.asarray(out["primID"], np.int32)
        t = np.where(tri >= 0, np.asarray(out["tfar"], np.float32), np.float32(np.inf))
        return tri, t

    def first_triangle(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """(N,) int32 index of the first triangle hit, -1 on a miss."""
        return np.asarray(self.scene.run(np.ascontiguousarray(origins, np.float32),
                                         np.ascontiguousarray(directions, np.float32)), np.int32)

    def occluded(self, origins: np.ndarray, directions: np.ndarray, distances: np.ndarray) -> np.ndarray:
        """(N,) bool: something lies on the ray before ``distances`` (units of the direction)."""
        out = self.scene.run(np.ascontiguousarray(origins, np.float32),
                             np.ascontiguousarray(directions, np.float32),
                             dists=np.ascontiguousarray(distances, np.float32), query="OCCLUDED")
        return np.asarray(out) == 0
