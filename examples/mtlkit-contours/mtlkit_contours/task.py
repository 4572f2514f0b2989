"""The ``centres`` auxiliary task: where are the objects' centres?

The target is built from the detection boxes on the fly: at the prediction's
resolution (the feature map, e.g. 15x20), each box puts a Gaussian bump of
peak 1 at its centre, with standard deviations ``sigma`` x the box's width and
height (at least half a cell); overlapping bumps take the maximum. The model
predicts one logit per cell (intensive pooling over ``group`` channels) and is
trained with binary cross-entropy against the soft heatmap.

Because the targets come from the boxes, a sample carries this task exactly
when it carries detection labels (``derived_from = "detection"``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from mtlkit.task import AuxiliaryTask, zero_loss


def centre_heatmap(boxes: Sequence[torch.Tensor], image_size: Tuple[int, int],
                   size: Tuple[int, int], sigma: float = 0.25,
                   device: Optional[torch.device] = None) -> torch.Tensor:
    """Heatmaps of box centres.

    :param boxes: B tensors (N_i, 4) xyxy in pixels of an image of ``image_size`` (H, W).
    :param size: (h, w) of the heatmap.
    :returns: (B, 1, h, w) in [0, 1].
    """
    h, w = size
    H, W = float(image_size[0]), float(image_size[1])
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5).view(h, 1)
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5).view(1, w)
    maps = []
    for b in boxes:
        heat = torch.zeros(h, w, device=device)
        b = torch.as_tensor(b, dtype=torch.float32, device=device).reshape(-1, 4)
        for x0, y0, x1, y1 in b.tolist():
            cx, cy = (x0 + x1) / 2 * w / W, (y0 + y1) / 2 * h / H
            sx = max(sigma * (x1 - x0) * w / W, 0.5)
            sy = max(sigma * (y1 - y0) * h / H, 0.5)
            bump = torch.exp(-((xs - cx) ** 2) / (2 * sx * sx) - ((ys - cy) ** 2) / (2 * sy * sy))
            heat = torch.maximum(heat, bump)
        maps.append(heat)
    return torch.stack(maps).unsqueeze(1) if maps else torch.zeros(0, 1, h, w, device=device)


class CentresTask(AuxiliaryTask):
    """Heatmap of object centres (an auxiliary task derived from the boxes).

    Prediction: (B, 1, h, w) logits. Post-processed: (B, 1, H, W)
    probabilities at the image size.

    Options:

    * ``weight`` (float, 1.0): loss weight.
    * ``group`` (int, 64): channels averaged by intensive pooling.
    * ``sigma`` (float, 0.25): Gaussian standard deviation as a fraction of the
      box size.
    """

    derived_from = "detection"
    batch_keys = ("boxes",)
    defaults = {"group": 64, "sigma": 0.25}

    @property
    def out_channels(self) -> int:
        return 1

    def targets(self, batch: Dict[str, Any], size: Tuple[int, int], device) -> torch.Tensor:
        image_size = tuple(batch["image"].shape[-2:])
        return centre_heatmap(batch["boxes"], image_size, size, float(self.options["sigma"]), device)

    def measured_map(self, batch: Dict[str, Any], size: Optional[Tuple[int, int]],
                     device=None) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """Boxes from another source (a tracker, a previous frame) as centre
        logits (B, 1, h, w): the heatmap of :meth:`targets` clamped to
        [0.01, 0.99] and mapped through the logit, the units the prediction
        is in. ``size`` None: the image's size."""
        if "boxes" not in batch or "image" not in batch:
            return None
        size = tuple(size) if size is not None else tuple(batch["image"].shape[-2:])
        heat = self.targets(batch, size, device).clamp(0.01, 0.99)
        keep = self.sample_mask(batch, heat.shape[0], heat.device)
        valid = keep.view(-1, 1, 1, 1).expand(-1, 1, *size).contiguous()
        return torch.logit(heat), valid

    def loss(self, prediction: torch.Tensor, batch: Dict[str, Any]) -> torch.Tensor:
        keep = self.sample_mask(batch, prediction.shape[0], prediction.device)
        if "boxes" not in batch or not bool(keep.any()):
            return zero_loss(prediction)
        target = self.targets(batch, tuple(prediction.shape[-2:]), prediction.device)
        return F.binary_cross_entropy_with_logits(prediction[keep].float(), target[keep])

    def postprocess(self, prediction: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        up = F.interpolate(prediction.float(), size=tuple(image_size), mode="bilinear",
                           align_corners=False)
        return up.sigmoid()

    def new_metric(self) -> "CentresMetric":
        return CentresMetric(task=self.name, sigma=float(self.options["sigma"]))

    def visualize(self, prediction: Any, index: int, sample: Dict[str, Any]) -> Optional[np.ndarray]:
        from mtlkit.viz import colorize_depth

        heat = prediction[index, 0].detach().float().cpu().numpy()
        return colorize_depth(heat, mask=np.ones_like(heat, dtype=bool), vmin=0.0, vmax=1.0,
                              cmap="magma")


class CentresMetric:
    """``mae``: mean absolute error between the predicted and target heatmaps
    (image resolution); ``hit_rate``: the fraction of box centres where the
    predicted probability is above 0.5."""

    def __init__(self, task: str = "centres", sigma: float = 0.25):
        self.task, self.sigma = task, sigma
        self.abs_err = 0.0
        self.pixels = 0
        self.hits = 0
        self.centres = 0

    def update(self, prediction: torch.Tensor, batch: Dict[str, Any]) -> None:
        prediction = prediction.detach().float().cpu()
        size = tuple(prediction.shape[-2:])
        boxes: List[torch.Tensor] = [torch.as_tensor(b).cpu() for b in batch["boxes"]]
        target = centre_heatmap(boxes, tuple(batch["image"].shape[-2:]), size, self.sigma)
        self.abs_err += float((prediction - target).abs().sum())
        self.pixels += prediction.numel()
        H, W = size
        for i, b in enumerate(boxes):
            for x0, y0, x1, y1 in b.reshape(-1, 4).tolist():
                x = min(max(int((x0 + x1) / 2), 0), W - 1)
                y = min(max(int((y0 + y1) / 2), 0), H - 1)
                self.hits += int(prediction[i, 0, y, x] > 0.5)
                self.centres += 1

    def merge(self, other: "CentresMetric") -> None:
        self.abs_err += other.abs_err
        self.pixels += other.pixels
        self.hits += other.hits
        self.centres += other.centres

    def compute(self) -> Dict[str, float]:
        return {"mae": self.abs_err / max(self.pixels, 1),
                "hit_rate": self.hits / max(self.centres, 1)}
