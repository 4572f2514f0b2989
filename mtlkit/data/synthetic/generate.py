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

from .appearance import OUTSIDE_ROW, Appearance, appearance_streams, make_appearance
from .layout import sample_layout
from .objects import CLASSES
from .render import build_scene_mesh, intrinsics, pixel_rays, render, visible_boxes
from .scenes import SCENES
from .sensor import SensorOptions, kinect_holes, make_sensor, sensor_arrays, sensor_rng

#: bump when a change to the generator changes the samples (invalidates caches)
GENERATOR_VERSION = 1

SPLITS = {"train": 0, "val": 1, "test": 2}


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
        sensor: a simulated depth sensor (:mod:`.sensor`) whose measurement is
            added as ``sensor_*`` arrays; ``None``: no sensor. The labels are
            unchanged either way.
        domain: the name of the appearance's domain (:data:`.appearance.DOMAINS`),
            ``None`` for the source world.
        appearance: how the rooms look (:class:`.appearance.Appearance`): lighting,
            materials, camera; ``None`` is the source world. Never changes the
            layout, depth, normals, boxes or labels.
    """

    image_size: tuple = (240, 320)
    shadows: bool = True
    noise: float = 0.012
    min_visible_fraction: float = 0.2
    min_area: float = 0.0005
    kinect_holes: bool = False
    scene_weights: Optional[tuple] = None
    sensor: Optional[SensorOptions] = None
    domain: Optional[str] = None
    appearance: Optional[Appearance] = None

    def scene_probs(self) -> Optional[np.ndarray]:
        if self.scene_weights is None:
            return None
        w = np.asarray(self.scene_weights, float)
        return w / w.sum()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["scene_weights"] = None if self.scene_weights is None else list(self.scene_weights)
        if self.sensor is None:
            del d["sensor"]  # the keys (caches, data folders) of sets without a sensor are unchanged
        if self.appearance is None:  # the source world: the keys of its caches and folders are unchanged
            del d["domain"], d["appearance"]
        else:
            d["appearance"] = self.appearance.to_dict()
        return d


def make_options(image_size=(240, 320), shadows=True, noise=0.012, min_visible_fraction=0.2,
                 min_area=0.0005, kinect_holes=False, scene_weights=None, sensor=None, domain=None,
                 appearance=None) -> RenderOptions:
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
    look = make_appearance(domain, appearance)
    return RenderOptions((h, w), bool(shadows), float(noise), float(min_visible_fraction), float(min_area),
                         bool(kinect_holes), scene_weights, sensor=make_sensor(sensor),
                         domain=None if look is None else (domain or "source"), appearance=look)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of sample ``index`` of ``split`` for ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(SPLITS[split], int(index))))


def generate_sample(seed: int, split: str, index: int, options: RenderOptions) -> Dict[str, np.ndarray]:
    """Render one sample. Returns numpy arrays:

    image (H, W, 3) uint8; depth (H, W) float32 metres (0 where invalid);
    depth_mask (H, W) bool; normals (3, H, W) float32 camera frame (0 where
    invalid); normals_mask (H, W) bool; boxes (N, 4) float32 xyxy pixel edges;
    labels (N,) int64 in 1..C; scene () int64; instances (H, W) uint8 (0 room,
    k object k); box_instance (N,) int64 the instance of each box. With
    ``options.sensor``, also the sensor's measurement (:func:`.sensor.sensor_arrays`):
    sensor_depth (H, W) float32 (0 in holes), sensor_depth_mask (H, W) bool,
    sensor_normals (3, H, W) float32, sensor_normals_mask (H, W) bool.
    """
    if split not in SPLITS:
        raise ConfigError(f"synthetic: split must be one of {list(SPLITS)}, got {split!r}")
    rng = sample_rng(seed, split, index)
    layout = sample_layout(rng, options.scene_probs())
    mesh = build_scene_mesh(layout)
    h, w = options.image_size
    streams = None if options.appearance is None else appearance_streams(seed, SPLITS[split], index)
    frame = render(layout, h, w, rng, shadows=options.shadows, noise=options.noise, mesh=mesh,
                   appearance=options.appearance, streams=streams)
    gt = visible_boxes(frame, layout, mesh, min_visible_fraction=options.min_visible_fraction,
                       min_area=options.min_area)
    depth = frame.depth
    normals = frame.normals
    mask = frame.valid
    outside = (frame.instances == 0) & (frame.material == OUTSIDE_ROW)
    if options.kinect_holes:
        mask = mask & kinect_holes(depth, outside, rng)
    sensor = {}
    if options.sensor is not None:
        # the sensor's own random stream: the rest of the sample is the same with or without it
        sensor = sensor_arrays(frame.depth, frame.valid, frame.normals, frame.material, mesh.materials,
                               outside, intrinsics(h, w), pixel_rays(h, w).reshape(h, w, 3),
                               options.sensor, sensor_rng(seed, SPLITS[split], index))
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
        **sensor,
    }


def class_names() -> List[str]:
    return list(CLASSES)


def scene_names() -> List[str]:
    return list(SCENES)
