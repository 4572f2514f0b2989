"""Data augmentation that keeps every modality of a sample consistent.

Every transform is a callable ``t(sample, rng) -> sample`` taking a sample
dict (see :mod:`mtlkit.data.collate`) and a ``numpy.random.Generator`` that
drives all its random choices, so a transform is deterministic given the
generator's state (:class:`mtlkit.data.dataset.TransformedDataset` seeds one
per (seed, epoch, index)).

*Spatial maps* are the tensors of a sample of shape (C, H, W) with the
image's (H, W): ``image``, ``depth``, ``depth_mask``, ``normals``,
``normals_mask``, a sensor's ``sensor_*`` maps and any map a plugin task
adds. They are moved together:

* ``image`` is interpolated bilinearly and filled with the mean colour;
* unit-vector fields (the keys a task declares ``"vector"`` in its
  ``map_kinds``, e.g. ``normals``) are flipped with their x component
  negated, resized with nearest neighbour and renormalised, filled with 0;
* boolean maps (validity masks) use nearest neighbour and are filled with
  ``False``;
* every other map (``depth``, ...) uses nearest neighbour (no blending across
  depth edges) and is filled with 0.

Boxes are (N, 4) float xyxy in pixels (continuous coordinates: a box around
pixel columns 3..5 is x1=3, x2=6).
"""

from __future__ import annotations

import math
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mtlkit.backbone import IMAGENET_MEAN  # the default fill of RandomExpand
from mtlkit.errors import ConfigError
from mtlkit.registry import get_registry
from mtlkit.schema import AUGMENT, AUGMENT_DEFAULTS  # noqa: F401 - AUGMENT_DEFAULTS also imported from here
from mtlkit.task import SENSOR_PREFIX

Sample = Dict[str, Any]


# -- helpers ------------------------------------------------------------------
def spatial_keys(sample: Sample) -> List[str]:
    """Keys of the (C, H, W) tensors sharing the image's (H, W)."""
    image = sample["image"]
    size = tuple(image.shape[-2:])
    return [
        key for key, value in sample.items()
        if isinstance(value, torch.Tensor) and value.dim() == 3 and tuple(value.shape[-2:]) == size
    ]


def vector_keys() -> FrozenSet[str]:
    """Batch keys of unit-vector fields (x negated by a flip, renormalised
    after a resize), as the registered tasks declare them
    (:attr:`mtlkit.task.Task.map_kinds`, e.g. ``{"normals": "vector"}``),
    and the same keys of a sensor's measurement (``sensor_normals``,
    :data:`mtlkit.task.SENSOR_PREFIX`)."""
    registry = get_registry()
    cached = _VECTOR_KEYS.get(id(registry))
    if cached is None:
        keys = set()
        for name in registry.names("task"):
            kinds = getattr(registry.get("task", name), "map_kinds", None) or {}
            keys.update(k for k, kind in kinds.items() if kind == "vector")
        keys.update([SENSOR_PREFIX + k for k in keys])
        cached = _VECTOR_KEYS[id(registry)] = frozenset(keys)
    return cached


_VECTOR_KEYS: Dict[int, FrozenSet[str]] = {}


def _copy(sample: Sample) -> Sample:
    out = dict(sample)
    if "has" in out:
        out["has"] = dict(out["has"])
    if "meta" in out:
        out["meta"] = dict(out["meta"])
    return out


def _renormalise(normals: torch.Tensor) -> torch.Tensor:
    # (not Tensor.norm(dim=0): a strided reduction several times slower here)
    norm = (normals * normals).sum(dim=0, keepdim=True).sqrt()
    return torch.where(norm > 1e-6, normals / norm.clamp(min=1e-6), torch.zeros_like(normals))


class Compose:
    """Apply transforms in order, each with the same generator."""

    def __init__(self, transforms: Sequence[Any]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


# -- photometric --------------------------------------------------------------
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _gray(image: torch.Tensor) -> torch.Tensor:
    return (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).unsqueeze(0)


class PhotometricJitter:
    """SSD-style colour distortion of ``image`` only (other modalities untouched).

    Each step happens with probability ``p``, in the order brightness,
    contrast, saturation, hue, or brightness, saturation, hue, contrast (the
    order drawn once per sample):

    * brightness: add a delta uniform in [-brightness, brightness];
    * contrast: blend with the mean grey level, factor in [1-contrast, 1+contrast];
    * saturation: blend with the grey image, factor in [1-saturation, 1+saturation];
    * hue: rotate the chroma (YIQ space) by an angle in [-hue, hue] turns.

    The result is clamped to [0, 1].
    """

    def __init__(self, brightness: float = 0.125, contrast: float = 0.5, saturation: float = 0.5,
                 hue: float = 0.05, p: float = 0.5):
        self.brightness, self.contrast, self.saturation, self.hue, self.p = (
            brightness, contrast, saturation, hue, p)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image = sample["image"].float()
        contrast_first = rng.random() < 0.5
        if self.brightness > 0 and rng.random() < self.p:
            image = image + float(rng.uniform(-self.brightness, self.brightness))
        if contrast_first:
            image = self._contrast(image, rng)
        if self.saturation > 0 and rng.random() < self.p:
            factor = float(rng.uniform(1 - self.saturation, 1 + self.saturation))
            image = factor * image + (1 - factor) * _gray(image)
        if self.hue > 0 and rng.random() < self.p:
            angle = float(rng.uniform(-self.hue, self.hue)) * 2 * math.pi
            c, s = math.cos(angle), math.sin(angle)
            rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
            matrix = _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ
            image = (matrix.to(image.dtype) @ image.reshape(3, -1)).reshape(image.shape)
        if not contrast_first:
            image = self._contrast(image, rng)
        out = _copy(sample)
        out["image"] = image.clamp(0.0, 1.0)
        return out

    def _contrast(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.contrast > 0 and rng.random() < self.p:
            factor = float(rng.uniform(1 - self.contrast, 1 + self.contrast))
            image = factor * image + (1 - factor) * _gray(image).mean()
        return image

    def __repr__(self) -> str:
        return (f"PhotometricJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue}, p={self.p})")


# -- geometric ----------------------------------------------------------------
class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``: every spatial map is flipped,
    normals' x component is negated, boxes become (W - x2, y1, W - x1, y2)."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not rng.random() < self.p:
            return sample
        return hflip(sample)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def hflip(sample: Sample) -> Sample:
    """The deterministic left-right mirror used by :class:`RandomHorizontalFlip`."""
    out = _copy(sample)
    width = sample["image"].shape[-1]
    vectors = vector_keys()
    for key in spatial_keys(sample):
        value = sample[key].flip(-1)
        if key in vectors:
            value = value.clone()
            value[0] = -value[0]
        out[key] = value
    if "boxes" in sample and len(sample["boxes"]):
        boxes = sample["boxes"]
        out["boxes"] = torch.stack(
            [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    return out


def crop(sample: Sample, left: int, top: int, right: int, bottom: int,
         keep: Optional[torch.Tensor] = None) -> Sample:
    """Cut the window [left, right) x [top, bottom) out of every spatial map.

    Boxes are shifted and clipped to the window; ``keep`` (N,) bool selects
    which boxes survive (default: those whose centre lies inside the window).
    """
    out = _copy(sample)
    for key in spatial_keys(sample):
        out[key] = sample[key][:, top:bottom, left:right]
    if "boxes" in sample:
        _crop_boxes(out, sample, sample["boxes"], left, top, right, bottom, keep)
    return out


def _crop_boxes(out: Sample, sample: Sample, boxes: torch.Tensor, left: float, top: float,
                right: float, bottom: float, keep: Optional[torch.Tensor]) -> None:
    """Into ``out``: ``boxes`` (N, 4), in the coordinates of the window's frame,
    shifted to the window [left, right) x [top, bottom) and clipped to it; the
    boxes kept (``keep``, default: centre inside) and their labels."""
    if keep is None:
        keep = centres_inside(boxes, left, top, right, bottom)
    shifted = boxes[keep] - torch.tensor([left, top, left, top], dtype=boxes.dtype)
    shifted[:, 0::2] = shifted[:, 0::2].clamp(0, right - left)
    shifted[:, 1::2] = shifted[:, 1::2].clamp(0, bottom - top)
    out["boxes"] = shifted
    if "labels" in sample:
        out["labels"] = sample["labels"][keep]


def centres_inside(boxes: torch.Tensor, left: float, top: float, right: float, bottom: float) -> torch.Tensor:
    """(N,) bool: box centre strictly inside the window (so a clipped box keeps a positive size)."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    return (cx > left) & (cx < right) & (cy > top) & (cy < bottom)


class RandomSSDCrop:
    """SSD's random crop (Liu et al. 2016).

    Draw a mode from ``min_ious``: ``None`` keeps the whole image; a number t
    asks for a window (side lengths uniform in [min_scale, 1] of the image's,
    aspect ratio h/w in ``aspect_range``) that overlaps at least one
    ground-truth box with IoU ≥ t, tried up to ``trials`` times (then a new
    mode is drawn; after ``max_modes`` draws the sample is left as it is).
    Boxes whose centre falls inside the window are kept and clipped; a window
    that would keep no box is rejected. A sample without boxes accepts the
    first window of valid shape.
    """

    def __init__(self, min_ious: Sequence[Optional[float]] = (None, 0.1, 0.3, 0.5, 0.7, 0.9),
                 min_scale: float = 0.3, aspect_range: Sequence[float] = (0.5, 2.0),
                 trials: int = 50, max_modes: int = 20):
        self.min_ious = list(min_ious)
        self.min_scale = min_scale
        self.aspect_range = tuple(aspect_range)
        self.trials = trials
        self.max_modes = max_modes

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = sample["image"].shape[-2:]
        window = self.sample_window(height, width, sample.get("boxes"), rng)
        if window is None:
            return sample
        return crop(sample, *window)

    def sample_window(self, height: int, width: int, boxes: Optional[torch.Tensor],
                      rng: np.random.Generator):
        """Draw the window for an image of (height, width) with ``boxes``:
        ``(left, top, right, bottom, keep)`` (keep: (N,) bool or None) or
        ``None`` to keep the whole image."""
        has_boxes = boxes is not None and len(boxes) > 0
        b = boxes.double().numpy() if has_boxes else None
        for _ in range(self.max_modes):
            mode = self.min_ious[int(rng.integers(len(self.min_ious)))]
            if mode is None:
                return None
            # All trials of this mode drawn at once; the first acceptable one wins.
            n = self.trials
            w = rng.uniform(self.min_scale * width, width, size=n)
            h = rng.uniform(self.min_scale * height, height, size=n)
            left = np.floor(rng.uniform(0, 1, size=n) * (width - w))
            top = np.floor(rng.uniform(0, 1, size=n) * (height - h))
            right = left + np.maximum(np.floor(w), 1)
            bottom = top + np.maximum(np.floor(h), 1)
            ok = (h / w >= self.aspect_range[0]) & (h / w <= self.aspect_range[1])
            inside = None
            if has_boxes:
                ix = np.clip(np.minimum(right[:, None], b[None, :, 2]) - np.maximum(left[:, None], b[None, :, 0]), 0, None)
                iy = np.clip(np.minimum(bottom[:, None], b[None, :, 3]) - np.maximum(top[:, None], b[None, :, 1]), 0, None)
                inter = ix * iy
                area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
                union = (right - left)[:, None] * (bottom - top)[:, None] + area_b[None, :] - inter
                iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
                cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
                inside = ((cx[None] > left[:, None]) & (cx[None] < right[:, None])
                          & (cy[None] > top[:, None]) & (cy[None] < bottom[:, None]))
                ok &= (iou.max(axis=1) >= mode) & inside.any(axis=1)
            hits = np.flatnonzero(ok)
            if hits.size == 0:
                continue
            k = int(hits[0])
            keep = torch.from_numpy(inside[k]) if inside is not None else None
            return int(left[k]), int(top[k]), int(right[k]), int(bottom[k]), keep
        return None

    def __repr__(self) -> str:
        return (f"RandomSSDCrop(min_ious={self.min_ious}, min_scale={self.min_scale}, "
                f"aspect_range={self.aspect_range}, trials={self.trials})")


class RandomExpand:
    """Zoom out with probability ``p``: place the sample on a canvas
    ``ratio`` (uniform in [1, max_ratio]) times larger at a random offset.

    The image's new area is filled with ``fill`` (mean colour in [0, 1]); depth,
    normals and other maps with 0 and their masks with ``False`` (invalid).
    """

    def __init__(self, max_ratio: float = 4.0, p: float = 0.5, fill: Sequence[float] = IMAGENET_MEAN):
        self.max_ratio = max_ratio
        self.p = p
        self.fill = tuple(float(v) for v in fill)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = sample["image"].shape[-2:]
        params = self.sample_params(height, width, rng)
        if params is None:
            return sample
        return expand(sample, *params, self.fill)

    def sample_params(self, height: int, width: int, rng: np.random.Generator):
        """``(new_h, new_w, top, left)`` of the canvas, or ``None`` (no zoom-out)."""
        if self.max_ratio <= 1 or not rng.random() < self.p:
            return None
        ratio = rng.uniform(1, self.max_ratio)
        new_h, new_w = int(height * ratio), int(width * ratio)
        top = int(rng.uniform(0, new_h - height))
        left = int(rng.uniform(0, new_w - width))
        return new_h, new_w, top, left

    def __repr__(self) -> str:
        return f"RandomExpand(max_ratio={self.max_ratio}, p={self.p}, fill={self.fill})"


def expand(sample: Sample, new_h: int, new_w: int, top: int, left: int,
           fill: Sequence[float] = IMAGENET_MEAN) -> Sample:
    """Place the sample at (top, left) of a (new_h, new_w) canvas (see :class:`RandomExpand`)."""
    out = _copy(sample)
    height, width = sample["image"].shape[-2:]
    for key in spatial_keys(sample):
        value = sample[key]
        canvas = value.new_zeros((value.shape[0], new_h, new_w))
        if key == "image":
            canvas[:] = torch.tensor(fill, dtype=value.dtype).view(-1, 1, 1)
        canvas[:, top:top + height, left:left + width] = value
        out[key] = canvas
    if "boxes" in sample:
        out["boxes"] = sample["boxes"] + torch.tensor([left, top, left, top], dtype=sample["boxes"].dtype)
    return out


class RandomExpandCrop:
    """:class:`RandomExpand` then :class:`RandomSSDCrop`, without building the
    whole zoomed-out canvas: the crop window is chosen in canvas coordinates
    and only the window is materialised. Same random draws and the same
    result as applying the two in sequence (which may build a canvas 4x the
    image's side for every map)."""

    def __init__(self, expand: RandomExpand, crop: RandomSSDCrop):
        self.expand = expand
        self.crop = crop

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = sample["image"].shape[-2:]
        params = self.expand.sample_params(height, width, rng)
        if params is None:
            return self.crop(sample, rng)
        new_h, new_w, top, left = params
        boxes = sample.get("boxes")
        shift = None
        if boxes is not None:
            shift = torch.tensor([left, top, left, top], dtype=boxes.dtype)
        window = self.crop.sample_window(new_h, new_w, None if boxes is None else boxes + shift, rng)
        if window is None:
            return expand(sample, new_h, new_w, top, left, self.expand.fill)
        return expand_crop(sample, top, left, window, self.expand.fill)

    def __repr__(self) -> str:
        return f"RandomExpandCrop({self.expand!r}, {self.crop!r})"


def expand_crop(sample: Sample, top: int, left: int, window, fill: Sequence[float] = IMAGENET_MEAN) -> Sample:
    """``crop(expand(sample, ..., top, left), *window)`` building only the window.

    :param window: (win_left, win_top, win_right, win_bottom, keep) in canvas coordinates.
    """
    win_l, win_t, win_r, win_b, keep = window
    out = _copy(sample)
    height, width = sample["image"].shape[-2:]
    # overlap of the placed image [left, left+W) x [top, top+H) with the window
    x1, x2 = max(win_l, left), min(win_r, left + width)
    y1, y2 = max(win_t, top), min(win_b, top + height)
    for key in spatial_keys(sample):
        value = sample[key]
        canvas = value.new_zeros((value.shape[0], win_b - win_t, win_r - win_l))
        if key == "image":
            canvas[:] = torch.tensor(fill, dtype=value.dtype).view(-1, 1, 1)
        if x2 > x1 and y2 > y1:
            canvas[:, y1 - win_t:y2 - win_t, x1 - win_l:x2 - win_l] = \
                value[:, y1 - top:y2 - top, x1 - left:x2 - left]
        out[key] = canvas
    if "boxes" in sample:
        canvas_boxes = sample["boxes"] + torch.tensor([left, top, left, top], dtype=sample["boxes"].dtype)
        _crop_boxes(out, sample, canvas_boxes, win_l, win_t, win_r, win_b, keep)
    return out


class Resize:
    """Resize every spatial map to ``size`` (H, W) and scale the boxes.

    The image is interpolated bilinearly (antialiased when shrinking); depth,
    masks and other maps take the nearest source pixel (``nearest-exact``,
    so a mask and its map always pick the same pixel); normals too, then
    renormalised.
    """

    def __init__(self, size: Sequence[int]):
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        height, width = sample["image"].shape[-2:]
        if (height, width) == self.size:
            return sample
        out = _copy(sample)
        vectors = vector_keys()
        for key in spatial_keys(sample):
            value = sample[key]
            if key == "image":
                resized = F.interpolate(value[None].float(), size=self.size, mode="bilinear",
                                        align_corners=False, antialias=True)[0].clamp(0, 1)
            else:
                src = value[None]
                as_float = src.float() if src.dtype in (torch.bool, torch.uint8) else src
                resized = F.interpolate(as_float, size=self.size, mode="nearest-exact")[0]
                if value.dtype == torch.bool:
                    resized = resized > 0.5
                else:
                    resized = resized.to(value.dtype)
                if key in vectors:
                    resized = _renormalise(resized)
            out[key] = resized
        if "boxes" in sample:
            sx, sy = self.size[1] / width, self.size[0] / height
            boxes = sample["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=sample["boxes"].dtype)
            # float rounding must not push a box edge past the image (e.g. 30.000002 of 30)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, self.size[1])
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, self.size[0])
            out["boxes"] = boxes
        return out

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


# -- configuration ------------------------------------------------------------
def build_transforms(augment_cfg: Optional[Mapping[str, Any]], image_size: Optional[Sequence[int]],
                     train: bool) -> Compose:
    """The transform pipeline for training or evaluation.

    Training (``train=True`` and ``augment.enabled``): photometric jitter ->
    random expand -> SSD random crop -> resize -> horizontal flip. Evaluation:
    resize only. ``image_size`` (H, W) or ``None`` (keep each sample's size).

    ``augment_cfg`` options (``data.augment``; their defaults:
    :data:`mtlkit.schema.AUGMENT_DEFAULTS`):

    * ``enabled`` (bool): augment at all when training.
    * ``photometric`` (float): probability of each colour step (0 disables);
      ``brightness`` (additive delta), ``contrast``, ``saturation`` (factor
      ranges 1±v), ``hue`` (rotation in turns).
    * ``expand`` (float): probability of the zoom-out; ``expand_max_ratio``;
      ``fill`` (RGB in [0, 1] of the new area).
    * ``crop`` (bool): SSD random crop; ``crop_min_ious`` (modes, ``null``
      keeps the image), ``crop_min_scale``, ``crop_aspect_range`` (h/w),
      ``crop_trials``.
    * ``flip`` (float): probability of the horizontal flip.

    ``augment_cfg`` from the resolved config (:class:`mtlkit.options.Options`)
    is taken as it is; a plain dict is checked once, by the config's rule.

    :raises ConfigError: on an unknown option or a wrongly typed value.
    """
    opts = AUGMENT.options(augment_cfg, "data.augment")
    transforms: List[Any] = []
    if train and opts["enabled"]:
        if opts["photometric"] > 0:
            transforms.append(PhotometricJitter(opts["brightness"], opts["contrast"],
                                                opts["saturation"], opts["hue"], opts["photometric"]))
        expander = cropper = None
        if opts["expand"] > 0 and opts["expand_max_ratio"] > 1:
            expander = RandomExpand(opts["expand_max_ratio"], opts["expand"], opts["fill"])
        if opts["crop"]:
            cropper = RandomSSDCrop(opts["crop_min_ious"], opts["crop_min_scale"],
                                    opts["crop_aspect_range"], opts["crop_trials"])
        if expander is not None and cropper is not None:
            transforms.append(RandomExpandCrop(expander, cropper))
        else:
            transforms.extend(t for t in (expander, cropper) if t is not None)
    if image_size is not None:
        if len(image_size) != 2:
            raise ConfigError(f"data.image_size must be [H, W], got {image_size!r}")
        transforms.append(Resize(image_size))
    if train and opts["enabled"] and opts["flip"] > 0:
        # after the resize: mirroring commutes with it and is cheaper on the small image
        transforms.append(RandomHorizontalFlip(opts["flip"]))
    return Compose(transforms)
