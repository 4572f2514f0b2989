"""The object classes: how each one is built from template parts, and its size.

Every builder takes a numpy ``Generator`` and a ``variant`` hint from the scene
(e.g. ``"coffee"`` for a low living-room table) and returns an
:class:`ObjectModel` in its own frame: metres, z up, the origin at the centre
of its footprint on the floor (or on the surface it stands on), its back
towards -y and its front towards +y (placement puts the back against a wall).

Sizes are sampled uniformly around realistic dimensions (ranges in the
builders below, documented in docs/synthetic.md). Shape and size are the
*only* things that differ between classes: colours and textures come from
pools shared by every class (:mod:`.materials`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .primitives import MeshBuilder, rotation_x

#: class names; label = index + 1 (0 is background)
CLASSES: Tuple[str, ...] = (
    "bathtub", "bed", "bookshelf", "cabinet", "chair", "lamp",
    "monitor", "plant", "sofa", "table", "toilet",
)


@dataclass
class ObjectModel:
    """One object in its local frame.

    Attributes:
        vertices: (V, 3) float64.
        faces: (F, 3) int64.
        slots: (F,) int8 material slot per face (0 primary, 1 secondary).
        half_extent: (hx, hy) half footprint along local x / y.
        height: total height (m).
        top: ``(z, hx, hy)`` of a flat top others can stand on, or ``None``.
    """

    vertices: np.ndarray
    faces: np.ndarray
    slots: np.ndarray
    half_extent: Tuple[float, float]
    height: float
    top: Optional[Tuple[float, float, float]] = None


def _finish(b: MeshBuilder, hx: float, hy: float, height: float, top=None) -> ObjectModel:
    v, f, s = b.build()
    return ObjectModel(v, f, s, (float(hx), float(hy)), float(height), top)


def _legs(b: MeshBuilder, rng, hx: float, hy: float, height: float, inset: float,
          thickness: float, round_legs: bool) -> None:
    """Four legs from the floor up to ``height`` at the corners of a (2hx, 2hy) rectangle."""
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx, cy = sx * (hx - inset), sy * (hy - inset)
            kind = "cylinder" if round_legs else "box"
            b.add(kind, (thickness, thickness, height), (cx, cy, height / 2))


def chair(rng, variant: str = "") -> ObjectModel:
    """Four legs, a seat and a back (slab, or slab on two uprights); armchair variant."""
    b = MeshBuilder()
    w = rng.uniform(0.40, 0.52)
    d = rng.uniform(0.40, 0.50)
    seat_h = rng.uniform(0.42, 0.48)
    seat_t = rng.uniform(0.03, 0.07)
    leg_t = rng.uniform(0.025, 0.045)
    _legs(b, rng, w / 2, d / 2, seat_h - seat_t, leg_t / 2 + 0.01, leg_t, rng.random() < 0.4)
    b.add("box", (w, d, seat_t), (0, 0, seat_h - seat_t / 2), slot=int(rng.random() < 0.5))
    back_h = rng.uniform(0.35, 0.50)
    back_t = rng.uniform(0.02, 0.04)
    tilt = rng.uniform(0.0, 0.2)
    if rng.random() < 0.5:  # a solid back
        b.add("box", (w, back_t, back_h), (0, -d / 2 + back_t / 2, seat_h + back_h / 2),
              rotation=rotation_x(-tilt))
    else:  # two uprights and a top rail
        for sx in (-1, 1):
            b.add("box", (leg_t, back_t, back_h),
                  (sx * (w / 2 - leg_t / 2), -d / 2 + back_t / 2, seat_h + back_h / 2))
        rail = rng.uniform(0.08, 0.16)
        b.add("box", (w, back_t, rail), (0, -d / 2 + back_t / 2, seat_h + back_h - rail / 2))
    if variant == "arm" or rng.random() < 0.15:  # armrests
        for sx in (-1, 1):
            b.add("box", (0.04, d * 0.8, 0.04), (sx * (w / 2 - 0.02), 0, seat_h + 0.2))
            b.add("box", (0.03, 0.03, 0.2), (sx * (w / 2 - 0.02), d * 0.3, seat_h + 0.1))
    return _finish(b, w / 2, d / 2, seat_h + back_h)


def table(rng, variant: str = "") -> ObjectModel:
    """A top on four legs (or a round top on a pedestal). Variants: dining, desk, coffee."""
    b = MeshBuilder()
    if variant == "coffee":
        w, d, h = rng.uniform(0.8, 1.3), rng.uniform(0.45, 0.7), rng.uniform(0.38, 0.5)
    elif variant == "desk":
        w, d, h = rng.uniform(1.0, 1.6), rng.uniform(0.6, 0.8), rng.uniform(0.72, 0.76)
    else:
        w, d, h = rng.uniform(0.9, 1.8), rng.uniform(0.7, 1.0), rng.uniform(0.72, 0.77)
    top_t = rng.uniform(0.025, 0.05)
    if variant != "desk" and rng.random() < 0.2:  # round top on a pedestal
        w = d = rng.uniform(0.7, 1.1)
        b.add("cylinder", (w, d, top_t), (0, 0, h - top_t / 2))
        b.add("cylinder", (0.08, 0.08, h - top_t), (0, 0, (h - top_t) / 2))
        b.add("cylinder", (w * 0.5, d * 0.5, 0.03), (0, 0, 0.015))
        return _finish(b, w / 2, d / 2, h, top=(h, w / 2 * 0.7, d / 2 * 0.7))
    b.add("box", (w, d, top_t), (0, 0, h - top_t / 2))
    leg_t = rng.uniform(0.035, 0.06)
    _legs(b, rng, w / 2, d / 2, h - top_t, leg_t / 2 + rng.uniform(0.0, 0.06), leg_t,
          rng.random() < 0.4)
    if rng.random() < 0.4:  # an apron under the top
        b.add("box", (w - 0.1, d - 0.1, 0.08), (0, 0, h - top_t - 0.04), slot=1)
    return _finish(b, w / 2, d / 2, h, top=(h, w / 2, d / 2))


def bed(rng, variant: str = "") -> ObjectModel:
    """Frame on short legs, a mattress, a headboard against the wall, pillows."""
    b = MeshBuilder()
    w = rng.choice([rng.uniform(0.9, 1.1), rng.uniform(1.4, 1.9)])
    length = rng.uniform(1.95, 2.15)
    leg_h = rng.uniform(0.05, 0.15)
    frame_h = rng.uniform(0.15, 0.25)
    mattress_h = rng.uniform(0.15, 0.25)
    _legs(b, rng, w / 2, length / 2, leg_h, 0.05, 0.06, False)
    b.add("box", (w, length, frame_h), (0, 0, leg_h + frame_h / 2))
    top = leg_h + frame_h + mattress_h
    b.add("box", (w - 0.04, length - 0.08, mattress_h), (0, 0.02, leg_h + frame_h + mattress_h / 2),
          slot=1)
    head_h = rng.uniform(0.8, 1.25)
    head_t = rng.uniform(0.04, 0.1)
    b.add("box", (w + 0.04, head_t, head_h), (0, -length / 2 + head_t / 2, head_h / 2))
    n_pillows = 1 if w < 1.2 else 2
    for k in range(n_pillows):
        px = 0.0 if n_pillows == 1 else (k - 0.5) * w / 2
        b.add("sphere", (min(0.6, w / n_pillows - 0.1), 0.4, 0.14),
              (px, -length / 2 + head_t + 0.25, top + 0.05), slot=1)
    return _finish(b, (w + 0.04) / 2, length / 2, head_h)


def sofa(rng, variant: str = "") -> ObjectModel:
    """Base, 1-3 seat cushions, a thick back and two armrests."""
    b = MeshBuilder()
    n_seats = int(rng.integers(1, 4))
    seat_w = rng.uniform(0.55, 0.7)
    arm_w = rng.uniform(0.12, 0.25)
    w = n_seats * seat_w + 2 * arm_w
    d = rng.uniform(0.8, 0.95)
    base_h = rng.uniform(0.25, 0.32)
    cushion_h = rng.uniform(0.12, 0.18)
    back_t = rng.uniform(0.15, 0.25)
    back_h = rng.uniform(0.72, 0.9)
    arm_h = rng.uniform(0.5, 0.65)
    b.add("box", (w, d, base_h), (0, 0, base_h / 2))
    for k in range(n_seats):
        cx = -w / 2 + arm_w + (k + 0.5) * seat_w
        b.add("box", (seat_w - 0.02, d - back_t - 0.02, cushion_h), (cx, back_t / 2, base_h + cushion_h / 2),
              slot=1)
    b.add("box", (w, back_t, back_h), (0, -d / 2 + back_t / 2, back_h / 2))
    for sx in (-1, 1):
        b.add("box", (arm_w, d, arm_h), (sx * (w / 2 - arm_w / 2), 0, arm_h / 2))
    return _finish(b, w / 2, d / 2, back_h)


def lamp(rng, variant: str = "") -> ObjectModel:
    """A shade (cone or cylinder) on a pole on a round base. Variants: floor, table."""
    b = MeshBuilder()
    if variant == "table":
        base_r, pole_h, shade_r = rng.uniform(0.06, 0.1), rng.uniform(0.2, 0.35), rng.uniform(0.1, 0.17)
    else:
        base_r, pole_h, shade_r = rng.uniform(0.12, 0.18), rng.uniform(1.2, 1.6), rng.uniform(0.17, 0.25)
    base_t = rng.uniform(0.02, 0.04)
    pole_r = rng.uniform(0.008, 0.02) * (1 if variant != "table" else 1.5)
    shade_h = shade_r * rng.uniform(1.0, 1.5)
    b.add("cylinder", (2 * base_r, 2 * base_r, base_t), (0, 0, base_t / 2))
    b.add("cylinder", (2 * pole_r, 2 * pole_r, pole_h), (0, 0, base_t + pole_h / 2))
    shade = "frustum" if rng.random() < 0.7 else "cylinder"
    b.add(shade, (2 * shade_r, 2 * shade_r, shade_h), (0, 0, base_t + pole_h + shade_h * 0.35), slot=1)
    return _finish(b, max(base_r, shade_r), max(base_r, shade_r), base_t + pole_h + shade_h * 0.85)


def monitor(rng, variant: str = "") -> ObjectModel:
    """A thin screen slab on a neck and a flat foot. Variant ``tv``: larger."""
    b = MeshBuilder()
    if variant == "tv":
        sw = rng.uniform(0.8, 1.3)
    else:
        sw = rng.uniform(0.4, 0.65)
    sh = sw * rng.uniform(0.56, 0.65)
    st = rng.uniform(0.02, 0.05)
    neck_h = rng.uniform(0.08, 0.18) + (0.05 if variant == "tv" else 0.0)
    foot = (rng.uniform(0.18, 0.3) * (1.5 if variant == "tv" else 1), rng.uniform(0.14, 0.22), 0.015)
    b.add("box", foot, (0, 0, foot[2] / 2))
    b.add("box", (0.05, 0.03, neck_h + sh / 2), (0, -0.02, foot[2] + (neck_h + sh / 2) / 2))
    b.add("box", (sw, st, sh), (0, 0.0, foot[2] + neck_h + sh / 2), rotation=rotation_x(-rng.uniform(0, 0.12)),
          slot=1)
    return _finish(b, max(sw, foot[0]) / 2, max(st, foot[1]) / 2, foot[2] + neck_h + sh)


def cabinet(rng, variant: str = "") -> ObjectModel:
    """A box body with door / drawer fronts and handles. Variants: low (sideboard,
    nightstand), counter (kitchen), tall (wardrobe)."""
    b = MeshBuilder()
    if variant == "counter":
        w, d, h = rng.uniform(0.6, 1.4), rng.uniform(0.55, 0.65), rng.uniform(0.86, 0.92)
    elif variant == "nightstand":
        w, d, h = rng.uniform(0.4, 0.55), rng.uniform(0.35, 0.45), rng.uniform(0.45, 0.65)
    elif variant == "tall":
        w, d, h = rng.uniform(0.8, 1.4), rng.uniform(0.5, 0.62), rng.uniform(1.7, 2.1)
    else:
        w, d, h = rng.uniform(0.6, 1.6), rng.uniform(0.38, 0.55), rng.uniform(0.5, 0.95)
    plinth = rng.uniform(0.0, 0.1)
    b.add("box", (w - 0.04, d - 0.04, plinth + 0.001), (0, -0.02, plinth / 2))
    body_d = d - 0.02
    b.add("box", (w, body_d, h - plinth), (0, -0.01, plinth + (h - plinth) / 2))
    if variant == "counter":  # an overhanging worktop
        b.add("box", (w, d + 0.03, 0.035), (0, 0.005, h + 0.0175), slot=1)
        h += 0.035
    n_doors = max(1, int(round(w / rng.uniform(0.35, 0.6))))
    n_rows = 1 if h < 1.0 and rng.random() < 0.6 else int(rng.integers(1, 4))
    dw = (w - 0.02) / n_doors
    dh = (h - plinth - 0.04) / n_rows
    front = d / 2 - 0.02 + 0.01
    for i in range(n_doors):
        for j in range(n_rows):
            cx = -w / 2 + 0.01 + (i + 0.5) * dw
            cz = plinth + 0.02 + (j + 0.5) * dh
            b.add("box", (dw - 0.01, 0.018, dh - 0.01), (cx, front, cz), slot=1)
            b.add("box", (0.1 if n_rows > 1 else 0.02, 0.02, 0.02 if n_rows > 1 else 0.1),
                  (cx, front + 0.019, cz + (dh * 0.3 if n_rows > 1 else 0)))
    return _finish(b, w / 2, d / 2 + 0.03, h, top=(h, w / 2 - 0.02, d / 2 - 0.03))


def bookshelf(rng, variant: str = "") -> ObjectModel:
    """Open frame: sides, top, bottom, back, shelves with a few books on them."""
    b = MeshBuilder()
    w, d, h = rng.uniform(0.6, 1.2), rng.uniform(0.26, 0.38), rng.uniform(1.1, 2.1)
    t = rng.uniform(0.018, 0.03)
    for sx in (-1, 1):
        b.add("box", (t, d, h), (sx * (w / 2 - t / 2), 0, h / 2))
    b.add("box", (w, d, t), (0, 0, h - t / 2))
    b.add("box", (w, 0.01, h), (0, -d / 2 + 0.005, h / 2))
    n_shelves = max(2, int(h / rng.uniform(0.3, 0.4)))
    gap = (h - t) / n_shelves
    for k in range(n_shelves):
        z = k * gap
        b.add("box", (w - 2 * t, d - 0.01, t), (0, 0.005, z + t / 2))
        x = -w / 2 + t + 0.01
        while True:  # books, leaning nowhere, until the shelf is full or the luck ends
            bw = rng.uniform(0.02, 0.06)
            bh = min(gap - t - 0.02, rng.uniform(0.16, 0.3))
            if x + bw > w / 2 - t - 0.01 or rng.random() < 0.08 or bh < 0.05:
                break
            bd = rng.uniform(0.15, d - 0.03)
            b.add("box", (bw, bd, bh), (x + bw / 2, -d / 2 + 0.01 + bd / 2, z + t + bh / 2), slot=1)
            x += bw + (rng.uniform(0.05, 0.2) if rng.random() < 0.1 else 0.002)
    return _finish(b, w / 2, d / 2, h)


def toilet(rng, variant: str = "") -> ObjectModel:
    """A pedestal, a bowl, a seat ring and a tank against the wall."""
    b = MeshBuilder()
    bowl_w = rng.uniform(0.34, 0.4)
    bowl_l = rng.uniform(0.45, 0.55)
    seat_h = rng.uniform(0.38, 0.44)
    tank_w, tank_d, tank_h = rng.uniform(0.36, 0.48), rng.uniform(0.15, 0.22), rng.uniform(0.3, 0.42)
    depth = tank_d + bowl_l
    y_bowl = -depth / 2 + tank_d + bowl_l / 2 - 0.05
    b.add("frustum", (bowl_w * 0.75, bowl_l * 0.6, seat_h * 0.55), (0, y_bowl - 0.03, seat_h * 0.275))
    b.add("bowl", (bowl_w * 0.8, bowl_l * 0.8, seat_h * 0.45), (0, y_bowl, seat_h * 0.55 + seat_h * 0.2))
    b.add("cylinder", (bowl_w, bowl_l, 0.03), (0, y_bowl, seat_h + 0.015), slot=1)
    b.add("box", (tank_w, tank_d, tank_h), (0, -depth / 2 + tank_d / 2, seat_h + tank_h / 2 + 0.02))
    b.add("box", (tank_w + 0.02, tank_d + 0.02, 0.025), (0, -depth / 2 + tank_d / 2, seat_h + tank_h + 0.03),
          slot=1)
    return _finish(b, max(bowl_w, tank_w) / 2 + 0.01, depth / 2, seat_h + tank_h + 0.045)


def bathtub(rng, variant: str = "") -> ObjectModel:
    """A hollow tub: four walls and a floor (the inside is concave)."""
    b = MeshBuilder()
    w, d, h = rng.uniform(1.4, 1.8), rng.uniform(0.7, 0.85), rng.uniform(0.45, 0.6)
    t = rng.uniform(0.06, 0.12)
    b.add("box", (w, d, 0.1), (0, 0, 0.05))
    for sy in (-1, 1):
        b.box(-w / 2, sy * d / 2 - (t if sy > 0 else 0), 0, w / 2, sy * d / 2 + (0 if sy > 0 else t), h)
    for sx in (-1, 1):
        b.box(sx * w / 2 - (t if sx > 0 else 0), -d / 2 + t, 0, sx * w / 2 + (0 if sx > 0 else t), d / 2 - t, h)
    b.box(-w / 2 + t, -d / 2 + t, 0.1, w / 2 - t, d / 2 - t, 0.12, slot=1)  # inner floor
    if rng.random() < 0.5:  # a tap on the back rim
        b.add("cylinder", (0.04, 0.04, 0.15), (w / 2 - t - 0.1, -d / 2 + t / 2, h + 0.075), slot=1)
    return _finish(b, w / 2, d / 2, h)


def plant(rng, variant: str = "") -> ObjectModel:
    """A pot, a stem and 1-5 leafy blobs. Variant ``small``: on furniture."""
    b = MeshBuilder()
    s = rng.uniform(0.35, 0.6) if variant == "small" else 1.0
    pot_r = rng.uniform(0.1, 0.22) * s
    pot_h = rng.uniform(0.18, 0.4) * s
    stem_h = rng.uniform(0.1, 0.6) * s
    b.add("bowl", (2 * pot_r, 2 * pot_r, pot_h), (0, 0, pot_h / 2))
    b.add("cylinder", (0.03 * s, 0.03 * s, stem_h + 0.05), (0, 0, pot_h + stem_h / 2))
    radius = 0.0
    top = pot_h + stem_h
    for _ in range(int(rng.integers(1, 6))):
        r = rng.uniform(0.12, 0.3) * s
        off = rng.normal(0, 0.08 * s, size=2)
        z = pot_h + stem_h + rng.uniform(-0.05, 0.2) * s
        b.add("sphere", (2 * r, 2 * r, 2 * r * rng.uniform(0.7, 1.3)), (off[0], off[1], z), slot=1)
        radius = max(radius, np.abs(off).max() + r)
        top = max(top, z + r * 1.3)
    radius = max(radius, pot_r)
    return _finish(b, radius, radius, top)


BUILDERS: Dict[str, Callable[..., ObjectModel]] = {
    "bathtub": bathtub, "bed": bed, "bookshelf": bookshelf, "cabinet": cabinet, "chair": chair,
    "lamp": lamp, "monitor": monitor, "plant": plant, "sofa": sofa, "table": table, "toilet": toilet,
}
assert tuple(sorted(BUILDERS)) == CLASSES


def build_object(name: str, rng: np.random.Generator, variant: str = "") -> ObjectModel:
    """Build one object of class ``name`` (see :data:`CLASSES`)."""
    return BUILDERS[name](rng, variant)
