"""Pictures: drawing helpers shared by task plugins, and run-directory plots.

Drawing helpers (stable names; task plugins' ``visualize()`` may use them).
Every helper returns an ``(H, W, 3)`` ``uint8`` numpy array:

* :func:`to_uint8_image` - a (3, H, W) float image in [0, 1] -> HxWx3 uint8.
* :func:`draw_boxes` - boxes with class names and scores drawn on an image.
* :func:`colorize_depth` - a depth map colour-mapped (invalid pixels black).
* :func:`colorize_normals` - unit normals RGB-coded as ``(n + 1) / 2``.
* :func:`text_panel` - lines of text on a dark panel (e.g. a scene prediction).
* :func:`tile` - pictures arranged in a grid, with optional titles.

Plots (matplotlib, Agg canvas, written atomically as PNG):

* :func:`plot_training_curves` - losses / lr / eval metrics from ``metrics.jsonl``.
* :func:`plot_per_class_ap` - a bar chart of per-class AP.
* :func:`figure` / :func:`save_figure` - a figure on its own Agg canvas (no
  pyplot, no global backend) and its atomic PNG, for other plots.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from mtlkit.utils.io import atomic_write

ArrayLike = Any  # numpy array or torch tensor

#: A fixed palette (tab20-like) so a class has the same colour in every picture.
PALETTE = np.array(
    [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
        (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
        (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
        (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
    ],
    dtype=np.uint8,
)


def _numpy(x: ArrayLike) -> np.ndarray:
    """A numpy copy of a tensor / array (detached, on CPU, float tensors kept float)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.float16", "torch.bfloat16"):
            x = x.float()  # numpy has no bfloat16
        return x.numpy()
    return np.asarray(x)


def class_color(label: int) -> tuple:
    """The RGB colour of class ``label`` (1..C)."""
    return tuple(int(c) for c in PALETTE[(int(label) - 1) % len(PALETTE)])


def to_uint8_image(tensor_3hw: ArrayLike) -> np.ndarray:
    """An image as (H, W, 3) uint8.

    Accepts a (3, H, W) float tensor/array in [0, 1] (the dataset's ``image``),
    a (1, H, W) / (H, W) grey image, or an (H, W, 3) uint8 array (returned as a copy).
    """
    a = _numpy(tensor_3hw)
    if a.dtype == np.uint8:
        if a.ndim == 3 and a.shape[-1] == 3:
            return a.copy()
        if a.ndim == 3 and a.shape[0] in (1, 3):
            a = np.moveaxis(a, 0, -1)
        if a.ndim == 2:
            a = a[..., None]
        return np.repeat(a, 3 // a.shape[-1], axis=-1).copy()
    a = a.astype(np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ValueError(f"expected a (3, H, W) or (1, H, W) image, got shape {a.shape}")
    if a.shape[0] == 1:
        a = np.repeat(a, 3, axis=0)
    a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0).copy()


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def draw_boxes(
    image_uint8: np.ndarray,
    boxes: ArrayLike,
    labels: ArrayLike,
    scores: Optional[ArrayLike] = None,
    class_names: Optional[Sequence[str]] = None,
    width: int = 2,
) -> np.ndarray:
    """Draw boxes with ``"name score"`` captions on a copy of an image.

    :param image_uint8: (H, W, 3) uint8 (a (3, H, W) float image is converted).
    :param boxes: (N, 4) xyxy in pixels of the image.
    :param labels: (N,) class labels in 1..C (colour and ``class_names[label - 1]``).
    :param scores: (N,) or ``None`` (ground truth: no score shown).
    :param class_names: C names; ``None`` shows the label number.
    :returns: (H, W, 3) uint8.
    """
    image = to_uint8_image(image_uint8)
    b = _numpy(boxes).reshape(-1, 4).astype(np.float64)
    lab = _numpy(labels).reshape(-1).astype(np.int64)
    sc = None if scores is None else _numpy(scores).reshape(-1).astype(np.float64)
    if len(lab) != len(b) or (sc is not None and len(sc) != len(b)):
        raise ValueError(f"draw_boxes: {len(b)} boxes, {len(lab)} labels, "
                         f"{'no' if sc is None else len(sc)} scores")
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    font = _font(max(10, min(16, image.shape[0] // 24)))
    # Draw the lowest scores first so the best boxes end on top.
    order = np.argsort(sc, kind="stable") if sc is not None else np.arange(len(b))
    for i in order:
        x0, y0, x1, y1 = b[i]
        if not np.all(np.isfinite(b[i])):
            continue
        color = class_color(lab[i])
        draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=color, width=width)
        name = (class_names[lab[i] - 1] if class_names is not None and 1 <= lab[i] <= len(class_names)
                else str(int(lab[i])))
        caption = name if sc is None else f"{name} {sc[i]:.2f}"
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), caption, font=font)
        tw, th = tx1 - tx0, ty1 - ty0
        ty = y0 - th - 3 if y0 - th - 3 >= 0 else y0
        draw.rectangle([x0, ty, x0 + tw + 3, ty + th + 3], fill=color)
        draw.text((x0 + 1, ty + 1 - ty0), caption, fill=(255, 255, 255), font=font)
    return np.asarray(pil, dtype=np.uint8).copy()


def _colormap(name: str):
    return matplotlib.colormaps[name]


def colorize_depth(
    depth: ArrayLike,
    mask: Optional[ArrayLike] = None,
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    cmap: str = "turbo",
) -> np.ndarray:
    """Colour-map a depth map; near is blue, far is red (``turbo``).

    :param depth: (H, W) or (1, H, W) metres (or any scalar field).
    :param mask: same spatial size, truthy where valid; invalid and non-finite
        pixels (and depth <= 0 when no mask is given) are black.
    :param vmin, vmax: colour range; default the valid pixels' min / max.
    :returns: (H, W, 3) uint8.
    """
    d = _numpy(depth).astype(np.float64)
    d = d.reshape(d.shape[-2:]) if d.ndim == 3 else d
    if d.ndim != 2:
        raise ValueError(f"expected a (H, W) or (1, H, W) depth map, got shape {d.shape}")
    valid = np.isfinite(d)
    if mask is not None:
        valid &= _numpy(mask).reshape(d.shape).astype(bool)
    else:
        valid &= d > 0
    if not valid.any():
        return np.zeros(d.shape + (3,), dtype=np.uint8)
    lo = float(d[valid].min()) if vmin is None else float(vmin)
    hi = float(d[valid].max()) if vmax is None else float(vmax)
    scale = hi - lo if hi > lo else 1.0
    t = np.clip((np.where(valid, d, lo) - lo) / scale, 0.0, 1.0)
    rgb = (_colormap(cmap)(t)[..., :3] * 255.0 + 0.5).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def colorize_normals(normals: ArrayLike, mask: Optional[ArrayLike] = None) -> np.ndarray:
    """RGB-code unit normals as ``(n + 1) / 2`` (x -> red, y -> green, z -> blue).

    :param normals: (3, H, W) (or (H, W, 3)) unit vectors in the camera frame.
    :param mask: (H, W) or (1, H, W), truthy where valid; invalid pixels, and
        all-zero vectors when no mask is given, are black.
    :returns: (H, W, 3) uint8.
    """
    n = _numpy(normals).astype(np.float64)
    if n.ndim != 3:
        raise ValueError(f"expected (3, H, W) normals, got shape {n.shape}")
    if n.shape[0] != 3 and n.shape[-1] == 3:
        n = np.moveaxis(n, -1, 0)
    if n.shape[0] != 3:
        raise ValueError(f"expected (3, H, W) normals, got shape {n.shape}")
    n = np.nan_to_num(n, nan=0.0, posinf=0.0, neginf=0.0)
    valid = np.any(n != 0, axis=0)
    if mask is not None:
        valid &= _numpy(mask).reshape(n.shape[1:]).astype(bool)
    rgb = (np.clip((n + 1.0) / 2.0, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    rgb = rgb.copy()
    rgb[~valid] = 0
    return rgb


def text_panel(lines: Union[str, Sequence[str]], height: int, width: int,
               font_size: Optional[int] = None) -> np.ndarray:
    """Lines of white text on a dark (H, W, 3) uint8 panel (e.g. scene top-k)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    pil = Image.new("RGB", (int(width), int(height)), (24, 24, 24))
    draw = ImageDraw.Draw(pil)
    font = _font(font_size or max(10, min(20, int(height) // 12)))
    y = 6
    for line in lines:
        draw.text((8, y), str(line), fill=(240, 240, 240), font=font)
        x0, y0, x1, y1 = draw.textbbox((8, y), str(line), font=font)
        y = y1 + 6
        if y >= height:
            break
    return np.asarray(pil, dtype=np.uint8).copy()


def tile(images: Sequence[np.ndarray], cols: int, titles: Optional[Sequence[str]] = None,
         pad: int = 4, background: int = 255) -> np.ndarray:
    """Arrange pictures on a grid of ``cols`` columns.

    Each cell is as large as the largest picture (smaller ones are centred);
    with ``titles`` a caption strip is drawn above each picture.

    :param images: (H_i, W_i, 3) uint8 (or any input :func:`to_uint8_image` takes).
    :returns: (H, W, 3) uint8.
    """
    pics = [to_uint8_image(im) for im in images]
    if not pics:
        raise ValueError("tile needs at least one picture")
    if titles is not None and len(titles) != len(pics):
        raise ValueError(f"tile: {len(pics)} pictures but {len(titles)} titles")
    cols = max(1, min(int(cols), len(pics)))
    rows = math.ceil(len(pics) / cols)
    ch = max(p.shape[0] for p in pics)
    cw = max(p.shape[1] for p in pics)
    font = _font(12)
    title_h = 18 if titles is not None else 0
    H = rows * (ch + title_h) + (rows + 1) * pad
    W = cols * cw + (cols + 1) * pad
    canvas = np.full((H, W, 3), background, dtype=np.uint8)
    for k, p in enumerate(pics):
        r, c = divmod(k, cols)
        y = pad + r * (ch + title_h + pad) + title_h + (ch - p.shape[0]) // 2
        x = pad + c * (cw + pad) + (cw - p.shape[1]) // 2
        canvas[y:y + p.shape[0], x:x + p.shape[1]] = p
    if titles is not None:
        pil = Image.fromarray(canvas)
        draw = ImageDraw.Draw(pil)
        for k, title in enumerate(titles):
            r, c = divmod(k, cols)
            draw.text((pad + c * (cw + pad) + 2, pad + r * (ch + title_h + pad) + 2),
                      str(title), fill=(0, 0, 0), font=font)
        canvas = np.asarray(pil, dtype=np.uint8).copy()
    return canvas


def save_image(image: np.ndarray, path: Union[str, "os.PathLike[str]"]) -> None:
    """Write an (H, W, 3) uint8 picture as PNG, atomically."""
    with atomic_write(path, "wb") as handle:
        Image.fromarray(to_uint8_image(image)).save(handle, format="PNG")


# --------------------------------------------------------------------------- plots
def figure(width: float, height: float):
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches on its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi: Optional[float] = None) -> None:
    """``fig`` laid out tight and written to ``path`` as PNG, atomically."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "tight layout not applied" on crowded axes
        fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=dpi)


def read_jsonl(path: Union[str, "os.PathLike[str]"]) -> List[Dict[str, Any]]:
    """The records of a JSONL file; a truncated last line (a killed run) is skipped."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def plot_training_curves(records: Union[str, "os.PathLike[str]", Iterable[Mapping[str, Any]]],
                         path: Union[str, "os.PathLike[str]"]) -> bool:
    """Plot a run's curves from ``metrics.jsonl`` records into one PNG.

    Panels: each task's loss (and the total) against the iteration, the
    learning rate, and every evaluated metric (one panel per task). Records
    are those the trainer writes: ``{"event": "train", "iter", "losses":
    {task: v}, "loss", "lr"}`` and ``{"event": "eval", "iter", "metrics":
    {task: {name: v}}}``.

    :returns: ``False`` (nothing written) when there is nothing to plot.
    """
    if isinstance(records, (str, os.PathLike)):
        records = read_jsonl(records)
    records = list(records)
    train = [r for r in records if r.get("event") == "train"]
    evals = [r for r in records if r.get("event") == "eval"]
    if not train and not evals:
        return False

    panels = []  # (title, {series name: (xs, ys)}, log-scale)
    if train:
        losses: Dict[str, tuple] = {}
        for r in train:
            items = dict(r.get("losses", {}))
            if _finite(r.get("loss")):
                items["total"] = r["loss"]
            for name, v in items.items():
                if _finite(v):
                    xs, ys = losses.setdefault(name, ([], []))
                    xs.append(r["iter"])
                    ys.append(v)
        if losses:
            panels.append(("loss", losses, True))
        lr = [(r["iter"], r["lr"]) for r in train if _finite(r.get("lr"))]
        if lr:
            panels.append(("learning rate", {"lr": tuple(map(list, zip(*lr)))}, False))
    metric_panels: Dict[str, Dict[str, tuple]] = {}
    for r in evals:
        for task, values in r.get("metrics", {}).items():
            if not isinstance(values, Mapping):
                continue
            for name, v in values.items():
                # per-class figures ("AP/chair") stay out; -1 is COCO's "no such object"
                if _finite(v) and "/" not in str(name) and not (
                        v == -1 and str(name)[:2] in ("AP", "AR")):
                    xs, ys = metric_panels.setdefault(task, {}).setdefault(name, ([], []))
                    xs.append(r["iter"])
                    ys.append(v)
    for task, series in metric_panels.items():
        if len(series) > 8:  # keep panels readable: the first 8 metrics in their order
            series = dict(list(series.items())[:8])
        panels.append((f"val {task}", series, False))
    if not panels:
        return False

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = figure(5.0 * cols, 3.4 * rows)
    for k, (title, series, log) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, label=name)
        if log and all(y > 0 for _, ys in series.values() for y in ys):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


def plot_per_class_ap(per_class: Mapping[str, float], path: Union[str, "os.PathLike[str]"],
                      title: str = "per-class AP") -> bool:
    """A horizontal bar chart of AP per class name (NaN classes, absent from
    the ground truth, are shown as 'n/a'). :returns: ``False`` when empty."""
    if not per_class:
        return False
    names = list(per_class)
    # None / NaN / negative (COCO's -1: class absent from the ground truth) -> n/a
    values = [float(per_class[n]) if per_class[n] is not None and float(per_class[n]) >= 0
              else float("nan") for n in names]
    fig = figure(7.0, max(2.5, 0.32 * len(names) + 1.0))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))
    shown = [0.0 if not math.isfinite(v) else v for v in values]
    colors = [np.array(class_color(i + 1)) / 255.0 for i in range(len(names))]
    ax.barh(y, shown, color=colors)
    finite = [v for v in values if math.isfinite(v)]
    right = max(1.0 if not finite else min(1.0, max(finite) * 1.25 + 0.05), 0.1)
    for yi, v in zip(y, values):
        ax.text((v if math.isfinite(v) else 0.0) + 0.01 * right, yi,
                f"{v:.3f}" if math.isfinite(v) else "n/a", va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0.0, right)
    ax.set_xlabel("AP")
    mean = float(np.mean(finite)) if finite else float("nan")
    ax.set_title(f"{title} (mean {mean:.3f})")
    ax.grid(True, axis="x", alpha=0.3)
    save_figure(fig, path)
    return True
