"""``mtlkit detect CONFIG --checkpoint PATH IMAGES... --out DIR [--json] [--measured TASK ...] [-o key=value ...]``

Runs a trained model on image files, folders or glob patterns. Each image is
resized to the config's ``data.image_size`` for the network; boxes are mapped
back to the original image size. For each image, ``OUT/<name>.png`` holds a
panel with one picture per task (each task's ``visualize()``: boxes with
class names and scores on the original image, the predicted depth
colour-mapped, the normals RGB-coded, the scene as text).
``OUT/predictions.json`` holds, per image, the boxes (xyxy pixels of the
original image), scores, labels and class names, and the top class of every
classification task (the scene), and the name of its picture; ``--json``
also prints it on stdout. Images are used upright (EXIF orientation), and
two images of one name (``a/x.png``, ``b/x.png``) get pictures of different
names (``x.png``, ``x_1.png``).

Nothing is written before every image's header and data are checked and the
model is built. ``--out`` may not be a folder of the input images, and a file
of ``--out`` that an earlier ``mtlkit detect`` did not write is never
replaced (:mod:`mtlkit.utils.outdir`); a second process into the same
``--out`` is refused while the first runs (:mod:`mtlkit.utils.runlock`).

With ``--measured depth [normals]`` (a model with ``model.measured``), each
image's depth is read from a file beside it, ``NAME.depth.png`` (16-bit,
millimetres, 0 = no measurement, the Kinect / NYUv2 convention) or
``NAME.depth.npy`` (float metres, 0 or NaN = none), of the image's size;
normals are computed from it (``--intrinsics FX FY CX CY`` in its pixels,
default NYUv2's scaled to its size). An image without a depth file is
processed on the model's predictions alone (the line printed says which).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mtlkit import viz
from mtlkit.commands._common import add_config_arguments, add_measured_argument, measured_names
from mtlkit.config import run_config
from mtlkit.data import collate
from mtlkit.data.geometry import normals_from_depth, nyu_intrinsics
from mtlkit.data.images import open_checked, probe_image
from mtlkit.data.transforms import Resize
from mtlkit.engine.evaluator import build_eval_model
from mtlkit.engine.logger import write_json
from mtlkit.engine.runtime import move_to, select_device
from mtlkit.errors import DataError, MtlkitError
from mtlkit.models.measured import measured_inputs
from mtlkit.utils.io import check_out_dir
from mtlkit.utils.outdir import claim
from mtlkit.utils.paths import kind_of, not_a_file
from mtlkit.utils.runlock import RunLock

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
#: depth files beside an image NAME.ext, in the order they are looked for
DEPTH_SUFFIXES = (".depth.png", ".depth.npy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint (OUT/last.pt of a run)")
    parser.add_argument("images", nargs="+", metavar="IMAGES",
                        help="image files, folders (their images) or glob patterns")
    parser.add_argument("--out", required=True, help="folder for the pictures and predictions.json")
    parser.add_argument("--json", action="store_true", help="also print the predictions as JSON on stdout")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="keep boxes scoring at least this (default: the detection task's "
                             "vis_score_threshold for pictures, eval.score_threshold for JSON)")
    parser.add_argument("--batch-size", type=int, default=4)
    add_measured_argument(parser)
    parser.add_argument("--intrinsics", type=float, nargs=4, default=None, metavar=("FX", "FY", "CX", "CY"),
                        help="camera intrinsics of the depth files, in their pixels, for normals from "
                             "depth (default: NYUv2's scaled to the depth map's size)")


def _is_image(path: str) -> bool:
    name = path.lower()
    return name.endswith(IMAGE_EXTENSIONS) and not name.endswith(DEPTH_SUFFIXES)


def find_images(specs: Sequence[str]) -> List[str]:
    """Files, folders (their image files, sorted) and glob patterns -> image
    paths, in the order given, without duplicates. Depth files
    (``*.depth.png``) in a folder or pattern are not images."""
    found: List[str] = []
    for spec in specs:
        kind = kind_of(spec)
        if kind == "folder":
            matches = sorted(os.path.join(spec, f) for f in os.listdir(spec)
                             if _is_image(f))
            if not matches:
                raise DataError(f"{spec}: no image files in this folder "
                                f"(looked for {', '.join(IMAGE_EXTENSIONS)})")
        elif kind == "file":
            matches = [spec]
        elif kind == "missing" and glob.has_magic(spec):
            matches = sorted(p for p in glob.glob(spec, recursive=True)
                             if os.path.isfile(p) and _is_image(p))
            if not matches:
                raise DataError(f"{spec}: the pattern matches no image file")
        elif kind == "missing":
            raise DataError(f"{spec}: no such image file or folder")
        else:  # a pipe, a device, a broken link: say what it is, never open it
            raise DataError(not_a_file(spec, "an image file or a folder of images"))
        for path in matches:
            if path not in found:
                found.append(path)
    return found


#: full scale of the single-channel integer / float modes PIL opens (16-bit PNGs are "I;16" or "I")
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def load_image(path: str) -> torch.Tensor:
    """(3, H, W) float32 RGB in [0, 1], upright by its EXIF orientation. A
    16-bit (or 32-bit) grey image is scaled by its full range (65535 for 16
    bits), not clipped at 255."""
    img = open_checked(path)
    try:
        if img.mode in _HIGH_DEPTH_MODES:
            grey = np.asarray(img, dtype=np.float64)
            if not np.isfinite(grey).all():
                raise DataError(f"{path}: the image holds NaN or inf pixels")
            if img.mode.startswith("I;16") or (img.mode == "I" and grey.max(initial=0) > 255):
                full = 65535.0
            elif img.mode == "F" and grey.max(initial=0) <= 1.0:
                full = 1.0
            else:
                full = 255.0
            grey = np.clip(grey / full, 0.0, 1.0).astype(np.float32)
            return torch.from_numpy(np.ascontiguousarray(grey))[None].expand(3, -1, -1).clone()
        array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the image ({exc})") from None
    finally:
        img.close()
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def depth_file(image_path: str) -> Optional[str]:
    """The depth file beside an image (:data:`DEPTH_SUFFIXES`), or None."""
    stem = os.path.splitext(image_path)[0]
    for suffix in DEPTH_SUFFIXES:
        if os.path.isfile(stem + suffix):
            return stem + suffix
    return None


def load_depth(path: str, size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """A depth file -> (depth (H, W) float32 metres, 0 where unknown; valid (H, W) bool).

    ``.depth.png``: a 16-bit grey PNG in millimetres; ``.depth.npy``: float
    metres. 0, NaN and negative values are holes. The map must have ``size``
    (the image's upright (H, W)); a PNG is turned upright by its EXIF
    orientation like the image."""
    try:
        if path.endswith(".npy"):
            depth = np.load(path, allow_pickle=False).astype(np.float64)
        else:
            img = open_checked(path)
            try:
                if img.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                    raise DataError(f"{path}: a depth PNG must be 16-bit grey in millimetres, got mode {img.mode}")
                depth = np.asarray(img, dtype=np.float64) / 1000.0
            finally:
                img.close()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the depth file ({exc})") from None
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2 or depth.shape != tuple(size):
        raise DataError(f"{path}: the depth map has shape {depth.shape}, expected {tuple(size)} like its image")
    valid = np.isfinite(depth) & (depth > 0)
    return np.where(valid, depth, 0.0).astype(np.float32), valid


def sensor_sample(image: torch.Tensor, path: Optional[str], intrinsics: Optional[Sequence[float]]
                  ) -> Dict[str, Any]:
    """An image and its depth file (or None) -> a sample with the ``sensor_*``
    maps of docs/data.md (normals computed from the depth), at the image's size."""
    sample: Dict[str, Any] = {"image": image, "has": {}}
    if path is None:
        return sample
    h, w = int(image.shape[-2]), int(image.shape[-1])
    depth, valid = load_depth(path, (h, w))
    fx, fy, cx, cy = intrinsics if intrinsics is not None else nyu_intrinsics(h, w)
    normals, normals_valid = normals_from_depth(depth, fx, fy, cx, cy, step=max(1, round(w / 160)))
    sample.update({
        "sensor_depth": torch.from_numpy(depth)[None],
        "sensor_depth_mask": torch.from_numpy(valid)[None],
        "sensor_normals": torch.from_numpy(np.ascontiguousarray(normals.transpose(2, 0, 1))),
        "sensor_normals_mask": torch.from_numpy(normals_valid)[None],
    })
    sample["has"].update({"sensor_depth": True, "sensor_normals": True})
    return sample


def check_images(paths: Sequence[str]) -> None:
    """Every image readable before anything is written: its header
    (:func:`mtlkit.data.images.probe_image`: a pipe or device, not an image,
    cut short, too large), then its data as far as PIL's ``verify`` checks it."""
    for path in paths:
        probe_image(path)
        try:
            with Image.open(path) as img:
                img.verify()
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{path}: cannot read the image ({exc})") from None


def check_out_apart(out: str, paths: Sequence[str]) -> None:
    """``--out`` must not be a folder of input images: the pictures would
    replace the images of the same name, and join the inputs of the next run."""
    if not os.path.isdir(out):
        return
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.samefile(folder, out):
            raise MtlkitError(f"--out {out} is the folder of the input image {path}: the pictures would "
                              f"replace or mix with the images; choose another --out")


def resize_image(image: torch.Tensor, size: Optional[Sequence[int]]) -> torch.Tensor:
    """The network input: the data pipeline's evaluation resize."""
    if size is None:
        return image
    return Resize(size)({"image": image})["image"]


def _resize_picture(picture: np.ndarray, height: int, width: int) -> np.ndarray:
    if picture.shape[:2] == (height, width):
        return picture
    return np.asarray(Image.fromarray(picture).resize((width, height), Image.NEAREST))


def _unique_names(paths: Sequence[str]) -> List[str]:
    """One picture name per image, from its file stem: ``a/x.png`` and
    ``b/x.png`` give ``x`` and ``x_1`` (never a name another image has, in any
    letter case: some file systems do not tell ``X.png`` from ``x.png``)."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    taken = set()
    names = []
    for stem in stems:
        name, k = stem, 0
        # a stem is free unless an earlier picture took it; later images keep their own stems
        while name.casefold() in taken or (k > 0 and name.casefold() in {s.casefold() for s in stems}):
            k += 1
            name = f"{stem}_{k}"
        taken.add(name.casefold())
        names.append(name)
    return names


def image_record(path: str, orig: Tuple[int, int], preds: Dict[str, Any], index: int, model: Any,
                 class_names: Optional[Sequence[str]], score_threshold: Optional[float]) -> Dict[str, Any]:
    """The JSON record of one image: each task's own record of its prediction
    (:meth:`mtlkit.task.Task.record`; tasks without one are left out)."""
    record: Dict[str, Any] = {"file": path, "height": orig[0], "width": orig[1]}
    for name, task in model.tasks.items():
        record_of = getattr(task, "record", None)
        if name in preds and callable(record_of):
            entry = record_of(preds[name], index, score_threshold, class_names)
            if entry is not None:
                record[name] = entry
    return record


def main(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise MtlkitError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.score_threshold is not None and not 0.0 <= args.score_threshold <= 1.0:
        raise MtlkitError(f"--score-threshold must be a number in [0, 1], got {args.score_threshold}")

    check_out_dir(args.out)
    paths = find_images(args.images)
    check_out_apart(args.out, paths)
    check_images(paths)  # every input is checked before a picture is written
    with RunLock(args.out, what="--out"):
        return _detect(args, paths)


def _detect(args: argparse.Namespace, paths: List[str]) -> int:
    cfg = run_config(args.config, args.overrides)
    device = select_device(cfg["train"]["device"])
    model, meta = build_eval_model(cfg, args.checkpoint, device)
    image_size = cfg.data_spec.image_size
    class_names = meta.get("classes")  # the data's, for a task without names of its own
    measured = measured_names(args.measured)
    measured_inputs(model, {}, measured)  # refuses a modality the model does not read, before any output
    depth_files = {p: depth_file(p) for p in paths} if measured else {}
    for path, depth_path in depth_files.items():  # every depth file read before anything is written
        if depth_path is not None:
            info = probe_image(path)
            load_depth(depth_path, (info.height, info.width))
    without = [p for p in paths if measured and depth_files[p] is None]
    if without:
        print(f"mtlkit detect: no depth file beside {len(without)} of {len(paths)} image(s) (e.g. "
              f"{without[0]}: looked for {', '.join(os.path.splitext(without[0])[0] + s for s in DEPTH_SUFFIXES)}); "
              "those use the model's predictions instead", file=sys.stderr)
    names = _unique_names(paths)
    # the last check: never replace a file of --out that an earlier detect did not write
    claim(args.out, [f"{n}.png" for n in names] + ["predictions.json"], "detect")
    records: List[Dict[str, Any]] = []

    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start:start + args.batch_size]
        originals = [load_image(p) for p in chunk]
        if measured:
            batch = _sensor_batch(originals, [depth_files[p] for p in chunk], image_size, args.intrinsics)
            inputs = batch["image"].to(device)
            extra = measured_inputs(model, move_to(batch, device), measured)
        else:
            inputs = torch.stack([resize_image(im, image_size) for im in originals]).to(device)
            extra = measured_inputs(model, {}, [])
        net_size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
        with torch.no_grad():
            preds = model.postprocess(model(inputs, **extra), net_size)
        preds = {k: _to_cpu(v) for k, v in preds.items()}
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in originals]
        for name, task in model.tasks.items():  # e.g. boxes -> original pixels
            if name in preds and callable(getattr(task, "rescale", None)):
                preds[name] = task.rescale(preds[name], net_size, sizes)
        for i, path in enumerate(chunk):
            records.append(image_record(path, sizes[i], preds, i, model, class_names, args.score_threshold))
            records[-1]["picture"] = f"{names[start + i]}.png"
            panel = _panel(model, preds, i, originals[i], inputs[i].cpu(), args.score_threshold)
            viz.save_image(panel, os.path.join(args.out, f"{names[start + i]}.png"))

    write_json(os.path.join(args.out, "predictions.json"), records)
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{len(paths)} image(s): pictures and predictions.json written to {args.out}",
              file=sys.stderr)
    return 0


def _sensor_batch(originals: Sequence[torch.Tensor], depth_paths: Sequence[Optional[str]],
                  image_size: Optional[Sequence[int]], intrinsics: Optional[Sequence[float]]) -> Dict[str, Any]:
    """The network inputs of a chunk with their sensor maps: each image and its
    depth (normals from it) resized together by the evaluation transform, then
    collated (an image without a depth file has ``has[sensor_*]`` False)."""
    samples = []
    for image, path in zip(originals, depth_paths):
        sample = sensor_sample(image, path, intrinsics)
        samples.append(Resize(image_size)(sample) if image_size is not None else sample)
    return collate(samples)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu() if value.is_floating_point() else value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def _panel(model: Any, preds: Dict[str, Any], index: int, original: torch.Tensor,
           network_input: torch.Tensor, score_threshold: Optional[float]) -> np.ndarray:
    """One picture per task, tiled: each on the original image or on the
    network input (:attr:`mtlkit.task.Task.draws_on_original`), scaled to the
    original size."""
    height, width = int(original.shape[-2]), int(original.shape[-1])
    pictures, titles = [viz.to_uint8_image(original)], ["input"]
    for name, task in model.tasks.items():
        if name not in preds:
            continue
        on_original = bool(getattr(task, "draws_on_original", False))
        sample = {"image": original if on_original else network_input}
        picture = _visualize(task, preds[name], index, sample, score_threshold)
        if picture is None:
            continue
        pictures.append(_resize_picture(np.asarray(picture, dtype=np.uint8), height, width))
        titles.append(name)
    return viz.tile(pictures, cols=min(3, len(pictures)), titles=titles)


def _visualize(task: Any, pred: Any, index: int, sample: Dict[str, Any],
               score_threshold: Optional[float]) -> Optional[np.ndarray]:
    """``task.visualize``, with ``--score-threshold`` replacing the task's own
    picture threshold (:attr:`mtlkit.task.Task.picture_threshold_option`) when given."""
    key = getattr(task, "picture_threshold_option", None)
    options = getattr(task, "options", None)
    if score_threshold is not None and key and isinstance(options, dict) and key in options:
        saved = options[key]
        options[key] = score_threshold
        try:
            return task.visualize(pred, index, sample)
        finally:
            options[key] = saved
    return task.visualize(pred, index, sample)
