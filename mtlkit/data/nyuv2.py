"""NYU Depth v2 (labeled subset): preparation of a compact cache and the dataset.

Inputs (the official files, never shipped with mtlkit):

* ``nyu_depth_v2_labeled.mat`` — MATLAB v7.3, i.e. HDF5, read with h5py.
  MATLAB stores arrays transposed, so h5py shows ``images`` as
  (N, 3, W, H) uint8, ``depths`` (N, W, H) float32 metres, ``labels``
  (N, W, H) (label k is class ``names[k-1]``, 0 unlabelled) and
  ``instances`` (N, W, H); ``names`` (894 classes), ``sceneTypes`` and
  ``scenes`` (one per image) are HDF5 object references to uint16
  character arrays.
* ``splits.mat`` — MATLAB v5 (scipy.io.loadmat): ``trainNdxs`` (795) and
  ``testNdxs`` (654), 1-based indices into the labeled set.
* optional Eigen normals folder ``DIR`` with ``DIR/normals/<k>.png`` and
  ``DIR/masks/<k>.png``: ``<k>`` the image's index in the .mat (1-based by
  default, any zero padding: ``1.png``, ``0001.png``, ``000001.png``), the
  normal PNG RGB-coded ``n = rgb / 127.5 - 1`` in the camera frame (x right,
  y down, z forward), the mask nonzero where valid (optional: without a mask
  file, pixels whose decoded length is not ≈1 are invalid). Without the
  folder, normals are computed from depth
  (:func:`mtlkit.data.geometry.normals_from_depth`, NYU intrinsics).
* optional ``--val-scenes FILE``: scene names (``scenes`` entries, e.g.
  ``kitchen_0004``), one per line, ``#`` comments; the training images of
  those scenes form the ``val`` split and leave ``train``.

Cache (one HDF5 file per split, ``<out>/nyuv2_<split>.h5``):

=================  ===================  =======================================
dataset            shape / dtype        content
=================  ===================  =======================================
``images``         (n, H, W, 3) uint8   RGB
``depth``          (n, H, W) uint16     millimetres, 0 = invalid
``normals``        (n, H, W, 3) int8    round(127 n), 0 = invalid
``normals_mask``   (n, H, W) bool       valid normals
``boxes``          (M, 4) float32       xyxy pixels (x2 = last column + 1)
``labels``         (M,) int64           1..19 (index in ``classes`` + 1)
``box_offsets``    (n + 1,) int64       boxes of image i: [off[i], off[i+1])
``scene``          (n,) int64           index in ``scenes``
``index``          (n,) int64           1-based index in the .mat
=================  ===================  =======================================

Attributes: ``classes`` and ``scenes`` (JSON lists), ``split``,
``normals_source`` (``eigen`` or ``depth``), ``complete``. A split is written
to ``.nyuv2_<split>.h5.partial`` and renamed when complete; an interrupted
run resumes from the last flushed image when its inputs are the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import h5py
import numpy as np
import scipy.io
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from mtlkit.data.geometry import decode_normals, encode_normals, normals_from_depth, normals_from_rgb, nyu_intrinsics
from mtlkit.errors import DataError
from mtlkit.utils.paths import not_a_file

#: the 19 object classes of the ROCK / Gupta et al. NYUv2 detection benchmark
NYU_CLASSES = (
    "bathtub", "bed", "bookshelf", "box", "chair", "counter", "desk", "door", "dresser",
    "garbage bin", "lamp", "monitor", "night stand", "pillow", "sink", "sofa", "table",
    "television", "toilet",
)
MAT_KEYS = ("images", "depths", "labels", "instances", "names", "sceneTypes", "scenes")
CACHE_VERSION = 1
FLUSH_EVERY = 16


def cache_path(root: str, split: str) -> str:
    return os.path.join(root, f"nyuv2_{split}.h5")


# -- reading the official files -----------------------------------------------
def _require_file(path: str, expected: str) -> None:
    """A regular file, or one line saying what ``path`` is (a folder, a pipe
    that would block, /dev/null) or that it does not exist."""
    reason = not_a_file(path, expected)
    if reason is not None:
        raise DataError(reason)


def open_mat(path: str):
    """Open the labeled .mat with h5py; DataError if missing, truncated or not HDF5."""
    _require_file(path, "nyu_depth_v2_labeled.mat")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(
            f"{path}: cannot be read as a MATLAB v7.3 (HDF5) file — truncated or another format? ({exc})"
        ) from None


def read_mat_strings(f, key: str, path: str) -> List[str]:
    """A MATLAB cell array of strings (object references to uint16 char arrays)."""
    try:
        refs = np.asarray(f[key][()]).reshape(-1)
        out = []
        for ref in refs:
            obj = f[ref]
            if obj.attrs.get("MATLAB_empty", 0):
                out.append("")
                continue
            chars = np.asarray(obj[()]).reshape(-1)
            out.append("".join(chr(int(c)) for c in chars))
        return out
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DataError(
            f"{path}: '{key}' must be a cell array of strings (HDF5 object references to uint16 "
            f"character arrays): {exc}"
        ) from None


def read_splits(path: str, num_images: int) -> Tuple[np.ndarray, np.ndarray]:
    """``trainNdxs`` / ``testNdxs`` of splits.mat as 1-based int64 arrays, validated."""
    _require_file(path, "splits.mat with trainNdxs and testNdxs")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for a bad file
        raise DataError(f"{path}: cannot be read as a MATLAB v5 file ({exc})") from None
    out = []
    for key in ("trainNdxs", "testNdxs"):
        if key not in mat:
            raise DataError(f"{path}: missing key '{key}' (expected trainNdxs and testNdxs)")
        idx = np.asarray(mat[key]).reshape(-1)
        if idx.size == 0 or not np.issubdtype(idx.dtype, np.number) or np.any(idx != np.round(idx)):
            raise DataError(f"{path}: '{key}' must be a non-empty list of integer indices")
        idx = idx.astype(np.int64)
        bad = idx[(idx < 1) | (idx > num_images)]
        if bad.size:
            raise DataError(
                f"{path}: '{key}' has index {int(bad[0])} out of range 1..{num_images} "
                "(indices are 1-based into the labeled .mat)"
            )
        if len(np.unique(idx)) != len(idx):
            raise DataError(f"{path}: '{key}' lists an index twice")
        out.append(idx)
    common = np.intersect1d(out[0], out[1])
    if common.size:
        raise DataError(f"{path}: index {int(common[0])} is in both trainNdxs and testNdxs")
    return out[0], out[1]


def read_scene_list(path: str) -> List[str]:
    _require_file(path, "a list of scene names, one per line")
    with open(path, encoding="utf-8") as handle:
        names = [line.split("#", 1)[0].strip() for line in handle]
    names = [n for n in names if n]
    if not names:
        raise DataError(f"{path}: lists no scene")
    return names


class MatSource:
    """Validated access to the labeled .mat: per-image arrays in (H, W) layout."""

    def __init__(self, path: str):
        self.path = path
        self.f = open_mat(path)
        for key in MAT_KEYS:
            if key not in self.f:
                raise DataError(f"{path}: missing key '{key}' (expected {', '.join(MAT_KEYS)})")
        images = self.f["images"]
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"{path}: 'images' must have shape (N, 3, W, H) as stored by MATLAB, "
                            f"got {images.shape}")
        self.num, _, self.width, self.height = (int(v) for v in images.shape)
        for key in ("depths", "labels", "instances"):
            shape = tuple(self.f[key].shape)
            if shape != (self.num, self.width, self.height):
                raise DataError(f"{path}: '{key}' must have shape {(self.num, self.width, self.height)} "
                                f"like 'images', got {shape}")
        self.names = read_mat_strings(self.f, "names", path)
        self.scene_types = read_mat_strings(self.f, "sceneTypes", path)
        self.scenes = read_mat_strings(self.f, "scenes", path)
        for key, values in (("sceneTypes", self.scene_types), ("scenes", self.scenes)):
            if len(values) != self.num:
                raise DataError(f"{path}: '{key}' has {len(values)} entries, expected one per image ({self.num})")
        self.class_values = []
        for name in NYU_CLASSES:
            if name not in self.names:
                raise DataError(f"{path}: class '{name}' not found in 'names'")
            self.class_values.append(self.names.index(name) + 1)

    def _read(self, key: str, i: int) -> np.ndarray:
        try:
            return np.asarray(self.f[key][i])
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read '{key}' of image {i + 1} — truncated file? ({exc})") from None

    def image(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 of 0-based image i. Float images in [0, 1] are
        scaled by 255, other values must lie in 0..255 (anything else is refused)."""
        raw = np.ascontiguousarray(self._read("images", i).transpose(2, 1, 0))
        if raw.dtype == np.uint8:
            return raw
        if raw.dtype.kind not in "fiub":
            raise DataError(f"{self.path}: 'images' of dtype {raw.dtype}, expected uint8 (or numbers in 0..255)")
        values = raw.astype(np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{self.path}: image {i + 1} holds NaN or inf pixels")
        lo, hi = float(values.min()), float(values.max())
        if raw.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
            values = values * 255.0
        elif lo < 0.0 or hi > 255.0:
            raise DataError(f"{self.path}: image {i + 1} has pixel values in [{lo:g}, {hi:g}], expected "
                            f"0..255 (uint8) or floats in [0, 1]")
        return np.rint(values).astype(np.uint8)

    def depth(self, i: int) -> np.ndarray:
        return np.ascontiguousarray(self._read("depths", i).T).astype(np.float32, copy=False)

    def labels(self, i: int) -> np.ndarray:
        return np.ascontiguousarray(self._read("labels", i).T)

    def instances(self, i: int) -> np.ndarray:
        return np.ascontiguousarray(self._read("instances", i).T)

    def close(self) -> None:
        self.f.close()


def boxes_from_maps(labels: np.ndarray, instances: np.ndarray,
                    class_values: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """One box per (class, instance id) pair: tight min/max of its pixels.

    :param labels: (H, W) label map (value k = ``names[k-1]``).
    :param instances: (H, W) instance ids.
    :param class_values: label value of each detection class (class c ↔ label c+1).
    :returns: boxes (M, 4) float32 xyxy (x2 = last column + 1) and labels (M,)
        int64 in 1..len(class_values), sorted by (label, instance id).
    """
    labels = np.asarray(labels).astype(np.int64)
    lut = np.zeros(max(int(labels.max(initial=0)), max(class_values)) + 1, dtype=np.int64)
    for c, value in enumerate(class_values):
        lut[value] = c + 1
    cls = lut[labels]
    ys, xs = np.nonzero(cls)
    if ys.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    key = cls[ys, xs] * (1 << 32) + np.asarray(instances).astype(np.int64)[ys, xs]
    order = np.argsort(key, kind="stable")
    key, ys, xs = key[order], ys[order], xs[order]
    uniq, starts = np.unique(key, return_index=True)
    boxes = np.stack([
        np.minimum.reduceat(xs, starts), np.minimum.reduceat(ys, starts),
        np.maximum.reduceat(xs, starts) + 1, np.maximum.reduceat(ys, starts) + 1,
    ], axis=1).astype(np.float32)
    return boxes, (uniq >> 32).astype(np.int64)


class EigenNormals:
    """Eigen et al.'s normal PNGs, indexed by the integer in their file stems."""

    def __init__(self, folder: str, index_base: int = 1):
        self.folder = folder
        normals_dir = os.path.join(folder, "normals")
        if not os.path.isdir(normals_dir):
            raise DataError(f"{folder}: expected a 'normals' subfolder of <index>.png files")
        self.normals = self._scan(normals_dir)
        masks_dir = os.path.join(folder, "masks")
        self.masks = self._scan(masks_dir) if os.path.isdir(masks_dir) else {}
        self.index_base = index_base
        if not self.normals:
            raise DataError(f"{normals_dir}: no <index>.png file")

    @staticmethod
    def _scan(folder: str) -> Dict[int, str]:
        out = {}
        for name in os.listdir(folder):
            m = re.fullmatch(r"(\d+)\.png", name, flags=re.IGNORECASE)
            if m:
                out[int(m.group(1))] = os.path.join(folder, name)
        return out

    def get(self, mat_index: int, size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
        """Normals (H, W, 3) and mask (H, W) of the image of 1-based index ``mat_index``."""
        key = mat_index - 1 + self.index_base
        path = self.normals.get(key)
        if path is None:
            raise DataError(f"{self.folder}/normals: no file for image {mat_index} (expected {key}.png)")
        rgb = _read_png(path, np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.shape[:2] != tuple(size):
            raise DataError(f"{path}: expected an RGB image of size {size[1]}x{size[0]}, got shape {rgb.shape}")
        normals, mask = normals_from_rgb(rgb)
        mask_path = self.masks.get(key)
        if mask_path is not None:
            m = _read_png(mask_path, None)
            if m.ndim == 3:
                m = m[..., 0]
            if m.shape != tuple(size):
                raise DataError(f"{mask_path}: expected size {size[1]}x{size[0]}, got shape {m.shape}")
            mask = mask & (m > 0)
            normals[~mask] = 0
        return normals, mask


def _read_png(path: str, dtype) -> np.ndarray:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read as an image ({exc})") from None
    return arr.astype(dtype) if dtype is not None else arr


# -- preparation --------------------------------------------------------------
def _fingerprint(mat_path: str, indices: np.ndarray, normals_dir: Optional[str]) -> str:
    stat = os.stat(mat_path)
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, os.path.abspath(mat_path), stat.st_size,
                         os.path.abspath(normals_dir) if normals_dir else None]).encode())
    h.update(np.asarray(indices, np.int64).tobytes())
    return h.hexdigest()


#: the largest depth the cache stores (uint16 millimetres); deeper pixels are invalid
MAX_DEPTH_MM = 65535


def prepare_nyuv2(mat: str, splits: str, out: str, normals: Optional[str] = None,
                  val_scenes: Optional[str] = None, normals_index_base: int = 1,
                  compression: Optional[str] = "lzf", progress: bool = True,
                  limit: Optional[int] = None) -> Dict[str, str]:
    """Write the cache of every split (``train``, ``test``, and ``val`` with
    ``val_scenes``) under ``out``; return split -> cache path.

    A split whose complete cache already exists with the same inputs is
    skipped; an interrupted one resumes. ``limit`` keeps the first ``limit``
    images of each split (quick trials; a positive number).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"--limit must be a positive number of images per split, got {limit!r}")
    source = MatSource(mat)
    try:
        train, test = read_splits(splits, source.num)
        parts: Dict[str, np.ndarray] = {}
        if val_scenes:
            wanted = set(read_scene_list(val_scenes))
            in_val = np.array([source.scenes[i - 1] in wanted for i in train], dtype=bool)
            if not in_val.any():
                raise DataError(f"{val_scenes}: none of its scenes has a training image "
                                f"(scene names look like '{source.scenes[train[0] - 1]}')")
            parts["train"], parts["val"] = train[~in_val], train[in_val]
        else:
            parts["train"] = train
        parts["test"] = test
        eigen = EigenNormals(normals, normals_index_base) if normals else None
        scene_names = sorted(set(source.scene_types))
        for split in parts:
            _check_replaceable(cache_path(out, split))
        os.makedirs(out, exist_ok=True)
        written = {}
        for split, idx in parts.items():
            if limit is not None:
                idx = idx[:limit]
            written[split] = _write_split(source, split, idx, out, eigen, scene_names,
                                          compression, progress)
        return written
    finally:
        source.close()


def _check_replaceable(path: str) -> None:
    """A cache file may be replaced (rebuilt) only if it is one: an HDF5 file
    carrying this module's attributes. Anything else at that name is the
    user's, and is refused before any work."""
    if not os.path.lexists(path):
        return
    try:
        with h5py.File(path, "r") as f:
            ours = "version" in f.attrs and "split" in f.attrs and "fingerprint" in f.attrs
    except OSError:
        ours = False
    if not ours:
        raise DataError(f"{path} exists and is not an NYUv2 cache mtlkit wrote: it would be replaced; "
                        f"move it or choose another --out")


def _write_split(source: MatSource, split: str, indices: np.ndarray, out: str,
                 eigen: Optional[EigenNormals], scene_names: List[str],
                 compression: Optional[str], progress: bool) -> str:
    final = cache_path(out, split)
    partial = os.path.join(out, f".nyuv2_{split}.h5.partial")
    fingerprint = _fingerprint(source.path, indices, eigen.folder if eigen else None)
    if os.path.exists(final):
        try:
            with h5py.File(final, "r") as f:
                if f.attrs.get("complete") and f.attrs.get("fingerprint") == fingerprint:
                    return final
        except OSError:
            pass
    n, H, W = len(indices), source.height, source.width
    f = None
    if os.path.exists(partial):
        try:
            f = h5py.File(partial, "r+")
            if f.attrs.get("fingerprint") != fingerprint:
                f.close()
                f = None
        except OSError:  # a crash mid-write can leave an unreadable file: start over
            f = None
    if f is None:
        f = h5py.File(partial, "w")
        kw = {"compression": compression} if compression else {}
        f.create_dataset("images", (n, H, W, 3), np.uint8, chunks=(1, H, W, 3), **kw)
        f.create_dataset("depth", (n, H, W), np.uint16, chunks=(1, H, W), **kw)
        f.create_dataset("normals", (n, H, W, 3), np.int8, chunks=(1, H, W, 3), **kw)
        f.create_dataset("normals_mask", (n, H, W), bool, chunks=(1, H, W), **kw)
        f.create_dataset("boxes", (0, 4), np.float32, maxshape=(None, 4), chunks=(1024, 4))
        f.create_dataset("labels", (0,), np.int64, maxshape=(None,), chunks=(1024,))
        f.create_dataset("box_offsets", data=np.zeros(n + 1, np.int64))
        f.create_dataset("scene", (n,), np.int64)
        f.create_dataset("index", data=np.asarray(indices, np.int64))
        f.attrs.update({
            "version": CACHE_VERSION, "split": split, "fingerprint": fingerprint, "done": 0,
            "complete": False, "classes": json.dumps(list(NYU_CLASSES)),
            "scenes": json.dumps(scene_names), "normals_source": "eigen" if eigen else "depth",
        })
    try:
        done = int(f.attrs["done"])
        offsets = f["box_offsets"]
        total = int(offsets[done])
        f["boxes"].resize((total, 4))
        f["labels"].resize((total,))
        intrinsics = nyu_intrinsics(H, W)
        iterator = range(done, n)
        if progress:
            iterator = tqdm(iterator, total=n, initial=done, desc=f"nyuv2 {split}", unit="img")
        for j in iterator:
            i = int(indices[j]) - 1
            depth = source.depth(i)
            f["images"][j] = source.image(i)
            # millimetres in uint16: a depth beyond 65.535 m cannot be stored and is
            # no indoor depth either: it is stored as invalid (0), never clipped
            mm = np.where(np.isfinite(depth) & (depth > 0), np.rint(depth.astype(np.float64) * 1000.0), 0)
            f["depth"][j] = np.where(mm <= MAX_DEPTH_MM, mm, 0).astype(np.uint16)
            if eigen is not None:
                normals, mask = eigen.get(i + 1, (H, W))
            else:
                normals, mask = normals_from_depth(depth, *intrinsics)
            f["normals"][j] = encode_normals(normals)
            f["normals_mask"][j] = mask
            boxes, labels = boxes_from_maps(source.labels(i), source.instances(i), source.class_values)
            f["boxes"].resize((total + len(boxes), 4))
            f["labels"].resize((total + len(boxes),))
            f["boxes"][total:] = boxes
            f["labels"][total:] = labels
            total += len(boxes)
            offsets[j + 1] = total
            f["scene"][j] = scene_names.index(source.scene_types[i])
            if (j + 1) % FLUSH_EVERY == 0 or j + 1 == n:
                f.attrs["done"] = j + 1
                f.flush()
        f.attrs["complete"] = True
        f.flush()
    finally:
        f.close()
    os.replace(partial, final)
    _fsync_dir(out)
    return final


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- the dataset --------------------------------------------------------------
class NYUv2(Dataset):
    """NYUv2 from the cache written by ``mtlkit data nyuv2``.

    Options (``defaults``):

    * ``root`` (str): the folder given to ``--out``.
    * ``split`` (str): ``train``, ``test`` or ``val``.
    * ``size`` (int or null): keep only the first ``size`` images.
    * ``depth``, ``normals``, ``scene``, ``detection`` (bool): which labels
      the samples carry (a task switched off is absent with ``has`` False).

    The HDF5 file is opened lazily, once per process (so each DataLoader
    worker has its own handle).
    """

    defaults = {"root": "data/nyuv2", "split": "train", "size": None,
                "depth": True, "normals": True, "scene": True, "detection": True}

    def __init__(self, root: str = "data/nyuv2", split: str = "train", size: Optional[int] = None,
                 depth: bool = True, normals: bool = True, scene: bool = True, detection: bool = True):
        self.path = cache_path(root, split)
        if not os.path.isfile(self.path):
            raise DataError(f"{self.path}: no NYUv2 cache for split '{split}'; prepare it with "
                            f"`mtlkit data nyuv2 --mat nyu_depth_v2_labeled.mat --splits splits.mat --out {root}`")
        try:
            with h5py.File(self.path, "r") as f:
                if not f.attrs.get("complete"):
                    raise DataError(f"{self.path}: incomplete cache; rerun `mtlkit data nyuv2`")
                self.classes = list(json.loads(f.attrs["classes"]))
                self.scenes = list(json.loads(f.attrs["scenes"]))
                self._offsets = np.asarray(f["box_offsets"][()], np.int64)
                self._length = int(f["images"].shape[0])
        except OSError as exc:
            raise DataError(f"{self.path}: cannot be read as an HDF5 cache ({exc})") from None
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise DataError(f"nyuv2 dataset: 'size' must be a positive number of images or null (all), "
                                f"got {size!r}")
            self._length = min(self._length, int(size))
        self.split = split
        self.use = {"depth": depth, "normals": normals, "scene": scene, "detection": detection}
        self._file = None
        self._pid = None

    def __len__(self) -> int:
        return self._length

    def _handle(self):
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} images")
        f = self._handle()
        image = np.asarray(f["images"][index])
        height, width = image.shape[:2]
        sample: Dict[str, Any] = {
            "image": torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0),
        }
        has = {}
        if self.use["detection"]:
            lo, hi = self._offsets[index], self._offsets[index + 1]
            sample["boxes"] = torch.from_numpy(np.asarray(f["boxes"][lo:hi], np.float32).reshape(-1, 4))
            sample["labels"] = torch.from_numpy(np.asarray(f["labels"][lo:hi], np.int64))
            has["detection"] = True
        if self.use["scene"]:
            sample["scene"] = torch.tensor(int(f["scene"][index]), dtype=torch.int64)
            has["scene"] = True
        if self.use["depth"]:
            mm = np.asarray(f["depth"][index])
            sample["depth"] = torch.from_numpy(mm.astype(np.float32) / 1000.0)[None]
            sample["depth_mask"] = torch.from_numpy(mm > 0)[None]
            has["depth"] = True
        if self.use["normals"]:
            normals = decode_normals(np.asarray(f["normals"][index]))
            mask = np.asarray(f["normals_mask"][index]).astype(bool)
            normals[~mask] = 0
            sample["normals"] = torch.from_numpy(normals).permute(2, 0, 1).contiguous()
            sample["normals_mask"] = torch.from_numpy(mask)[None]
            has["normals"] = True
        sample["has"] = has
        sample["meta"] = {"id": int(index), "source": "nyuv2", "orig_size": (int(height), int(width)),
                          "mat_index": int(f["index"][index])}
        return sample
