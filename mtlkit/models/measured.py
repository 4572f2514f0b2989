"""Measured modalities as inputs of the model (a depth sensor at test time).

A task that can be measured (:meth:`mtlkit.task.AuxiliaryTask.measured_map`)
turns a sensor's reading of its modality (batch keys ``sensor_<key>``, read
through :func:`mtlkit.task.sensor_view`) into a map. The config section
``model.measured`` (its options and defaults: :data:`mtlkit.schema.MEASURED`,
checked against the model at validation, :mod:`mtlkit.resolved`) says where
such maps go:

* ``block``: auxiliary tasks whose measured map the ROCK block decodes
  instead of its prediction, cell by cell where the measurement exists (per
  sample ``has``, per pixel the mask and the sensor's holes); elsewhere the
  prediction stands in (:class:`MeasuredBlockInput`).
* ``early_fusion``: tasks whose measured map enters the backbone as extra
  input channels beside RGB (an RGB-D detector), 0 where missing
  (:class:`EarlyFusion`); the backbone must accept extra channels
  (:meth:`mtlkit.backbone.Backbone.add_input_channels`).
* ``p_train``: in training, each sample uses its measurements with this
  probability and the predictions otherwise (one draw per sample, shared by
  the block and early fusion), so one model learns to run with and without
  the sensor. At evaluation a measurement is used wherever it is given.
* ``mode``: ``replace`` = the measured map takes the predicted map's place
  at its decoder; ``beside`` = the predicted maps are decoded as always and
  each measured map has a decoder of its own whose output, 0 where there is
  no measurement, is one more term of the fusion (without a sensor the block
  is exactly ROCK).
* ``encoder``: how a measured map reaches its decoder in the block:
  ``resize`` = averaged down to X's resolution (the task's own rule: log-depth
  averaged, normals renormalised) and decoded exactly like the prediction;
  ``conv`` = a small convolutional encoder of its own reads it at the input
  resolution (map + validity, stride-2 3x3 convs down to X's size) and gives
  the task map the decoder reads (:class:`MeasuredEncoder`).

Without a ``model.measured`` section (or with both lists empty) nothing here
is built and the model computes exactly what it computed before.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.errors import ConfigError, DataError
from mtlkit.models.rock import ConvBNReLU
from mtlkit.task import AuxiliaryTask, sensor_view


def measured_tasks(measured: Mapping[str, Any]) -> List[str]:
    """Every task the complete ``model.measured`` options
    (:attr:`mtlkit.resolved.ModelSpec.measured`) read a measurement of
    (block first, then early fusion, without repeats)."""
    names: List[str] = []
    for name in list(measured["block"]) + list(measured["early_fusion"]):
        if name not in names:
            names.append(name)
    return names


def draw_present(batch_size: int, p_train: float, training: bool,
                 device: torch.device) -> Optional[torch.Tensor]:
    """(B,) bool: which samples use their measurements in this forward pass;
    None means all of them (evaluation, or ``p_train`` 1: no random draw)."""
    if not training or p_train >= 1.0:
        return None
    return torch.rand(batch_size, device=device) < p_train


class MeasuredEncoder(nn.Module):
    """A measured map at the input resolution -> a task map at X's resolution.

    ``(map (B, k, H, W), valid (B, 1, H, W))`` -> (B, ``out_channels``, h, w):
    the map (0 where invalid) and the validity as k + 1 channels, then
    ``stages`` stride-2 3x3 convs + ReLU of ``width`` channels and a 1x1 conv
    to ``out_channels`` (no normalisation: the decoder's BN follows); the
    result is resized to (h, w) when the strides do not land on it exactly.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, stages: int):
        super().__init__()
        layers: List[nn.Module] = []
        cin = in_channels + 1
        for _ in range(max(1, stages)):
            layers += [nn.Conv2d(cin, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            cin = width
        layers.append(nn.Conv2d(width, out_channels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, values: torch.Tensor, valid: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        x = torch.cat([values * valid, valid.to(values.dtype)], dim=1)
        out = self.net(x)
        if tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=False)
        return out


def repeat_groups(values: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, k, h, w) -> (B, channels, h, w), each channel repeated over its
    group of ``channels / k`` consecutive channels (the layout intensive
    pooling averages, :meth:`mtlkit.task.AuxiliaryTask.intensive_pool`)."""
    k = values.shape[1]
    if channels == k:
        return values
    return values.repeat_interleave(channels // k, dim=1)


class MeasuredBlockInput(nn.Module):
    """The ROCK block's side of ``model.measured.block``. ``mode: replace``
    (:meth:`forward`): for each measured task, the map its decoder reads is the
    measured one where the sample has the measurement (and :func:`draw_present`
    kept it), the predicted task map elsewhere, cell by cell. ``mode: beside``
    (:meth:`decode_beside`): the measured map has a decoder of its own.

    :param tasks: name -> task of the block's measured tasks.
    :param map_channels: name -> channels of the task map its decoder reads.
    :param encoder: ``resize`` or ``conv`` (see the module docstring).
    :param width, stages: of the ``conv`` encoders (stages: log2 of X's stride).
    :param mode: ``replace`` or ``beside``.
    :param out_channels: C, channels of X (the ``beside`` decoders' output).
    :param fold: fold the ``beside`` decoders' BN in eval mode (the block's ``fold_bn``).
    """

    def __init__(self, tasks: Mapping[str, AuxiliaryTask], *, map_channels: Mapping[str, int],
                 encoder: str, width: int, stages: int, mode: str, out_channels: int, fold: bool):
        super().__init__()
        self.tasks = dict(tasks)
        self.map_channels = {n: int(map_channels[n]) for n in self.tasks}
        self.encoder = encoder
        self.mode = mode
        self.encoders = nn.ModuleDict()
        if encoder == "conv":
            for name, task in self.tasks.items():
                self.encoders[name] = MeasuredEncoder(task.out_channels, self.map_channels[name], width, stages)
        self.decoders = nn.ModuleDict()
        if mode == "beside":
            for name in self.tasks:
                self.decoders[name] = ConvBNReLU(self.map_channels[name], int(out_channels), 1, fold=fold)

    def fused_names(self) -> List[str]:
        """Names of the extra decoded maps ``beside`` gives the fusion."""
        return [f"{name}@sensor" for name in self.tasks] if self.mode == "beside" else []

    def measured(self, name: str, predicted: torch.Tensor, sensor: Mapping[str, Any],
                 present: Optional[torch.Tensor]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """The measured task map shaped like ``predicted`` (B, c, h, w) and the
        cells (B, 1, h, w) bool where it is measured (and present), or None."""
        task = self.tasks[name]
        size = tuple(predicted.shape[-2:])
        if self.encoder == "conv":
            got = task.measured_map(sensor, None, predicted.device)
            if got is None:
                return None
            values, valid = got
            measured = self.encoders[name](values.to(predicted.dtype), valid, size)
            cells = F.adaptive_max_pool2d(valid.float(), size) > 0
        else:
            got = task.measured_map(sensor, size, predicted.device)
            if got is None:
                return None
            values, cells = got
            measured = repeat_groups(values, self.map_channels[name])
        if present is not None:
            cells = cells & present.view(-1, 1, 1, 1)
        return measured.to(predicted.dtype), cells

    def forward(self, name: str, predicted: torch.Tensor, sensor: Mapping[str, Any],
                present: Optional[torch.Tensor]) -> torch.Tensor:
        """``mode: replace``: the task map ``name``'s decoder reads:
        ``predicted`` (B, c, h, w) with the measured map in the cells where it exists."""
        got = self.measured(name, predicted, sensor, present)
        if got is None:
            return predicted
        measured, cells = got
        return torch.where(cells, measured, predicted)

    def decode_beside(self, name: str, predicted: torch.Tensor, sensor: Mapping[str, Any],
                      present: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """``mode: beside``: the measured map decoded by its own decoder,
        (B, C, h, w), 0 in the cells without a measurement; None without any."""
        got = self.measured(name, predicted, sensor, present)
        if got is None:
            return None
        measured, cells = got
        decoded = self.decoders[name](torch.where(cells, measured, torch.zeros_like(measured)))
        return decoded * cells.to(decoded.dtype)


class EarlyFusion(nn.Module):
    """``model.measured.early_fusion``: the measured maps of ``tasks`` at the
    input resolution, ``(value - mean) / std`` where valid and 0 elsewhere
    (and for samples :func:`draw_present` dropped, or without a sensor), as
    extra input channels: (B, :attr:`channels`, H, W)."""

    def __init__(self, tasks: Mapping[str, AuxiliaryTask], mean: float, std: float):
        super().__init__()
        self.tasks = dict(tasks)
        self.mean, self.std = float(mean), float(std)
        self.channels = sum(int(t.out_channels) for t in self.tasks.values())

    def forward(self, images: torch.Tensor, sensor: Optional[Mapping[str, Any]],
                present: Optional[torch.Tensor]) -> torch.Tensor:
        b, _, h, w = images.shape
        parts = []
        for task in self.tasks.values():
            got = task.measured_map(sensor, (h, w), images.device) if sensor is not None else None
            if got is None:
                parts.append(images.new_zeros((b, int(task.out_channels), h, w)))
                continue
            values, valid = got
            if present is not None:
                valid = valid & present.view(-1, 1, 1, 1)
            parts.append(torch.where(valid, (values - self.mean) / self.std, torch.zeros_like(values))
                         .to(images.dtype))
        return torch.cat(parts, dim=1)


def measured_inputs(model: nn.Module, batch: Mapping[str, Any],
                    modalities: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Keyword arguments of ``model(images, **...)`` for a batch: ``{"sensor":
    view}`` when the model reads measurements, ``{}`` otherwise (the call is
    then exactly the plain ``model(images)``).

    :param modalities: the measured tasks to use (None: every one the model
        reads; ``[]``: none, the model runs on its predictions as without a
        sensor). A task the model does not read is a :class:`ConfigError`.
    """
    core = getattr(model, "module", model)
    readers: Mapping[str, AuxiliaryTask] = getattr(core, "measured_readers", None) or {}
    if not readers:
        if modalities:
            raise ConfigError(f"--measured {' '.join(modalities)}: the model reads no measured input "
                              "(its config has no model.measured section)")
        return {}
    names = list(readers) if modalities is None else list(modalities)
    unknown = [n for n in names if n not in readers]
    if unknown:
        raise ConfigError(f"--measured {unknown[0]}: the model reads measured {', '.join(readers)} "
                          f"only (model.measured)")
    if not names:
        return {"sensor": None}
    keys = [k for n in names for k in readers[n].batch_keys]
    return {"sensor": sensor_view(batch, keys)}


#: samples :func:`check_sensor_data` looks at, spread over the dataset
SENSOR_PROBES = 8


def check_sensor_data(model: nn.Module, dataset: Any, split: str,
                      modalities: Optional[Sequence[str]] = None) -> None:
    """Refuse, before a run, data that carries none of the measurements the
    model is asked to read (``modalities``; None: all it reads): a few samples
    spread over ``dataset`` are read, and a modality none of them has (no
    ``sensor_<key>`` for any of its task's batch keys) is a :class:`DataError`
    naming the split. (A mix of samples with and without a sensor is fine.)"""
    core = getattr(model, "module", model)
    readers: Mapping[str, AuxiliaryTask] = getattr(core, "measured_readers", None) or {}
    names = [n for n in (list(readers) if modalities is None else modalities) if n in readers]
    if not names or dataset is None or len(dataset) == 0:
        return
    count = len(dataset)
    picks = sorted({min(count - 1, i * count // SENSOR_PROBES) for i in range(SENSOR_PROBES)})
    seen = set()
    for index in picks:
        seen.update(sensor_view(dataset[index]))
    missing = [n for n in names if not any(k in seen for k in readers[n].batch_keys)]
    if missing:
        keys = ", ".join(f"sensor_{k}" for k in readers[missing[0]].batch_keys)
        raise DataError(f"the model reads measured {', '.join(missing)} (model.measured) but the data of split "
                        f"'{split}' carries no {keys} (a synthetic split needs 'sensor: kinect'); use data "
                        "with a sensor, or evaluate without it (--measured none)")


def stages_for_stride(stride: int) -> int:
    """Number of stride-2 stages from the input down to a map of ``stride``."""
    return max(1, int(round(math.log2(max(1, int(stride))))))
