"""Reading image files: one header probe before anything is written, then the
pixels, upright.

* :func:`probe_image` reads a file's header only (cheap: a COCO set probes
  every image when it is built): the size as displayed (EXIF orientation
  applied), and a clear :class:`~mtlkit.errors.DataError` for what can be
  told without decoding — a path that is a folder, a pipe or a device, a file
  that is not an image, a PNG or JPEG cut short (its end marker missing), an
  image larger than :func:`max_pixels` (a decompression bomb, or a photo
  that would need gigabytes as float tensors).
* :func:`read_rgb` decodes an image to (H, W, 3) uint8, turned upright by its
  EXIF orientation (a phone photo stored sideways), with the same errors.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mtlkit.errors import DataError
from mtlkit.utils.paths import not_a_file

#: EXIF tag 0x0112: 1 = upright; 5..8 swap width and height
ORIENTATION_TAG = 0x0112
#: images with more pixels than this are refused when ``MTLKIT_MAX_IMAGE_PIXELS`` is not set:
#: 64 megapixels (8000 x 8000); as float32 RGB one such image is already 768 MB
DEFAULT_MAX_PIXELS = 64_000_000


def max_pixels() -> int:
    """The largest image mtlkit reads, in pixels: ``MTLKIT_MAX_IMAGE_PIXELS``
    when set (a positive integer), else :data:`DEFAULT_MAX_PIXELS`."""
    value = os.environ.get("MTLKIT_MAX_IMAGE_PIXELS", "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise DataError(f"MTLKIT_MAX_IMAGE_PIXELS={value!r}: expected a positive number of pixels")
    return limit


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an image file says."""

    path: str
    width: int  # as displayed: after the EXIF orientation
    height: int
    format: str
    orientation: int  # EXIF orientation, 1 when absent

    @property
    def stored_size(self) -> Tuple[int, int]:
        """(height, width) of the pixels as stored (before the EXIF orientation)."""
        return (self.width, self.height) if self.orientation in (5, 6, 7, 8) else (self.height, self.width)


def _too_large(path: str, width: int, height: int) -> DataError:
    limit = max_pixels()
    return DataError(f"{path}: the image is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), "
                     f"more than mtlkit reads ({limit / 1e6:.0f} megapixels): a decompression bomb, or a "
                     f"picture to downscale (MTLKIT_MAX_IMAGE_PIXELS sets the limit)")


def _check_complete(path: str, fmt: str) -> None:
    """A PNG must end with its IEND chunk, a JPEG with its EOI marker: a file
    cut short (an interrupted copy) is found here, without decoding it."""
    tails = {"PNG": b"IEND\xaeB`\x82", "JPEG": b"\xff\xd9"}
    tail = tails.get(fmt)
    if tail is None:
        return
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64))
        end = handle.read()
    # a JPEG may carry a few bytes of padding after its EOI marker
    if tail not in (end if fmt == "JPEG" else end[-len(tail):]):
        raise DataError(f"{path}: the {fmt} file is truncated (it ends before its end marker: "
                        f"an interrupted copy or download?)")


_PIL_LIMIT_LOCK = threading.Lock()


def _open(path: str):
    """``PIL.Image.open`` with mtlkit's errors (the file is checked to be a regular file first)."""
    reason = not_a_file(path, "an image file")
    if reason is not None:
        raise DataError(reason)
    try:
        # mtlkit's own limit (max_pixels) applies, to the size the header gives: PIL's check at
        # open would refuse a bomb without saying its size
        with _PIL_LIMIT_LOCK:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                return Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file PIL can read") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read the image ({exc})") from None


def _orientation(img) -> int:
    try:
        value = int(img.getexif().get(ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is no orientation
        return 1
    return value if 1 <= value <= 8 else 1


def probe_image(path: str) -> ImageInfo:
    """The header of the image at ``path`` (see the module docstring); raises
    :class:`DataError` naming the file."""
    path = os.fspath(path)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = _open(path)
    with img:
        width, height = (int(v) for v in img.size)
        fmt = str(img.format or "")
        orientation = _orientation(img)
    if width < 1 or height < 1:
        raise DataError(f"{path}: the image has no pixels ({width}x{height})")
    if width * height > max_pixels():
        raise _too_large(path, width, height)
    _check_complete(path, fmt)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return ImageInfo(path, width, height, fmt, orientation)


def open_checked(path: str, upright: bool = True):
    """A decoded ``PIL.Image`` (loaded, file closed), upright by its EXIF
    orientation unless ``upright`` is False, for callers that need the mode
    (16-bit grey, float); raises :class:`DataError` naming the file (not a
    regular file, not an image, larger than :func:`max_pixels`, undecodable)."""
    path = os.fspath(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = _open(path)
    with img:
        width, height = img.size
        if width * height > max_pixels():
            raise _too_large(path, width, height)
        try:
            img.load()
            out = (ImageOps.exif_transpose(img) or img) if upright else img
            return out.copy() if out is img else out
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{path}: cannot read the image ({exc})") from None


def read_rgb(path: str, upright: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of the image at ``path``, turned by its EXIF
    orientation unless ``upright`` is False; the checks of :func:`open_checked`."""
    return np.asarray(open_checked(path, upright=upright).convert("RGB"), dtype=np.uint8)


def size_of(info: ImageInfo, expected: Optional[Tuple[int, int]]) -> Tuple[Tuple[int, int], bool]:
    """Which frame a COCO record's (height, width) refers to: returns
    ((height, width), upright). The displayed (upright) frame unless the JSON
    gives the stored size of a rotated image, in which case its boxes were
    drawn on the stored pixels and the EXIF orientation is not applied."""
    upright = (info.height, info.width)
    if expected is None or tuple(expected) == upright or info.orientation in (1, 2, 3, 4):
        return upright, True
    if tuple(expected) == info.stored_size:
        return info.stored_size, False
    return upright, True
