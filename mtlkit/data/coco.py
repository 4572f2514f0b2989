"""COCO-format detection data with optional depth / normal maps.

Inputs:

* a COCO detection JSON: ``images`` (``id``, ``file_name``, optional
  ``width``/``height`` and scene field), ``annotations`` (``image_id``,
  ``category_id``, ``bbox`` [x, y, w, h] in pixels, optional ``iscrowd``),
  ``categories`` (``id``, ``name``).
* ``images``: the folder ``file_name`` is relative to (default: the JSON's
  folder).
* ``depth``: optional folder of depth maps named by the image's file stem:
  ``<stem>.png`` (16-bit, ``depth_scale`` units per metre, default 1000 =
  millimetres; 0 = invalid) or ``<stem>.npy`` ((H, W) float metres; 0, NaN or
  inf = invalid).
* ``normals``: optional folder of normal maps named by stem: ``<stem>.png``
  (RGB, ``n = rgb / 127.5 - 1``, camera frame x right, y down, z forward;
  pixels whose decoded length is not 1 ± 0.1 — e.g. black — are invalid) or
  ``<stem>.npy`` ((H, W, 3) or (3, H, W) float; invalid where not finite or
  of length < 0.5).

An image without its depth / normal file simply lacks that modality
(``has["depth"] = False``). Category ids are mapped to contiguous labels
1..C in increasing id order (``classes[label - 1]`` is the name).
Category names must differ (two categories of one name would share one
per-class AP). Annotations with ``iscrowd = 1`` are ignored (like SSD
training does), and so are boxes with no area.

Every image's header is read once when the set is built (before a run writes
anything): a missing, unreadable, truncated or oversized image, a size other
than the JSON's ``width``/``height`` and a box outside its image are found
then. Images are used upright, by their EXIF orientation (as viewers and
labelling tools show them), unless the JSON's size is that of the stored
pixels of a rotated image: its boxes were then drawn on the stored pixels. The scene comes from the image-level field
``scene_field`` (default ``"scene"``): a name (looked up in ``scenes``, or
in the sorted set of names found in the file when ``scenes`` is not given)
or an integer index; an image without the field has ``has["scene"] = False``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from mtlkit.data.geometry import normals_from_rgb
from mtlkit.data.images import open_checked, probe_image, read_rgb, size_of
from mtlkit.errors import DataError
from mtlkit.utils.paths import not_a_file


def _load_json(path: str) -> Dict[str, Any]:
    reason = not_a_file(path, "a COCO detection JSON")
    if reason is not None:
        raise DataError(reason)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: the top level must be an object with images, annotations, categories")
    return data


def _field(record: Any, key: str, types, path: str, where: str) -> Any:
    if not isinstance(record, dict):
        raise DataError(f"{path}: {where} must be an object, got {type(record).__name__}")
    if key not in record:
        raise DataError(f"{path}: {where} has no '{key}'")
    value = record[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise DataError(f"{path}: {where}.{key} has the wrong type ({type(value).__name__}: {value!r})")
    return value


class COCODetection(Dataset):
    """A COCO detection JSON plus optional depth / normal folders (see module doc).

    Options (``defaults``):

    * ``ann_file`` (str): the COCO JSON.
    * ``images`` (str or null): image folder (default: the JSON's folder).
    * ``depth`` / ``normals`` (str or null): modality folders.
    * ``depth_scale`` (float): PNG depth units per metre.
    * ``scene_field`` (str): image-level field holding the scene.
    * ``scenes`` (list or null): scene names (index = scene label).
    * ``size`` (int or null): keep only the first ``size`` images.
    """

    defaults = {"ann_file": "", "images": None, "depth": None, "normals": None, "depth_scale": 1000.0,
                "scene_field": "scene", "scenes": None, "size": None}

    def __init__(self, ann_file: str = "", images: Optional[str] = None, depth: Optional[str] = None,
                 normals: Optional[str] = None, depth_scale: float = 1000.0, scene_field: str = "scene",
                 scenes: Optional[List[str]] = None, size: Optional[int] = None):
        if not ann_file:
            raise DataError("coco dataset: 'ann_file' (the COCO JSON) is required")
        self.ann_file = ann_file
        self.image_dir = images if images is not None else os.path.dirname(os.path.abspath(ann_file))
        self.depth_dir, self.normals_dir = depth, normals
        for name, folder in (("depth", depth), ("normals", normals)):
            if folder is not None and not os.path.isdir(folder):
                raise DataError(f"{folder}: no such folder (coco option '{name}')")
        self.depth_scale = float(depth_scale)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise DataError(f"coco dataset: 'size' must be a positive number of images or null (all), "
                            f"got {size!r}")
        if not os.path.isdir(self.image_dir):
            raise DataError(f"{self.image_dir}: no such folder (the images of {ann_file})")
        data = _load_json(ann_file)
        self._parse(data, scene_field, scenes)
        if size is not None:
            self.records = self.records[: int(size)]
        missing = [r for r in self.records if not os.path.lexists(os.path.join(self.image_dir, r["file_name"]))]
        if missing:
            more = f" and {len(missing) - 1} more of {len(self.records)}" if len(missing) > 1 else ""
            raise DataError(f"{os.path.join(self.image_dir, missing[0]['file_name'])}: image {missing[0]['id']} "
                            f"of {ann_file} is missing{more}")
        self._probe_images()

    def _probe_images(self) -> None:
        """Read every image's header once, before anything is written: a
        folder or pipe in place of an image, a file that is no image, cut
        short or too large, a size other than the JSON's, a box outside its
        image (:func:`mtlkit.data.images.probe_image`). Also fixes each
        record's frame: upright by its EXIF orientation unless the JSON's size
        is that of the stored pixels."""
        for rec in self.records:
            path = os.path.join(self.image_dir, rec["file_name"])
            try:
                info = probe_image(path)
            except DataError as exc:
                raise DataError(f"{exc} (image {rec['id']} of {self.ann_file})") from None
            (height, width), rec["upright"] = size_of(info, rec["size"])
            if rec["size"] is not None and tuple(rec["size"]) != (height, width):
                raise DataError(f"{path}: the image is {width}x{height} pixels but {self.ann_file} says "
                                f"width {rec['size'][1]}, height {rec['size'][0]} (image {rec['id']})")
            if rec["size"] is None:
                for k, box in zip(rec["anns"], rec["boxes"]):
                    _check_inside(self.ann_file, f"annotations[{k}]",
                                  [box[0], box[1], box[2] - box[0], box[3] - box[1]], (height, width))
            rec["size"] = (height, width)

    def _parse(self, data: Dict[str, Any], scene_field: str, scenes: Optional[List[str]]) -> None:
        path = self.ann_file
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise DataError(f"{path}: missing '{key}' (a COCO detection JSON has images, annotations, categories)")
            if not isinstance(data[key], list):
                raise DataError(f"{path}: '{key}' must be a list")
        cats = []
        for k, cat in enumerate(data["categories"]):
            cats.append((_field(cat, "id", int, path, f"categories[{k}]"),
                         _field(cat, "name", str, path, f"categories[{k}]")))
        ids = [c[0] for c in cats]
        if len(set(ids)) != len(ids):
            raise DataError(f"{path}: categories repeat an id")
        first_of: Dict[str, int] = {}
        for k, (_, name) in enumerate(cats):
            if name in first_of:
                raise DataError(f"{path}: categories[{k}] repeats the name '{name}' of "
                                f"categories[{first_of[name]}]: their boxes would be counted as one class in "
                                f"the per-class AP; give each category its own name")
            first_of[name] = k
        cats.sort()
        self.category_ids = [c[0] for c in cats]
        self.classes = [c[1] for c in cats]
        label_of = {cid: k + 1 for k, cid in enumerate(self.category_ids)}

        records: List[Dict[str, Any]] = []
        by_id: Dict[int, Dict[str, Any]] = {}
        for k, img in enumerate(data["images"]):
            image_id = _field(img, "id", int, path, f"images[{k}]")
            file_name = _field(img, "file_name", str, path, f"images[{k}]")
            if image_id in by_id:
                raise DataError(f"{path}: images[{k}] repeats id {image_id}")
            parts = file_name.replace("\\", "/").split("/")
            if not file_name or os.path.isabs(file_name) or ".." in parts or "\0" in file_name:
                raise DataError(f"{path}: images[{k}].file_name {file_name!r} is not a path inside the images "
                                f"folder (absolute, empty or with '..'): write it relative to {self.image_dir}")
            size = []
            for key in ("height", "width"):
                value = img.get(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                    raise DataError(f"{path}: images[{k}].{key} must be a positive integer, got {value!r}")
                size.append(value)
            rec = {"id": image_id, "file_name": file_name, "boxes": [], "labels": [], "anns": [],
                   "scene": img.get(scene_field), "size": tuple(size) if None not in size else None}
            by_id[image_id] = rec
            records.append(rec)
        for k, ann in enumerate(data["annotations"]):
            where = f"annotations[{k}]"
            image_id = _field(ann, "image_id", int, path, where)
            cid = _field(ann, "category_id", int, path, where)
            bbox = _field(ann, "bbox", list, path, where)
            if image_id not in by_id:
                raise DataError(f"{path}: {where}.image_id {image_id} is not the id of any image")
            if cid not in label_of:
                raise DataError(f"{path}: {where}.category_id {cid} is not the id of any category")
            if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
                raise DataError(f"{path}: {where}.bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
            x, y, w, h = (float(v) for v in bbox)
            if not all(np.isfinite([x, y, w, h])):
                raise DataError(f"{path}: {where}.bbox must be finite numbers, got {bbox!r}")
            if w < 0 or h < 0:
                raise DataError(f"{path}: {where}.bbox has a negative size {bbox!r}")
            size = by_id[image_id]["size"]
            if size is not None:
                _check_inside(path, where, bbox, size)
            if ann.get("iscrowd", 0) or w == 0 or h == 0:
                continue
            by_id[image_id]["boxes"].append([x, y, x + w, y + h])
            by_id[image_id]["labels"].append(label_of[cid])
            by_id[image_id]["anns"].append(k)

        values = [r["scene"] for r in records if r["scene"] is not None]
        if scenes is None:
            names = {v for v in values if isinstance(v, str)}
            scenes = sorted(names)
            if not names and values:  # integer indices only
                scenes = [str(i) for i in range(max(int(v) for v in values) + 1)]
        self.scenes = list(scenes)
        scene_index = {name: i for i, name in enumerate(self.scenes)}
        for k, rec in enumerate(records):
            value = rec["scene"]
            if value is None:
                continue
            if isinstance(value, str):
                if value not in scene_index:
                    raise DataError(f"{path}: images[{k}].{scene_field} '{value}' is not one of the scenes "
                                    f"{self.scenes}")
                rec["scene"] = scene_index[value]
            elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(self.scenes):
                rec["scene"] = int(value)
            else:
                raise DataError(f"{path}: images[{k}].{scene_field} must be a scene name or an index in "
                                f"0..{len(self.scenes) - 1}, got {value!r}")
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def _find(self, folder: Optional[str], stem: str) -> Optional[str]:
        if folder is None:
            return None
        for ext in (".npy", ".png"):
            candidate = os.path.join(folder, stem + ext)
            if os.path.isfile(candidate):
                return candidate
        return None

    def __getitem__(self, index: int) -> Dict[str, Any]:
        rec = self.records[index]
        image_path = os.path.join(self.image_dir, rec["file_name"])
        try:
            rgb = read_rgb(image_path, upright=rec.get("upright", True))
        except DataError as exc:
            raise DataError(f"{exc} (image {rec['id']} of {self.ann_file})") from None
        height, width = rgb.shape[:2]
        if tuple(rec["size"]) != (height, width):  # the file changed since the set was built
            raise DataError(f"{image_path}: the image is {width}x{height} pixels but {self.ann_file} says "
                            f"width {rec['size'][1]}, height {rec['size'][0]} (image {rec['id']})")
        sample: Dict[str, Any] = {
            "image": torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255.0),
            "boxes": torch.tensor(rec["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(rec["labels"], dtype=torch.int64),
        }
        has = {"detection": True, "scene": rec["scene"] is not None}
        if rec["scene"] is not None:
            sample["scene"] = torch.tensor(rec["scene"], dtype=torch.int64)
        stem = os.path.splitext(os.path.basename(rec["file_name"]))[0]
        depth_path = self._find(self.depth_dir, stem)
        has["depth"] = depth_path is not None
        if depth_path is not None:
            depth = self._read_depth(depth_path, (height, width))
            mask = np.isfinite(depth) & (depth > 0)
            sample["depth"] = torch.from_numpy(np.where(mask, depth, 0).astype(np.float32))[None]
            sample["depth_mask"] = torch.from_numpy(mask)[None]
        normals_path = self._find(self.normals_dir, stem)
        has["normals"] = normals_path is not None
        if normals_path is not None:
            normals, mask = self._read_normals(normals_path, (height, width))
            sample["normals"] = torch.from_numpy(normals).permute(2, 0, 1).contiguous()
            sample["normals_mask"] = torch.from_numpy(mask)[None]
        sample["has"] = has
        sample["meta"] = {"id": int(rec["id"]), "source": "coco", "orig_size": (int(height), int(width)),
                          "file_name": rec["file_name"]}
        return sample

    def _read_depth(self, path: str, size) -> np.ndarray:
        if path.endswith(".npy"):
            depth = _load_npy(path).astype(np.float32)
        else:
            depth = _load_png(path)
            if depth.ndim != 2:
                raise DataError(f"{path}: a depth PNG must have one 16-bit channel, got shape {depth.shape}")
            depth = depth.astype(np.float32) / self.depth_scale
        if depth.shape != tuple(size):
            raise DataError(f"{path}: depth of shape {depth.shape}, expected the image's (H, W) = {tuple(size)}")
        return depth

    def _read_normals(self, path: str, size):
        if path.endswith(".npy"):
            n = _load_npy(path).astype(np.float32)
            if n.ndim == 3 and n.shape[0] == 3 and n.shape[-1] != 3:
                n = n.transpose(1, 2, 0)
            if n.ndim != 3 or n.shape[-1] != 3:
                raise DataError(f"{path}: normals must be (H, W, 3) or (3, H, W), got shape {n.shape}")
            norm = np.linalg.norm(n, axis=-1)
            mask = np.isfinite(norm) & (norm >= 0.5)
            n = np.where(mask[..., None], n / np.where(mask, norm, 1.0)[..., None], 0.0).astype(np.float32)
        else:
            rgb = _load_png(path)
            if rgb.ndim != 3 or rgb.shape[-1] < 3:
                raise DataError(f"{path}: a normal PNG must be RGB, got shape {rgb.shape}")
            n, mask = normals_from_rgb(rgb.astype(np.uint8))
        if n.shape[:2] != tuple(size):
            raise DataError(f"{path}: normals of size {n.shape[:2]}, expected the image's (H, W) = {tuple(size)}")
        return n, mask


#: how far (pixels) a box may reach past the image border (rounding of real annotations)
BORDER_TOLERANCE = 1.0


def _check_inside(path: str, where: str, bbox, size) -> None:
    """A box [x, y, w, h] within the (height, width) image, give or take
    :data:`BORDER_TOLERANCE` pixels."""
    x, y, w, h = (float(v) for v in bbox)
    height, width = size
    t = BORDER_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        raise DataError(f"{path}: {where}.bbox {list(bbox)!r} lies outside its image of width {width}, "
                        f"height {height}")


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as a .npy array ({exc})") from None


def _load_png(path: str) -> np.ndarray:
    return np.asarray(open_checked(path, upright=False))
