"""Checks of what a user passes to the model's public entry points, with one
line naming the argument and what was expected, instead of torch's own
message from deep inside a convolution (or, worse, no message and a wrong
result: 0-255 images taken as [0, 1], NaN images giving 100 boxes).

* :func:`check_images` — ``model(images)`` / ``model.detect(images)``:
  a (B, 3, H, W) floating tensor in [0, 1], finite, on the model's device
  and of its dtype (autocast aside), at least one image;
* :func:`check_boxes` — the detection targets of a batch (``model.losses``):
  one (N_i, 4) xyxy tensor per image with N_i labels, finite, not inverted,
  inside the image;
* :func:`check_class_labels` — class indices in 0..C-1 (the scene);
* :func:`dense_target` — a dense target map (depth, normals, masks) per image.

The multi-task model calls :func:`check_images` first thing in its
``forward`` (:class:`mtlkit.models.compose.MultiTaskModel`, so every way to
build one checks); :func:`install` attaches it to another model as a forward
pre-hook.

Each check costs one reduction over its input and one host sync (the image
values are not checked in a training step on an accelerator).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import torch
from torch import nn

from mtlkit.errors import DataError, MtlkitError


class InputError(MtlkitError, ValueError):
    """A wrong argument of a public entry point of the model (also a ``ValueError``)."""


#: how far outside [0, 1] an image value may be (resampling rounding) before it is refused
RANGE_TOLERANCE = 1e-3
#: how far (pixels) a box may reach past the image border
BORDER_TOLERANCE = 1.0


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"a {type(value).__module__.split('.')[0]}.{type(value).__name__} of shape {tuple(shape)}"
    return f"{type(value).__name__}"


def check_images(images: Any, name: str = "images", like: Optional[torch.Tensor] = None,
                 values: bool = True) -> None:
    """Refuse anything but a (B, 3, H, W) batch of finite RGB floats in [0, 1]
    (B >= 1), with :class:`InputError` naming ``name``. ``like``: a tensor of
    the model (a weight) whose device and dtype the images must have (a dtype
    difference is allowed under autocast). ``values=False`` checks the type,
    shape, dtype and device only: the value checks read one reduction back to
    the host (a sync on an accelerator)."""
    if not isinstance(images, torch.Tensor):
        if isinstance(images, (list, tuple)):
            hint = ("stack them into one (B, 3, H, W) tensor: torch.stack(images) (resize them to one size "
                    "first)")
        elif type(images).__module__.split(".")[0] == "numpy":
            hint = ("convert it: torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255 for (B, H, W, 3) "
                    "uint8 pictures")
        else:
            hint = "pass a (B, 3, H, W) float tensor"
        raise InputError(f"{name}: expected a torch.Tensor (B, 3, H, W) of RGB values in [0, 1], got "
                         f"{_describe(images)}; {hint}")
    shape = tuple(images.shape)
    if images.dim() == 3 and shape[0] == 3:
        raise InputError(f"{name}: expected a batch (B, 3, H, W), got one image {shape}: add the batch "
                         f"dimension, {name}[None]")
    if images.dim() != 4:
        raise InputError(f"{name}: expected a batch of shape (B, 3, H, W), got shape {shape}")
    if shape[1] != 3:
        if shape[-1] in (3, 4) and shape[1] not in (1, 3, 4):
            hint = f"channels last? {name}.permute(0, 3, 1, 2)"
        elif shape[1] == 4:
            hint = f"RGBA? keep the colour channels, {name}[:, :3]"
        elif shape[1] == 1:
            hint = f"grey? repeat the channel, {name}.expand(-1, 3, -1, -1)"
        else:
            hint = "expected RGB"
        raise InputError(f"{name}: expected 3 channels (B, 3, H, W), got shape {shape} ({hint})")
    if shape[0] == 0:
        raise InputError(f"{name}: an empty batch (0 images); pass at least one image")
    if shape[2] < 1 or shape[3] < 1:
        raise InputError(f"{name}: images of size {shape[2]}x{shape[3]} have no pixels")
    if not images.is_floating_point():
        if images.dtype == torch.uint8:
            hint = f"{name}.float() / 255"
        else:
            hint = f"{name}.float() scaled to [0, 1]"
        raise InputError(f"{name}: {images.dtype} values, expected floating-point RGB in [0, 1] "
                         f"(e.g. {hint})")
    if like is not None:
        if images.device != like.device and like.device.type != "meta":
            raise InputError(f"{name}: on {images.device}, the model is on {like.device}: "
                             f"{name}.to({str(like.device)!r})")
        if images.dtype != like.dtype and not torch.is_autocast_enabled(images.device.type):
            raise InputError(f"{name}: {images.dtype} values, the model's weights are {like.dtype}: "
                             f"{name}.to({like.dtype}) (or run under torch.autocast)")
    if not values or images.device.type == "meta" or images.numel() == 0:
        return
    with torch.no_grad():  # one pass: min and max (NaN propagates into both)
        low, high = (float(v) for v in torch.stack(torch.aminmax(images.detach())).tolist())
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = int((~torch.isfinite(images.detach())).sum())
        raise InputError(f"{name}: {bad} value(s) are NaN or inf; expected finite RGB values in [0, 1]")
    if high > 1.0 + RANGE_TOLERANCE:
        hint = f" (0-255 values? divide by 255: {name} / 255)" if high > 2.0 else ""
        raise InputError(f"{name}: values up to {high:.4g}, expected RGB in [0, 1]{hint}")
    if low < -RANGE_TOLERANCE:
        raise InputError(f"{name}: values down to {low:.4g}, expected RGB in [0, 1] (already normalised? "
                         f"the model normalises [0, 1] images with its backbone's mean and std)")


def _model_tensor(model: nn.Module) -> Optional[torch.Tensor]:
    for tensor in model.parameters():
        return tensor
    return None


def _forward_pre_hook(module: nn.Module, args: Tuple[Any, ...], kwargs: dict) -> None:
    images = args[0] if args else kwargs.get("images")
    # a training step on an accelerator is not made to wait for a value check (its images come
    # from the data pipeline); evaluation and detect check them (their post-processing syncs anyway)
    values = not (module.training and isinstance(images, torch.Tensor) and images.device.type != "cpu")
    check_images(images, like=_model_tensor(module), values=values)


def install(model: nn.Module) -> nn.Module:
    """Check ``model(images)``'s images with :func:`check_images` before every
    forward (a forward pre-hook; :meth:`detect` and the trainer go through it
    too). Returns ``model``."""
    if not getattr(model, "_mtlkit_input_checks", False):
        model.register_forward_pre_hook(_forward_pre_hook, with_kwargs=True)
        model._mtlkit_input_checks = True
    return model


def check_batch_size(name: str, values: Any, batch_size: int, what: str = "one per image") -> None:
    """A per-image list of the batch has ``batch_size`` entries."""
    if not isinstance(values, (list, tuple)):
        raise DataError(f"batch[{name!r}]: expected a list of {batch_size} tensors ({what}), got "
                        f"{_describe(values)}")
    if len(values) != batch_size:
        raise DataError(f"batch[{name!r}]: {len(values)} entries for a batch of {batch_size} images "
                        f"(expected {what})")


def check_boxes(boxes: Any, labels: Any, image_size: Tuple[int, int], batch_size: int,
                used: Any = None) -> Tuple[int, int]:
    """Detection targets of a batch: ``boxes[i]`` (N_i, 4) xyxy pixels and
    ``labels[i]`` (N_i,) integers for each of the ``batch_size`` images;
    boxes finite, not inverted (x2 >= x1, y2 >= y1) and inside the (H, W)
    image give or take :data:`BORDER_TOLERANCE` pixels. ``used``: (B,) bool,
    the images whose targets are trained on (default all); the others are
    only checked for their structure. Raises :class:`DataError` naming the
    image and the box.

    Costs one host synchronisation, whatever the batch (the value checks and
    the labels' range are read together); returns (lowest, highest) label of
    the used images, (1, 0) when there is none, for the caller's range check."""
    check_batch_size("boxes", boxes, batch_size, "one (N_i, 4) tensor per image")
    check_batch_size("labels", labels, batch_size, "one (N_i,) tensor per image")
    present = []
    for i, (b, l) in enumerate(zip(boxes, labels)):
        b, l = torch.as_tensor(b), torch.as_tensor(l)
        if b.numel() == 0 and l.numel() == 0:
            continue
        if b.dim() != 2 or b.shape[-1] != 4:
            raise DataError(f"batch['boxes'][{i}]: expected shape (N, 4) xyxy, got {tuple(b.shape)}")
        if l.dim() != 1 or l.shape[0] != b.shape[0]:
            raise DataError(f"batch['labels'][{i}]: expected {b.shape[0]} labels (one per box), got shape "
                            f"{tuple(l.shape)}")
        if l.is_floating_point() or l.dtype == torch.bool or l.is_complex():
            raise DataError(f"batch['labels'][{i}]: expected integer class labels, got {l.dtype}")
        if not (b.is_floating_point() or b.dtype in (torch.int32, torch.int64, torch.int16, torch.uint8)):
            raise DataError(f"batch['boxes'][{i}]: expected numbers, got {b.dtype}")
        present.append((i, b, l))
    if not present:
        return 1, 0
    device = present[0][1].device
    mask = (torch.ones(batch_size, dtype=torch.bool) if used is None
            else torch.as_tensor(used, dtype=torch.bool)).to(device, non_blocking=True)
    flat = torch.cat([b.to(device, torch.float64, non_blocking=True) for _, b, _ in present])
    lab = torch.cat([l.to(device, torch.int64, non_blocking=True) for _, _, l in present])
    use = torch.cat([mask[i].expand(b.shape[0]) for i, b, _ in present])
    finite = torch.isfinite(flat).all(1)
    inverted = (flat[:, 2] < flat[:, 0]) | (flat[:, 3] < flat[:, 1])
    t, height, width = BORDER_TOLERANCE, float(image_size[0]), float(image_size[1])
    outside = (flat[:, 0] < -t) | (flat[:, 1] < -t) | (flat[:, 2] > width + t) | (flat[:, 3] > height + t)
    bad = use & (~finite | inverted | outside)
    big = torch.iinfo(torch.int64).max
    count, lo, hi = torch.stack([bad.sum(), torch.where(use, lab, big).min(),
                                 torch.where(use, lab, -big).max()]).tolist()
    if count:
        _raise_for_box(present, bad, finite, inverted, width, height)
    return (lo, hi) if lo <= hi else (1, 0)


def _raise_for_box(present, bad, finite, inverted, width: float, height: float) -> None:
    """The message for the first bad box (an error path: its syncs do not matter)."""
    k = int(bad.nonzero()[0])
    for i, b, _ in present:
        if k < b.shape[0]:
            break
        k -= b.shape[0]
    start = sum(x.shape[0] for j, x, _ in present if j < i)
    box = [float(v) for v in b[k].double().tolist()]
    where = f"batch['boxes'][{i}][{k}] = {[round(v, 2) for v in box]}"
    if not bool(finite[start + k]):
        raise DataError(f"{where}: coordinates must be finite numbers")
    if bool(inverted[start + k]):
        raise DataError(f"{where}: an inverted box (expected x1 <= x2, y1 <= y2, xyxy pixels)")
    raise DataError(f"{where}: outside the {int(width)}x{int(height)} image (xyxy pixels of batch['image'])")


def check_class_labels(name: str, labels: Any, num_classes: int, batch_size: int,
                       used: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B,) integer class indices in 0..num_classes-1 (where ``used``);
    returns them as int64. Raises :class:`DataError` naming ``name``."""
    target = torch.as_tensor(labels)
    if target.is_floating_point():
        if bool(torch.isfinite(target).all()) and bool((target == target.round()).all()):
            target = target.long()
        else:
            raise DataError(f"batch[{name!r}]: expected integer class indices, got {target.dtype} values")
    if target.dtype == torch.bool:
        raise DataError(f"batch[{name!r}]: expected integer class indices, got bool values")
    target = target.long().reshape(-1)
    if target.numel() != batch_size:
        raise DataError(f"batch[{name!r}]: {target.numel()} labels for a batch of {batch_size} images")
    checked = target if used is None else target[used.to(target.device)]
    if checked.numel():
        lo, hi = (int(v) for v in torch.stack([checked.min(), checked.max()]).tolist())
        if lo < 0 or hi >= num_classes:
            raise DataError(f"batch[{name!r}]: class indices must be in 0..{num_classes - 1}, got values from "
                            f"{lo} to {hi}: does the task's num_classes fit the data?")
    return target


def dense_target(batch: Any, key: str, batch_size: int, channels: int, device: Any = None) -> torch.Tensor:
    """``batch[key]`` as a float (B, channels, H, W) tensor on ``device``
    (a (B, H, W) map gets its channel axis); :class:`DataError` naming the
    key for any other shape (a map per image of the batch is needed)."""
    value = torch.as_tensor(batch[key], device=device)
    if value.dim() == 3 and channels == 1:
        value = value[:, None]
    if value.dim() != 4 or value.shape[0] != batch_size or value.shape[1] != channels:
        raise DataError(f"batch[{key!r}]: expected a ({batch_size}, {channels}, H, W) tensor (one map per image), "
                        f"got shape {tuple(value.shape)}")
    return value


__all__ = ["InputError", "check_images", "install", "check_boxes", "check_class_labels", "check_batch_size",
           "dense_target"]
