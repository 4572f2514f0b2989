"""The ROCK block: auxiliary tasks predicted from X and fed back into it.

Built generically from the auxiliary tasks (:class:`mtlkit.task.AuxiliaryTask`)
and a fusion plugin (:class:`mtlkit.fusion.Fusion`)::

    X (B, C, h, w) ─► Enc ─► F ─┬─► map_t = Head_t(F) ─► prediction_t = pool_t(map_t)
                                └─► Dec_t(map_t) (B, C, h, w) ─► fusion(X, Dec) = X~

Options (config section ``model.block``, see :attr:`RockBlock.defaults`):

* ``encoder`` (bool, true): the shared encoder, 1x1 conv C -> ``channels`` and
  3x3 conv ``channels`` -> ``channels`` (BN + ReLU each). Off: the heads read X.
* ``channels`` (int, 512): encoder width.
* ``separable`` (bool, false): the encoder's 3x3 is depthwise-separable
  (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU).
* ``pooling`` ("intensive"): "intensive" = a 1x1 conv to the task's
  ``intensive_channels()`` read by its ``intensive_pool`` (ROCK); "plain" =
  the task's ``build_plain_head`` (a conv head to the prediction channels,
  flat MTL).
* ``plain_hidden`` (int, 256): hidden width of the plain heads (0: one 1x1 conv).
* ``decoder`` ("per_task"): "per_task" = one 1x1 conv + BN + ReLU per task
  from its map back to C (ROCK); "shared" = the task maps concatenated, one
  1x1 conv + BN + ReLU to ``shared_channels``, then one 1x1 conv + BN + ReLU
  to C (a single decoded map, named "shared"; ``shared_channels: 0`` decodes
  the concatenation straight to C).
* ``shared_channels`` (int, 256).
* ``fold_bn`` (bool, true): in eval mode without autograd, BN is folded into
  the preceding conv (weights cached until a parameter or statistic changes).

Decoders are built only when the fusion uses decoded maps (not for ``none``).

Measured inputs (``model.measured.block``, :mod:`mtlkit.models.measured`):
``block(x, sensor, present)`` decodes, for each measured task, the sensor's
map where a sample has it instead of the predicted task map (or beside it);
the predictions (and so the auxiliary losses) are the block's own either way.
The block is given a factory, ``measured(map_channels=, out_channels=, fold=)``
-> the module that does it (:class:`mtlkit.models.measured.MeasuredBlockInput`:
its ``tasks``, ``mode``, ``fused_names()``, ``decode_beside()`` and call), so
that it names no measured-input code itself.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.errors import ConfigError
from mtlkit.options import component_options
from mtlkit.schema import BLOCK_CHOICES, BLOCK_DEFAULTS, BLOCK_RANGES
from mtlkit.task import AuxiliaryTask
from mtlkit.utils.batchnorm import batchnorm_affine


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """A 1x1 convolution as one matrix product: (B, Cin, H, W) -> (B, Cout, H, W).

    Used on the eval fast path: on CPU, ``F.conv2d`` runs batch-1 1x1 convs
    through an im2col copy of the input; a GEMM on the (Cin, H*W) view of the
    (contiguous) input avoids it."""
    b, cin, h, w = x.shape
    w2d = weight.reshape(weight.shape[0], cin)
    flat = x.reshape(b, cin, h * w)
    if b == 1:
        out = torch.mm(w2d, flat[0]) if bias is None else torch.addmm(bias.unsqueeze(1), w2d, flat[0])
        return out.view(1, -1, h, w)
    out = torch.matmul(w2d, flat)
    if bias is not None:
        out += bias.view(1, -1, 1)
    return out.view(b, -1, h, w)


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1 \
        and conv.padding == (0, 0)


class ConvBNReLU(nn.Module):
    """Conv (no bias) + BN + ReLU. In eval mode under ``no_grad`` the BN is
    folded into the conv (one conv with bias, then an in-place ReLU); the
    folded weights are cached and recomputed when any of the parameters or
    running statistics change (tracked with the tensors' version counters)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, groups: int = 1, fold: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.fold = fold
        self._cache: Optional[Tuple[tuple, torch.Tensor, torch.Tensor]] = None

    def _key(self) -> tuple:
        tensors = (self.conv.weight, self.bn.weight, self.bn.bias, self.bn.running_mean,
                   self.bn.running_var)
        return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)

    def folded(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the conv with the eval-mode BN folded in."""
        key = self._key()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        bn = self.bn
        scale, bias = batchnorm_affine(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
        weight = self.conv.weight * scale.view(-1, 1, 1, 1)
        self._cache = (key, weight, bias)
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold and not self.training and not torch.is_grad_enabled():
            weight, bias = self.folded()
            conv = self.conv
            if _is_pointwise(conv) and x.is_contiguous():
                return conv1x1(x, weight, bias).relu_()
            return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation,
                            conv.groups).relu_()
        return torch.relu(self.bn(self.conv(x)))

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)


class RockBlock(nn.Module):
    """The residual auxiliary block; see the module docstring for the options.

    :param in_channels: C, channels of X.
    :param tasks: ordered name -> :class:`AuxiliaryTask` (at least one).
    :param fusion_cls: a :class:`Fusion` subclass.
    :param fusion_options: its options (the fusion merges them over its ``defaults``).
    :param options: the block options (checked and merged over :attr:`defaults`).

    ``block(x)`` with x (B, C, h, w) -> ``(x_tilde (B, C, h, w), {task: raw
    prediction})``.
    """

    #: the block's options: their one home is :mod:`mtlkit.schema` (``model.block``)
    defaults: ClassVar[Dict[str, Any]] = BLOCK_DEFAULTS
    choices: ClassVar[Dict[str, Tuple[str, ...]]] = BLOCK_CHOICES
    ranges: ClassVar[Dict[str, str]] = BLOCK_RANGES

    def __init__(self, in_channels: int, tasks: Mapping[str, AuxiliaryTask], fusion_cls: type,
                 fusion_options: Optional[Mapping[str, Any]] = None,
                 measured: Optional[Callable[..., nn.Module]] = None, **options: Any):
        super().__init__()
        opts = dict(component_options(RockBlock, options, "model.block"))
        self.options = opts
        if not tasks:
            raise ConfigError("model.block: the ROCK block needs at least one auxiliary task")
        self.tasks = dict(tasks)
        self.in_channels = int(in_channels)
        fold = bool(opts["fold_bn"])

        # Shared encoder.
        width = int(opts["channels"]) if opts["encoder"] else self.in_channels
        if opts["encoder"]:
            layers = [ConvBNReLU(self.in_channels, width, 1, fold=fold)]
            if opts["separable"]:
                layers += [ConvBNReLU(width, width, 3, groups=width, fold=fold),
                           ConvBNReLU(width, width, 1, fold=fold)]
            else:
                layers.append(ConvBNReLU(width, width, 3, fold=fold))
            self.encoder: nn.Module = nn.Sequential(*layers)
        else:
            self.encoder = nn.Identity()

        # Per-task heads (features -> task map).
        self.intensive = opts["pooling"] == "intensive"
        self.heads = nn.ModuleDict()
        map_channels: Dict[str, int] = {}
        for name, task in self.tasks.items():
            if self.intensive:
                map_channels[name] = task.intensive_channels()
                self.heads[name] = nn.Conv2d(width, map_channels[name], 1)
            else:
                map_channels[name] = task.out_channels
                self.heads[name] = task.build_plain_head(width, int(opts["plain_hidden"]))
        self.map_channels = map_channels

        # Decoders (task maps -> C), only when the fusion reads them.
        self.decoders = nn.ModuleDict()
        self.shared_decoder: Optional[nn.Module] = None
        uses_decoded = fusion_cls.uses_decoded
        if uses_decoded and opts["decoder"] == "per_task":
            for name, cin in map_channels.items():
                self.decoders[name] = ConvBNReLU(cin, self.in_channels, 1, fold=fold)
            names = list(map_channels)
        elif uses_decoded:
            total = sum(map_channels.values())
            mid = int(opts["shared_channels"])
            if mid > 0:
                self.shared_decoder = nn.Sequential(
                    ConvBNReLU(total, mid, 1, fold=fold), ConvBNReLU(mid, self.in_channels, 1, fold=fold))
            else:
                self.shared_decoder = ConvBNReLU(total, self.in_channels, 1, fold=fold)
            names = ["shared"]
        else:
            names = []
        # Measured maps in place of the predictions, or beside them (built
        # after the rest, so that without them the initial weights are those of before).
        self.measured: Optional[nn.Module] = None
        if measured is not None:
            self.measured = measured(map_channels=map_channels, out_channels=self.in_channels, fold=fold)
            names = names + self.measured.fused_names()
        self.fusion = fusion_cls(self.in_channels, names, **(fusion_options or {}))

    def _decoded(self, maps: Dict[str, torch.Tensor]) -> Iterator[Tuple[str, torch.Tensor]]:
        if self.shared_decoder is not None:
            yield "shared", self.shared_decoder(torch.cat(list(maps.values()), dim=1))
            return
        for name, decoder in self.decoders.items():
            yield name, decoder(maps[name])

    def forward(self, x: torch.Tensor, sensor: Optional[Mapping[str, Any]] = None,
                present: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """``x`` (B, C, h, w) -> (X~, {task: raw prediction}). ``sensor``: a
        :func:`mtlkit.task.sensor_view` of the batch (measured maps are decoded
        where given), ``present`` (B,) bool: which samples may use them (None: all)."""
        features = self.encoder(x)
        maps: Dict[str, torch.Tensor] = {}
        predictions: Dict[str, torch.Tensor] = {}
        beside: List[Tuple[str, torch.Tensor]] = []
        measured = self.measured if sensor is not None else None
        fast = not self.training and not torch.is_grad_enabled() and features.is_contiguous()
        for name, task in self.tasks.items():
            head = self.heads[name]
            if fast and isinstance(head, nn.Conv2d) and _is_pointwise(head):
                task_map = conv1x1(features, head.weight, head.bias)
            else:
                task_map = head(features)
            predictions[name] = task.intensive_pool(task_map) if self.intensive else task.readout(task_map)
            if measured is not None and name in measured.tasks:
                if measured.mode == "beside":
                    decoded = measured.decode_beside(name, task_map, sensor, present)
                    if decoded is not None:
                        beside.append((f"{name}@sensor", decoded))
                else:
                    task_map = measured(name, task_map, sensor, present)
            maps[name] = task_map
        del features
        if not self.fusion.uses_decoded:
            return self.fusion(x, iter(())), predictions
        if beside:
            return self.fusion(x, itertools.chain(self._decoded(maps), beside)), predictions
        return self.fusion(x, self._decoded(maps)), predictions
