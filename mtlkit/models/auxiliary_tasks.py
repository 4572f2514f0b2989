"""Built-in auxiliary tasks: scene class, depth, surface normals (ROCK's three).

Registered by ``mtlkit_plugins.auxiliary_tasks``. Each is an
:class:`mtlkit.task.AuxiliaryTask`, so the ROCK block builds it generically.

Resolution: predictions are made at feature resolution (e.g. 30x40 for a
480x640 input); the losses compare them with the targets *downsampled* to that
resolution by valid-average pooling (:func:`mtlkit.task.downsample_masked`:
each cell is the mean of the valid pixels falling in it, a cell without valid
pixels is ignored). Depth is averaged in log space, normals are averaged and
re-normalised. ``postprocess`` upsamples the predictions bilinearly to the
input image size.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from mtlkit.metrics import DepthMetric, NormalsMetric, SceneMetric
from mtlkit.models.inputs import check_class_labels, dense_target
from mtlkit.task import AuxiliaryTask, downsample_masked, zero_loss
from mtlkit.viz import colorize_depth, colorize_normals, text_panel


def _select(prediction: Any, index: int) -> torch.Tensor:
    return prediction[index].detach().float().cpu()


def _label_size(batch: Dict[str, Any], key: str, size: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """``size``, or the (H, W) of the batch's ``key`` map."""
    return tuple(size) if size is not None else tuple(batch[key].shape[-2:])


class SceneTask(AuxiliaryTask):
    """Scene classification (one label per image).

    Prediction: (B, S) logits. Intensive pooling: the spatial mean of an
    S-channel task map (one channel per scene class). Loss: cross-entropy over
    the samples with ``has["scene"]``.

    Options:

    * ``weight`` (float, 1.0): loss weight for the ``fixed`` weighting.
    * ``num_classes`` (int, 27): number of scene classes S (NYUv2 has 27).
    * ``group`` (int, 1): task-map channels per scene class for intensive pooling.
    * ``names`` (list or null): scene names, used by ``visualize``.
    """

    batch_keys = ("scene",)
    label_names_attr = "scenes"  # the data's scene names, checked against ``names``
    headline_metrics = {"top1": ("top-1 %", 100.0)}
    defaults = {"num_classes": 27, "group": 1, "names": None}

    @property
    def out_channels(self) -> int:
        return int(self.options["num_classes"])

    def readout(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.mean(dim=(2, 3))

    def loss(self, prediction: torch.Tensor, batch: Dict[str, Any]) -> torch.Tensor:
        keep = self.sample_mask(batch, prediction.shape[0], prediction.device)
        if "scene" not in batch or not bool(keep.any()):
            return zero_loss(prediction)
        target = check_class_labels("scene", batch["scene"], prediction.shape[1], prediction.shape[0], keep)
        return F.cross_entropy(prediction[keep].float(), target.to(prediction.device)[keep])

    def measured_map(self, batch: Dict[str, Any], size: Optional[Tuple[int, int]],
                     device: Optional[torch.device] = None
                     ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """A known scene label as a constant map of confident logits: log 0.9
        for the label, log(0.1 / (S - 1)) for the other classes, (B, S, h, w)
        (``size`` None: the image's size); valid where ``has``."""
        if "scene" not in batch:
            return None
        labels = torch.as_tensor(batch["scene"], device=device).long().reshape(-1)
        if size is None:
            size = tuple(batch["image"].shape[-2:]) if "image" in batch else (1, 1)
        h, w = size
        s = self.out_channels
        off = math.log(0.1 / max(s - 1, 1))
        logits = torch.full((len(labels), s), off, device=device)
        logits[torch.arange(len(labels), device=device), labels.clamp(0, s - 1)] = math.log(0.9)
        keep = self.sample_mask(batch, len(labels), device) & (labels >= 0) & (labels < s)
        return (logits.view(-1, s, 1, 1).expand(-1, s, h, w).contiguous(),
                keep.view(-1, 1, 1, 1).expand(-1, 1, h, w).contiguous())

    def postprocess(self, prediction: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        """(B, S) logits -> (B, S) probabilities."""
        return prediction.float().softmax(dim=1)

    def new_metric(self) -> Any:
        return SceneMetric(task=self.name, key=self.batch_keys[0], derived_from=self.derived_from)

    def record(self, prediction: Any, index: int, threshold: Optional[float] = None,
               class_names: Any = None) -> Dict[str, Any]:
        """``{label, name, score}`` of the most probable scene of sample ``index``."""
        probs = prediction[index].float()
        top = int(probs.argmax())
        names = self.options.get("names")
        return {"label": top, "name": names[top] if names and top < len(names) else None,
                "score": round(float(probs[top]), 5)}

    def visualize(self, prediction: Any, index: int, sample: Dict[str, Any]) -> Optional[np.ndarray]:
        """A text panel of the top-3 scene classes, the size of the sample's image."""
        probs = _select(prediction, index)
        names = self.options.get("names")
        top = torch.argsort(probs, descending=True)[:3].tolist()
        lines = [f"{names[k] if names and k < len(names) else f'scene {k}'}: {float(probs[k]):.2f}"
                 for k in top]
        image = sample.get("image") if isinstance(sample, dict) else None
        height, width = (int(image.shape[-2]), int(image.shape[-1])) if image is not None else (240, 320)
        return text_panel(lines, height, width)


class DepthTask(AuxiliaryTask):
    """Monocular depth, predicted as log-depth at feature resolution.

    Prediction: (B, 1, h, w) log(metres). Intensive pooling: the mean over
    ``group`` channels. ``postprocess`` returns metres at the image size.

    Loss on log depth over the valid cells of the samples with ``has["depth"]``
    (mean over all those cells of the batch):

    * ``berhu`` (reverse Huber): |r| where |r| <= c, (r^2 + c^2) / (2c) beyond,
      with c = ``berhu_c`` * max |r| over the batch's valid cells (not
      differentiated through);
    * ``huber``: Huber with threshold ``huber_delta``;
    * ``l1``: mean absolute error.

    Options: ``weight`` (1.0), ``loss`` ("berhu"), ``berhu_c`` (0.2),
    ``huber_delta`` (1.0), ``group`` (128), ``min_depth`` (1e-3 m: smaller
    depths are invalid), ``vis_max_depth`` (10.0 m: top of the colour map),
    ``colormap`` ("turbo", a matplotlib colormap name).
    """

    is_regression = True
    batch_keys = ("depth", "depth_mask")
    #: measured by the RGB-D sensor with the image: kept on unlabelled target data
    sensor = True
    headline_metrics = {"abs_rel": ("abs-rel", 1.0), "delta1": ("δ<1.25 %", 100.0)}
    defaults = {"loss": "berhu", "berhu_c": 0.2, "huber_delta": 1.0, "group": 128,
                "min_depth": 1e-3, "vis_max_depth": 10.0, "colormap": "turbo"}
    LOSSES = ("berhu", "huber", "l1")
    choices = {"loss": LOSSES}

    @property
    def out_channels(self) -> int:
        return 1

    def targets(self, batch: Dict[str, Any], size: Tuple[int, int], device: torch.device,
                batch_size: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """(log-depth (B, 1, h, w), valid (B, 1, h, w)) at the prediction size."""
        b = torch.as_tensor(batch["depth"]).shape[0] if batch_size is None else batch_size
        depth = dense_target(batch, "depth", b, 1, device).float()
        # an infinite depth is no measurement (as a NaN or negative one): it would make the loss inf
        valid = (depth > float(self.options["min_depth"])) & torch.isfinite(depth)
        if batch.get("depth_mask") is not None:
            valid &= dense_target(batch, "depth_mask", b, 1, device).bool()
        # where, not a product: a NaN depth (invalid, like a negative one) must not make a NaN target
        log_depth = torch.where(valid, torch.log(depth.clamp_min(float(self.options["min_depth"]))), 0.0)
        return downsample_masked(log_depth, valid, size)

    def measured_map(self, batch: Dict[str, Any], size: Optional[Tuple[int, int]],
                     device: Optional[torch.device] = None
                     ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """Measured depth as log-depth (B, 1, h, w), averaged over the valid
        pixels of each cell (:meth:`targets`); holes, masked pixels and samples
        without ``has`` are invalid."""
        if "depth" not in batch:
            return None
        log_depth, valid = self.targets(batch, _label_size(batch, "depth", size), device)
        keep = self.sample_mask(batch, log_depth.shape[0], log_depth.device)
        return log_depth, valid & keep.view(-1, 1, 1, 1)

    def loss(self, prediction: torch.Tensor, batch: Dict[str, Any]) -> torch.Tensor:
        keep = self.sample_mask(batch, prediction.shape[0], prediction.device)
        if "depth" not in batch or not bool(keep.any()):
            return zero_loss(prediction)
        target, valid = self.targets(batch, tuple(prediction.shape[-2:]), prediction.device,
                                     prediction.shape[0])
        valid &= keep.view(-1, 1, 1, 1)
        if not bool(valid.any()):
            return zero_loss(prediction)
        residual = prediction.float()[valid] - target[valid]
        kind = self.options["loss"]
        if kind == "berhu":
            return berhu(residual, float(self.options["berhu_c"]))
        if kind == "huber":
            return F.huber_loss(residual, torch.zeros_like(residual),
                                delta=float(self.options["huber_delta"]))
        return residual.abs().mean()

    def postprocess(self, prediction: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        """(B, 1, h, w) log-depth -> (B, 1, H, W) metres (bilinear in log space)."""
        up = F.interpolate(prediction.float(), size=tuple(image_size), mode="bilinear",
                           align_corners=False)
        return up.exp()

    def new_metric(self) -> Any:
        return DepthMetric(task=self.name, key=self.batch_keys[0],
                           min_depth=float(self.options["min_depth"]), derived_from=self.derived_from)

    def visualize(self, prediction: Any, index: int, sample: Dict[str, Any]) -> Optional[np.ndarray]:
        """Depth colour-mapped over [0, ``vis_max_depth``] metres."""
        depth = _select(prediction, index)[0].numpy()
        return colorize_depth(depth, vmin=0.0, vmax=float(self.options["vis_max_depth"]),
                              cmap=self.options["colormap"])


def berhu(residual: torch.Tensor, c_ratio: float = 0.2) -> torch.Tensor:
    """Mean reverse-Huber loss of a 1-D tensor of residuals.

    c = ``c_ratio`` * max |r| (a constant for autograd); |r| <= c: |r|;
    beyond: (r^2 + c^2) / (2c). All residuals 0 gives 0.
    """
    abs_r = residual.abs()
    c = (c_ratio * abs_r.max()).detach()
    if float(c) <= 0.0:
        return abs_r.mean()
    quadratic = (residual * residual + c * c) / (2.0 * c)
    return torch.where(abs_r <= c, abs_r, quadratic).mean()


class NormalsTask(AuxiliaryTask):
    """Surface normals in the camera frame (x right, y down, z forward).

    Prediction: (B, 3, h, w) unit vectors. Intensive pooling: 3 groups of
    ``group`` channels, the mean within each group, then L2 normalisation.
    Loss over the valid cells of the samples with ``has["normals"]``:
    (1 - cos(n^, n)) + ||n^ - n||^2 with n^ the normalised prediction and n the
    target averaged over the cell and re-normalised.

    Options: ``weight`` (1.0), ``group`` (128).
    """

    is_regression = True
    batch_keys = ("normals", "normals_mask")
    #: computed from the sensor's depth: kept on unlabelled target data
    sensor = True
    headline_metrics = {"mean": ("mean °", 1.0), "within_22.5": ("< 22.5° %", 1.0)}
    defaults = {"group": 128}
    #: x flips with the image; resized maps are renormalised
    map_kinds = {"normals": "vector"}

    @property
    def out_channels(self) -> int:
        return 3

    def readout(self, maps: torch.Tensor) -> torch.Tensor:
        return F.normalize(maps, dim=1, eps=1e-6)

    def targets(self, batch: Dict[str, Any], size: Tuple[int, int], device: torch.device,
                batch_size: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        b = torch.as_tensor(batch["normals"]).shape[0] if batch_size is None else batch_size
        # a NaN / inf vector becomes 0, which the rule below marks invalid
        normals = dense_target(batch, "normals", b, 3, device).float().nan_to_num(0.0, 0.0, 0.0)
        # a sum of squares, not .norm(dim=1): the channel-dim norm of an NCHW
        # tensor takes a slow strided path on CPU (20 ms for 16x3x120x160)
        valid = (normals * normals).sum(dim=1, keepdim=True) > 1e-12
        if batch.get("normals_mask") is not None:
            valid &= dense_target(batch, "normals_mask", b, 1, device).bool()
        pooled, valid = downsample_masked(normals, valid, size)
        norm = (pooled * pooled).sum(dim=1, keepdim=True).sqrt()
        valid &= norm > 1e-6
        return pooled / norm.clamp_min(1e-6), valid

    def measured_map(self, batch: Dict[str, Any], size: Optional[Tuple[int, int]],
                     device: Optional[torch.device] = None
                     ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """Measured normals (B, 3, h, w), averaged over the valid pixels of each
        cell and renormalised (:meth:`targets`); 0 and invalid elsewhere."""
        if "normals" not in batch:
            return None
        normals, valid = self.targets(batch, _label_size(batch, "normals", size), device)
        keep = self.sample_mask(batch, normals.shape[0], normals.device)
        valid = valid & keep.view(-1, 1, 1, 1)
        return normals * valid, valid

    def loss(self, prediction: torch.Tensor, batch: Dict[str, Any]) -> torch.Tensor:
        keep = self.sample_mask(batch, prediction.shape[0], prediction.device)
        if "normals" not in batch or not bool(keep.any()):
            return zero_loss(prediction)
        target, valid = self.targets(batch, tuple(prediction.shape[-2:]), prediction.device,
                                     prediction.shape[0])
        valid = (valid & keep.view(-1, 1, 1, 1))[:, 0]  # (B, h, w)
        if not bool(valid.any()):
            return zero_loss(prediction)
        pred = prediction.float().permute(0, 2, 3, 1)[valid]  # (N, 3)
        true = target.permute(0, 2, 3, 1)[valid]
        return normals_loss(pred, true)

    def postprocess(self, prediction: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        """(B, 3, h, w) -> (B, 3, H, W) unit normals (bilinear + renormalise)."""
        up = F.interpolate(prediction.float(), size=tuple(image_size), mode="bilinear",
                           align_corners=False)
        return F.normalize(up, dim=1, eps=1e-6)

    def new_metric(self) -> Any:
        return NormalsMetric(task=self.name, key=self.batch_keys[0], derived_from=self.derived_from)

    def visualize(self, prediction: Any, index: int, sample: Dict[str, Any]) -> Optional[np.ndarray]:
        """Normals RGB-coded as (n + 1) / 2."""
        return colorize_normals(_select(prediction, index).numpy())


def normals_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean of (1 - cos) + squared distance over (N, 3) unit vectors."""
    cos = (pred * true).sum(dim=1)
    return ((1.0 - cos) + ((pred - true) ** 2).sum(dim=1)).mean()
