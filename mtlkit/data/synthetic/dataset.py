"""``SyntheticRooms``: the procedural RGB-D rooms as a torch ``Dataset``."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from mtlkit.data.render_once import RenderOnce
from mtlkit.errors import ConfigError, DataError
from mtlkit.schema import SEED_RANGE

from . import storage, writer
from .generate import GENERATOR_VERSION, SPLITS, RenderOptions, generate_sample, make_options
from .objects import CLASSES
from .scenes import SCENES

DEFAULT_SIZE = 400


def to_sample(arrays: Dict[str, np.ndarray], index: int) -> Dict[str, Any]:
    """numpy arrays of :func:`~.generate.generate_sample` -> the sample dict of
    docs/architecture.md: image (3, H, W) float32 in [0, 1], boxes (N, 4),
    labels (N,), scene (), depth (1, H, W), depth_mask (1, H, W), normals
    (3, H, W), normals_mask (1, H, W), has, meta; with a sensor also
    sensor_depth (1, H, W), sensor_depth_mask (1, H, W), sensor_normals
    (3, H, W), sensor_normals_mask (1, H, W) and ``has`` entries
    ``sensor_depth`` / ``sensor_normals`` (:mod:`mtlkit.task`: measured inputs)."""
    image = torch.from_numpy(np.ascontiguousarray(arrays["image"].transpose(2, 0, 1))).float().div_(255.0)
    h, w = image.shape[1:]
    sample = {
        "image": image,
        "boxes": torch.from_numpy(np.asarray(arrays["boxes"], np.float32).reshape(-1, 4)),
        "labels": torch.from_numpy(np.asarray(arrays["labels"], np.int64)),
        "scene": torch.tensor(int(arrays["scene"]), dtype=torch.int64),
        "depth": torch.from_numpy(np.asarray(arrays["depth"], np.float32))[None],
        "depth_mask": torch.from_numpy(np.asarray(arrays["depth_mask"], bool))[None],
        "normals": torch.from_numpy(np.asarray(arrays["normals"], np.float32)),
        "normals_mask": torch.from_numpy(np.asarray(arrays["normals_mask"], bool))[None],
        "has": {"detection": True, "scene": True, "depth": True, "normals": True},
        "meta": {"id": int(index), "source": "synthetic", "orig_size": (int(h), int(w))},
    }
    if "sensor_depth" in arrays:
        for key in ("depth", "normals"):
            value = np.asarray(arrays[f"sensor_{key}"], np.float32)
            sample[f"sensor_{key}"] = torch.from_numpy(value if value.ndim == 3 else value[None])
            sample[f"sensor_{key}_mask"] = torch.from_numpy(np.asarray(arrays[f"sensor_{key}_mask"], bool))[None]
            sample["has"][f"sensor_{key}"] = True
    return sample


class SyntheticRooms(Dataset):
    """Procedurally rendered indoor rooms with boxes, scene type, depth and normals.

    Samples are rendered on the fly, deterministically from (seed, split,
    index); see docs/synthetic.md for what is drawn and how.

    Options (all keyword; :attr:`defaults` lists them with their defaults):

    * ``split`` ("train"): ``train`` / ``val`` / ``test``, disjoint random streams.
    * ``size`` (None): number of samples; None means 400 when rendering, and
      every written sample with ``root``.
    * ``seed`` (0): base seed (a non-negative int).
    * ``image_size`` ([240, 320]): (H, W) rendered.
    * ``shadows`` (True): cast shadow rays.
    * ``noise`` (0.012): Gaussian sensor noise std on [0, 1] intensities.
    * ``min_visible_fraction`` (0.2): drop boxes of objects with less than this
      fraction of their unoccluded in-image area visible.
    * ``min_area`` (0.0005): drop boxes whose visible pixels are below this
      fraction of the image.
    * ``kinect_holes`` (False): invalidate depth / normals through windows and
      doors and along depth discontinuities, like a Kinect.
    * ``scene_weights`` (None): relative probabilities of the scene types
      (order of :attr:`scenes`); None is uniform.
    * ``sensor`` (None): a simulated structured-light depth sensor
      (:mod:`.sensor`): ``kinect``, or a mapping of its parameters; adds the
      ``sensor_*`` maps (the measured inputs of docs/models.md), leaves the
      labels as they are.
    * ``domain`` (None): how the rooms look, by name (:data:`.appearance.DOMAINS`:
      ``source``, ``dusk``, ``showroom``); None is the source world.
    * ``appearance`` (None): appearance option values over the domain's
      (lighting, materials, camera: :mod:`.appearance`), e.g. ``{gamma: 2.0}``.
      Neither changes the layout, depth, normals, boxes, labels or scene of a sample.
    * ``cache_dir`` (None): when set, each sample is rendered once and stored
      there (compressed npz, atomic writes) in a sub-folder keyed by every
      option above, then read back.
    * ``root`` (None): a folder written by ``mtlkit data synth``; samples are
      read from it (from its memory-mapped ``pack/`` when it has one, see
      :func:`~.storage.write_pack`) and the rendering options above are
      ignored (they are recorded in its dataset.json, see :attr:`config`).
    """

    classes: List[str] = list(CLASSES)
    scenes: List[str] = list(SCENES)
    defaults: Dict[str, Any] = {
        "split": "train",
        "size": None,
        "seed": 0,
        "image_size": [240, 320],
        "shadows": True,
        "noise": 0.012,
        "min_visible_fraction": 0.2,
        "min_area": 0.0005,
        "kinect_holes": False,
        "scene_weights": None,
        "sensor": None,
        "domain": None,
        "appearance": None,
        "cache_dir": None,
        "root": None,
    }
    #: a size beyond any set worth rendering is a typo (it failed with a MemoryError)
    ranges = {"size": "[0, 10000000]", "image_size": "[8, 8192]", "noise": ">= 0",
              "min_visible_fraction": "[0, 1]", "min_area": "[0, 1]", "scene_weights": ">= 0",
              "seed": SEED_RANGE}

    def __init__(self, split: str = "train", size: Optional[int] = None, seed: int = 0,
                 image_size=(240, 320), shadows: bool = True, noise: float = 0.012,
                 min_visible_fraction: float = 0.2, min_area: float = 0.0005, kinect_holes: bool = False,
                 scene_weights=None, cache_dir: Optional[str] = None, root: Optional[str] = None,
                 sensor=None, domain: Optional[str] = None, appearance: Optional[Dict[str, Any]] = None):
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ConfigError(f"synthetic: size must be a non-negative int or null, got {size!r}")
        self.root = None if root is None else os.fspath(root)
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        if self.root is not None:
            self._init_from_root(size)
            return
        if split not in SPLITS:
            raise ConfigError(f"synthetic: split must be one of {list(SPLITS)}, got {split!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"synthetic: seed must be a non-negative int, got {seed!r}")
        self.split = split
        self.seed = int(seed)
        self.size = DEFAULT_SIZE if size is None else size
        self.options: RenderOptions = make_options(image_size, shadows, noise, min_visible_fraction, min_area,
                                                   kinect_holes, scene_weights, sensor=sensor, domain=domain,
                                                   appearance=appearance)
        self.config = {"seed": self.seed, "split": split, "generator_version": GENERATOR_VERSION,
                       **self.options.to_dict()}
        self._cache_folder = None
        if self.cache_dir is not None:
            key = hashlib.sha1(json.dumps(self.config, sort_keys=True).encode()).hexdigest()[:12]
            self._cache_folder = os.path.join(self.cache_dir, f"synthetic-{split}-{key}")

    @classmethod
    def render_once(cls, options: Mapping[str, Any]) -> Optional[RenderOnce]:
        """These options rendered once into a packed folder shared by several
        runs (:mod:`mtlkit.data.render_once`); None for a set read from
        ``root`` or cached in ``cache_dir``."""
        if options.get("root") is not None or options.get("cache_dir") is not None:
            return None
        dataset = cls(**options)
        return writer.render_plan(dataset.seed, dataset.split, dataset.options, len(dataset))

    @classmethod
    def data_seed_option(cls, options: Mapping[str, Any]) -> Optional[str]:
        """``seed`` seeds the rendered world; a set read from ``root`` has its own."""
        return "seed" if options.get("root") is None else None

    def _init_from_root(self, size: Optional[int]) -> None:
        meta = storage.read_dataset_json(self.root)
        self.classes = list(meta["classes"])
        self.scenes = list(meta["scenes"])
        self.config = dict(meta["config"])
        self.split = self.config.get("split", "train")
        self.seed = self.config.get("seed", 0)
        available = int(meta["count"])
        if size is not None and size > available:
            raise ConfigError(f"synthetic: size {size} is larger than the {available} samples in {self.root}")
        self.size = available if size is None else size
        self.options = None
        self._cache_folder = None
        self._pack = storage.Pack(self.root) if storage.Pack.exists(self.root) else None
        if self._pack is not None and self._pack.count < self.size:
            self._pack = None  # a pack of fewer samples than the set: read the samples

    def __len__(self) -> int:
        return self.size

    def arrays(self, index: int) -> Dict[str, np.ndarray]:
        """The raw numpy arrays of sample ``index`` (see :func:`~.generate.generate_sample`)."""
        if not 0 <= index < self.size:
            raise IndexError(f"sample index {index} out of range for a dataset of {self.size}")
        if self.root is not None:
            if self._pack is not None:
                return self._pack.sample(index)
            return storage.load_sample(storage.sample_path(self.root, index))
        if self._cache_folder is None:
            return generate_sample(self.seed, self.split, index, self.options)
        path = os.path.join(self._cache_folder, f"{index:06d}.npz")
        if os.path.exists(path):
            try:
                return storage.load_sample(path)
            except DataError:
                pass  # a damaged cache entry: render it again
        arrays = generate_sample(self.seed, self.split, index, self.options)
        config_path = os.path.join(self._cache_folder, "config.json")
        if not os.path.exists(config_path):
            storage.write_json(config_path, self.config)
        storage.save_sample(path, arrays)
        return arrays

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = int(index)
        if index < 0:
            index += self.size
        return to_sample(self.arrays(index), index)

    def __repr__(self) -> str:
        where = f"root={self.root!r}" if self.root else f"split={self.split!r}, seed={self.seed}"
        return f"SyntheticRooms({where}, size={self.size})"
