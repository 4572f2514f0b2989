"""One synthetic sample from (seed, split, index): layout, render, ground truth.

The sample's random stream is ``SeedSequence(seed, spawn_key=(split, index))``,
so a sample never depends on which worker made it or on the other samples,
and the three splits are disjoint streams. The layout is drawn first, so a
sample shows the same scene at every image size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import numpy as np

from mtlkit.errors import ConfigError

from .layout import sample_layout
from .objects import CLASSES
from .render import build_scene_mesh, render, visible_boxes
from .scenes import SCENES

#: bump when a change to the generator changes the samples (invalidates caches)
GENERATOR_VERSION = 1

SPLITS = {"train": 0, "val": 1, "test": 2}

#: material row of the enclosure seen through windows and doors (render.py)
OUTSIDE_ROW = 3


@dataclass(frozen=True)
class RenderOptions:
    """Everything that decides a sample besides (seed, split, index).

    Attributes:
        image_size: (H, W) in pixels.
        shadows: cast shadow rays towards the light.
        noise: standard deviation of the Gaussian sensor noise (of [0, 1] intensities).
        min_visible_fraction: drop a box when less than this fraction of the
            object's unoccluded in-image area is visible.
        min_area: drop a box smaller than this fraction of the image area (visible pixels).
        kinect_holes: invalidate depth like a Kinect: pixels seen through
            windows / doors and a band along depth discontinuities.
        scene_weights: relative probability of each scene type (``SCENES``
            order); ``None`` is uniform.
    """

    image_size: tuple = (240, 320)
    shadows: bool = True
    noise: float = 0.012
    min_visible_fraction: float = 0.2
    min_area: float = 0.0005
    kinect_holes: bool = False
    scene_weights: Optional[tuple] = None

    def scene_probs(self) -> Optional[np.ndarray]:
        if self.scene_weights is None:
            return None
        w = np.asarray(self.scene_weights, float)
        return w / w.sum()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["scene_weights"] = None if self.scene_weights is None else list(self.scene_weights)
        return d


def make_options(image_size=(240, 320), shadows=True, noise=0.012, min_visible_fraction=0.2,
                 min_area=0.0005, kinect_holes=False, scene_weights=None) -> RenderOptions:
    """Validated :class:`RenderOptions` (raises :class:`ConfigError` naming the option)."""
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ConfigError(f"synthetic: image_size must be [height, width], got {image_size!r}") from None
    if h < 8 or w < 8 or h > 4096 or w > 4096:
        raise ConfigError(f"synthetic: image_size must be between 8 and 4096 pixels, got {image_size!r}")
    if not 0 <= float(noise) <= 1:
        raise ConfigError(f"synthetic: noise must be in [0, 1], got {noise!r}")
    if not 0 <= float(min_visible_fraction) <= 1:
        raise ConfigError(f"synthetic: min_visible_fraction must be in [0, 1], got {min_visible_fraction!r}")
    if not 0 <= float(min_area) < 1:
        raise ConfigError(f"synthetic: min_area must be in [0, 1), got {min_area!r}")
    if scene_weights is not None:
        try:
            weights = tuple(float(x) for x in scene_weights)
        except (TypeError, ValueError):
            raise ConfigError(f"synthetic: scene_weights must be a list of {len(SCENES)} numbers") from None
        if len(weights) != len(SCENES) or min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"synthetic: scene_weights must be {len(SCENES)} non-negative numbers "
                              f"(not all 0), one per scene {list(SCENES)}; got {list(scene_weights)!r}")
        scene_weights = weights
    return RenderOptions((h, w), bool(shadows), float(noise), float(min_visible_fraction), float(min_area),
                         bool(kinect_holes), scene_weights)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of sample ``index`` of ``split`` for ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(SPLITS[split], int(index))))


def _kinect_holes(depth: np.ndarray, outside: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Validity mask (H, W) bool: False through openings and in a 1-3 px band on
    the far side of depth discontinuities (where a Kinect's projector is shadowed)."""
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


def generate_sample(seed: int, split: str, index: int, options: RenderOptions) -> Dict[str, np.ndarray]:
    """Render one sample. Returns numpy arrays:

    image (H, W, 3) uint8; depth (H, W) float32 metres (0 where invalid);
    depth_mask (H, W) bool; normals (3, H, W) float32 camera frame (0 where
    invalid); normals_mask (H, W) bool; boxes (N, 4) float32 xyxy pixel edges;
    labels (N,) int64 in 1..C; scene () int64; instances (H, W) uint8 (0 room,
    k object k); box_instance (N,) int64 the instance of each box.
    """
    if split not in SPLITS:
        raise ConfigError(f"synthetic: split must be one of {list(SPLITS)}, got {split!r}")
    rng = sample_rng(seed, split, index)
    layout = sample_layout(rng, options.scene_probs())
    mesh = build_scene_mesh(layout)
    h, w = options.image_size
    frame = render(layout, h, w, rng, shadows=options.shadows, noise=options.noise, mesh=mesh)
    gt = visible_boxes(frame, layout, mesh, min_visible_fraction=options.min_visible_fraction,
                       min_area=options.min_area)
    depth = frame.depth
    normals = frame.normals
    mask = frame.valid
    if options.kinect_holes:
        outside = (frame.instances == 0) & (frame.material == OUTSIDE_ROW)
        mask = mask & _kinect_holes(depth, outside, rng)
    depth = np.where(mask, depth, 0).astype(np.float32)
    normals = np.where(mask[None], normals, 0).astype(np.float32)
    return {
        "image": frame.rgb,
        "depth": depth,
        "depth_mask": mask.copy(),
        "normals": normals,
        "normals_mask": mask.copy(),
        "boxes": gt["boxes"].astype(np.float32),
        "labels": gt["labels"].astype(np.int64),
        "scene": np.array(layout.scene, np.int64),
        "instances": frame.instances.astype(np.uint8),
        "box_instance": gt["instance"].astype(np.int64),
    }


def class_names() -> List[str]:
    return list(CLASSES)


def scene_names() -> List[str]:
    return list(SCENES)
