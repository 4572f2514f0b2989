"""Camera geometry for the data pipeline: NYUv2 intrinsics, normals from depth,
and the compact encodings of normal maps.

Camera frame: x right, y down, z forward (into the scene). Normals are unit
vectors facing the camera (a wall straight ahead has n = (0, 0, -1), the
floor n ≈ (0, -1, 0)).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

#: NYUv2 colour camera intrinsics at 640x480 (fx, fy, cx, cy)
NYU_INTRINSICS = (518.857901, 519.469611, 325.582449, 253.736166)
NYU_SIZE = (480, 640)  # (H, W)


def nyu_intrinsics(height: int = 480, width: int = 640) -> Tuple[float, float, float, float]:
    """NYUv2 intrinsics scaled to an image of (height, width)."""
    fx, fy, cx, cy = NYU_INTRINSICS
    sx, sy = width / NYU_SIZE[1], height / NYU_SIZE[0]
    return fx * sx, fy * sy, cx * sx, cy * sy


def backproject(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Depth (H, W) in metres -> camera-frame points (H, W, 3), pixel centres at integer u, v."""
    height, width = depth.shape
    u = np.arange(width, dtype=np.float64)[None, :]
    v = np.arange(height, dtype=np.float64)[:, None]
    z = depth.astype(np.float64)
    return np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1)


def normals_from_depth(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                       step: int = 2, max_relative_jump: float = 0.1) -> Tuple[np.ndarray, np.ndarray]:
    """Surface normals of a depth map by the cross product of central differences.

    The point P(u, v) is back-projected; the tangents are
    ``P(u+step, v) - P(u-step, v)`` and ``P(u, v+step) - P(u, v-step)``; the
    normal is ``cross(dv, du)`` normalised (it faces the camera for a visible
    surface), flipped if it still points away from the camera.

    A pixel is valid when its depth and its four neighbours' are finite and
    > 0, none of the neighbours differs from it by more than
    ``max_relative_jump`` of its depth (no normal across an occlusion edge),
    and it lies at least ``step`` pixels from the border.

    :param depth: (H, W) metres, 0 / NaN where unknown.
    :returns: normals (H, W, 3) float32 (0 where invalid) and mask (H, W) bool.
    """
    depth = np.asarray(depth, dtype=np.float64)
    height, width = depth.shape
    s = int(step)
    normals = np.zeros((height, width, 3), dtype=np.float32)
    mask = np.zeros((height, width), dtype=bool)
    if height <= 2 * s or width <= 2 * s:
        return normals, mask
    good = np.isfinite(depth) & (depth > 0)
    z = np.where(good, depth, 0.0)
    points = backproject(z, fx, fy, cx, cy)
    c = (slice(s, height - s), slice(s, width - s))
    left, right = (slice(s, height - s), slice(0, width - 2 * s)), (slice(s, height - s), slice(2 * s, width))
    up, down = (slice(0, height - 2 * s), slice(s, width - s)), (slice(2 * s, height), slice(s, width - s))
    du = points[right] - points[left]
    dv = points[down] - points[up]
    n = np.cross(dv, du)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    valid = good[c] & good[left] & good[right] & good[up] & good[down] & (norm[..., 0] > 0)
    zc = z[c]
    for nb in (left, right, up, down):
        valid &= np.abs(z[nb] - zc) <= max_relative_jump * np.maximum(zc, 1e-9)
    n = n / np.maximum(norm, 1e-12)
    # Face the camera: the normal must point against the viewing ray (n . P < 0).
    facing = np.sum(n * points[c], axis=-1) > 0
    n[facing] = -n[facing]
    n[~valid] = 0
    normals[c] = n.astype(np.float32)
    mask[c] = valid
    return normals, mask


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals (..., 3) float -> int8 (..., 3) as round(n * 127)."""
    return np.clip(np.rint(np.asarray(normals, dtype=np.float32) * 127.0), -127, 127).astype(np.int8)


def decode_normals(codes: np.ndarray) -> np.ndarray:
    """int8 codes (..., 3) -> unit normals float32 (0 where the code is 0)."""
    n = codes.astype(np.float32) / 127.0
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(norm > 1e-6, n / np.maximum(norm, 1e-6), 0.0).astype(np.float32)


def normals_from_rgb(rgb: np.ndarray, tolerance: float = 0.1) -> Tuple[np.ndarray, np.ndarray]:
    """An RGB-coded normal map (H, W, 3) uint8, ``n = rgb / 127.5 - 1``, -> normals, mask.

    A pixel is valid when the decoded vector has length 1 ± ``tolerance``
    (so black or mid-grey pixels mark "no normal"); valid normals are
    renormalised, invalid ones set to 0.
    """
    n = rgb[..., :3].astype(np.float32) / 127.5 - 1.0
    norm = np.linalg.norm(n, axis=-1)
    mask = np.abs(norm - 1.0) <= tolerance
    n = np.where(mask[..., None], n / np.maximum(norm, 1e-6)[..., None], 0.0).astype(np.float32)
    return n, mask
