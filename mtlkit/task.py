"""The task interface: what a task plugin (primary or auxiliary) provides.

A task is registered by class (``registry.add("depth", DepthTask)``); the
model instantiates it once per model as ``cls(name, options)``: the task's
options of the resolved config (:class:`mtlkit.options.Options`, checked and
merged over :data:`COMMON_DEFAULTS` and :attr:`Task.defaults`), taken as they
are; a task made by hand from a plain dict checks it with the same rule.

Engine-facing methods (see ``docs/architecture.md``): :meth:`loss`,
:meth:`postprocess`, :meth:`new_metric`, :meth:`visualize`. How the head is
built depends on the role: the primary task builds its head on the fused
source maps (:meth:`build_head`); auxiliary tasks are assembled by the ROCK
block from what :class:`AuxiliaryTask` declares (task channels, intensive-pooling
predictor, plain flat-MTL head).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.errors import DataError
from mtlkit.options import Schema

PRIMARY = "primary"
AUXILIARY = "auxiliary"

#: options every task accepts, whatever its own defaults
COMMON_DEFAULTS: Dict[str, Any] = {"weight": 1.0}
#: ranges of options every task that has them shares
COMMON_RANGES: Dict[str, str] = {"num_classes": ">= 1", "weight": ">= 0"}

#: prefix of the batch keys holding a sensor's measurement of a modality, in
#: the format of the label: ``sensor_depth`` / ``sensor_depth_mask`` beside
#: ``depth`` / ``depth_mask``, ``has["sensor_depth"]`` beside ``has["depth"]``
#: (:func:`sensor_view`, :meth:`AuxiliaryTask.measured_map`)
SENSOR_PREFIX = "sensor_"


class Task(abc.ABC):
    """Base class of every task plugin.

    Class attributes a plugin sets:

    * ``role``: ``"primary"`` (exactly one per model; detection) or ``"auxiliary"``.
    * ``batch_keys``: the batch keys its loss and metric read (e.g.
      ``("depth", "depth_mask")``); datasets that lack them mark the sample
      with ``has[name] = False``.
    * ``defaults``: option name -> default value; ``choices``, ``ranges``,
      ``lengths`` and a class method ``check_options(options, where)``: the
      other facets of the one option rule (:mod:`mtlkit.options`).
    """

    role: ClassVar[str] = AUXILIARY
    batch_keys: ClassVar[Tuple[str, ...]] = ()
    defaults: ClassVar[Dict[str, Any]] = {}
    #: allowed values of string options, e.g. ``{"loss": ("berhu", "huber", "l1")}``
    choices: ClassVar[Dict[str, Sequence[Any]]] = {}
    #: number ranges of options checked by the config, e.g. ``{"match_iou": "[0, 1]"}``
    ranges: ClassVar[Dict[str, str]] = {}
    #: primary task: the options that are post-processing settings; their one
    #: home is the config's ``eval`` section (defaults and ranges read from here)
    postprocess_options: ClassVar[Tuple[str, ...]] = ()
    #: the option :mod:`mtlkit.commands.detect` replaces by ``--score-threshold``
    #: when it draws pictures (None: the pictures have no threshold)
    picture_threshold_option: ClassVar[Optional[str]] = None
    #: whether :meth:`visualize` draws on the original image (in original
    #: pixels after :meth:`rescale`) rather than on the network input
    draws_on_original: ClassVar[bool] = False
    #: how the task's dense maps move under geometric transforms, by batch key:
    #: ``"vector"`` = a (3, H, W) unit-vector field whose x component is negated
    #: by a horizontal flip and which is renormalised after a resize. Other
    #: maps are resampled as they are (:mod:`mtlkit.data.transforms`).
    map_kinds: ClassVar[Dict[str, str]] = {}
    #: name of a task whose ``has`` flags apply when the batch carries none for
    #: this task (e.g. targets computed from the primary task's boxes)
    derived_from: ClassVar[Optional[str]] = None
    #: the dataset attribute listing this task's label names (e.g. ``"scenes"``):
    #: before a run writes anything, the data's names are checked against the
    #: task's ``names`` / ``num_classes`` options and the checkpoint's
    #: (:func:`mtlkit.engine.checks.check_label_names`)
    label_names_attr: ClassVar[Optional[str]] = None
    #: the metrics a summary table shows for this task: metric name (a key of
    #: its metric's ``compute()``) -> (column title, factor applied for display)
    headline_metrics: ClassVar[Dict[str, Tuple[str, float]]] = {}
    #: whether the label is measured with the image rather than annotated
    #: (depth from an RGB-D sensor, normals computed from it): test-time
    #: adaptation keeps it on unlabelled target images and minimises this
    #: task's loss there (:mod:`mtlkit.adaptation`); annotations (boxes, scene
    #: classes) are dropped
    sensor: ClassVar[bool] = False

    def __init__(self, name: str, options: Optional[Mapping[str, Any]] = None):
        self.name = name
        #: the task's own (editable) copy of its options, complete
        self.options: Dict[str, Any] = dict(self.schema().options(options, f"model.tasks.{name}"))
        self.weight = float(self.options["weight"])

    @classmethod
    def schema(cls) -> Schema:
        """What the task's options are checked and completed against: its own
        facets plus :data:`COMMON_DEFAULTS` / :data:`COMMON_RANGES`."""
        return Schema.of(cls, COMMON_DEFAULTS, COMMON_RANGES)

    # -- model side ----------------------------------------------------------
    def build_head(self, in_channels: Sequence[int], **context: Any) -> nn.Module:
        """Primary task: the module mapping the (fused) source maps to the raw
        prediction. ``in_channels`` has one entry per backbone source map (the
        last is X~); ``context`` carries e.g. ``image_size``."""
        raise NotImplementedError(f"task '{self.name}' ({type(self).__name__}) builds no head")

    @abc.abstractmethod
    def loss(self, prediction: Any, batch: Dict[str, Any]) -> torch.Tensor:
        """Scalar loss, unweighted, masked per sample by ``batch["has"][self.name]``
        (B,) and per pixel by the task's validity mask. A batch with no labelled
        sample gives an exact 0 connected to the graph (``prediction.sum() * 0``),
        never NaN."""

    @abc.abstractmethod
    def postprocess(self, prediction: Any, image_size: Tuple[int, int]) -> Any:
        """Raw prediction of a batch -> prediction in user units for the batch."""

    @abc.abstractmethod
    def new_metric(self) -> Any:
        """A fresh metric accumulator: ``update(postprocessed, batch)``,
        ``compute() -> dict[str, float]``, ``merge(other)``; picklable."""

    def visualize(self, prediction: Any, index: int, sample: Dict[str, Any]) -> Optional[np.ndarray]:
        """A picture (H, W, 3) uint8 of the postprocessed prediction of sample
        ``index`` of the batch, or ``None`` when the task has nothing to draw."""
        return None

    # -- what the engine and the commands ask for (all optional) -------------
    def sample_mask(self, batch: Dict[str, Any], batch_size: int,
                    device: Optional[torch.device] = None) -> torch.Tensor:
        """(B,) bool: which samples carry this task's label (:func:`labelled`;
        the label is in ``batch[batch_keys[0]]``)."""
        return labelled(batch, self.name, batch_size, self.derived_from, device,
                        key=self.batch_keys[0] if self.batch_keys else None)

    def class_logits(self, prediction: Any) -> Optional[torch.Tensor]:
        """Primary task: the raw prediction's class logits (B, N, C), one
        distribution per anchor / prior (class 0 the background), for an
        entropy objective at test time (TENT, :mod:`mtlkit.adaptation`);
        None when the task has no class posterior."""
        return None

    def rescale(self, prediction: Any, from_size: Tuple[int, int],
                to_sizes: Sequence[Tuple[int, int]]) -> Any:
        """The postprocessed prediction of a batch made at ``from_size`` (H, W)
        mapped to each sample's own size ``to_sizes[i]`` (e.g. boxes to the
        original image's pixels). Default: unchanged (dense maps stay at the
        network size)."""
        return prediction

    def record(self, prediction: Any, index: int, threshold: Optional[float] = None,
               class_names: Optional[Sequence[str]] = None) -> Optional[Dict[str, Any]]:
        """A JSON-able record of sample ``index``'s postprocessed prediction
        (``mtlkit detect``'s predictions.json), or None; ``threshold`` a
        score threshold given by the user, ``class_names`` the data's classes
        (from the checkpoint) for a task without names of its own."""
        return None

    def results(self, prediction: Any, metas: Sequence[Mapping[str, Any]],
                image_size: Tuple[int, int]) -> Optional[List[Dict[str, Any]]]:
        """Records of a postprocessed batch for the run's results file (the
        primary task's, e.g. COCO results for ``detections.json``), or None
        when the task writes none. ``metas[i]`` holds ``id`` / ``orig_size``."""
        return None

    def per_class(self, metric: Any) -> Dict[str, float]:
        """Per-class figures of this task's merged metric (class name -> value),
        written as ``per_class_ap`` and plotted; empty when there are none."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, role={self.role!r}, weight={self.weight})"


# ---------------------------------------------------------------------------
# Auxiliary tasks
# ---------------------------------------------------------------------------


class AuxiliaryTask(Task):
    """Base class of an auxiliary task: what the ROCK block needs to build it
    generically (see :class:`mtlkit.models.rock.RockBlock`).

    An auxiliary prediction has :attr:`out_channels` channels ``k`` (scene: the
    number of scene classes, depth: 1, normals: 3). The block gives every task
    a *task map* computed from the (encoded) features X:

    * ``pooling: intensive`` (ROCK): a 1x1 conv to :meth:`intensive_channels`
      = ``k * group`` channels, read by :meth:`intensive_pool` (the mean over
      each group of ``group`` consecutive channels, then :meth:`readout`);
    * ``pooling: plain`` (flat MTL): :meth:`build_plain_head` maps the features
      to ``k`` channels, read by :meth:`readout` directly.

    The task map (before pooling) is also what the task's decoder feeds back
    into X when the fusion uses decoded features.

    Class attributes / options a subclass sets:

    * ``defaults`` must contain ``group`` (int, channels per predicted channel
      for intensive pooling; 1 means one channel per output).
    * ``is_regression``: used by the ``uncertainty`` weighting (Kendall et al.
      use 1/2 factors for regression losses).
    * ``derived_from`` (see :class:`Task`): e.g. a task whose targets are
      computed from the boxes names the primary task.
    """

    role: ClassVar[str] = AUXILIARY
    is_regression: ClassVar[bool] = False
    defaults: ClassVar[Dict[str, Any]] = {"group": 1}

    # -- what the block builds --------------------------------------------------
    @property
    def out_channels(self) -> int:
        """Channels ``k`` of the prediction map (before :meth:`readout`)."""
        raise NotImplementedError

    @property
    def group(self) -> int:
        return int(self.options["group"])

    def intensive_channels(self) -> int:
        """Channels of the task map read by intensive pooling."""
        return self.out_channels * self.group

    def intensive_pool(self, task_map: torch.Tensor) -> torch.Tensor:
        """(B, k*group, h, w) task map -> raw prediction: mean over each group of
        ``group`` consecutive channels -> (B, k, h, w), then :meth:`readout`."""
        b, c, h, w = task_map.shape
        g = self.group
        if g > 1:
            task_map = task_map.view(b, c // g, g, h, w).mean(dim=2)
        return self.readout(task_map)

    def readout(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, k, h, w) -> the raw prediction (identity by default; scene takes
        the spatial mean, normals L2-normalise)."""
        return maps

    # -- measured inputs (docs/models.md, "Measured modalities") ---------------
    def measured_map(self, batch: Mapping[str, Any], size: Optional[Tuple[int, int]],
                     device: Optional[torch.device] = None
                     ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """This task's label in ``batch`` as a map the block can decode in place
        of the prediction (a sensor's measurement of the modality, given in the
        label's format: ``batch`` is a :func:`sensor_view`).

        :param size: (h, w) of the map, or None for the size of the label itself.
        :returns: ``(map (B, k, h, w) float, valid (B, 1, h, w) bool)`` with
            ``k = out_channels`` in the units intensive pooling averages (what
            :meth:`readout` reads: log-depth for depth, unit vectors for normals,
            logits for the scene), ``valid`` False where the sample lacks the
            label (``has``) or the pixel is masked; or None when ``batch``
            carries no such label at all.

        A task that can be measured overrides this; the base class cannot
        (:meth:`can_be_measured` is False and a config asking for it is refused)."""
        raise NotImplementedError(f"task '{self.name}' ({type(self).__name__}) has no measured input")

    @classmethod
    def can_be_measured(cls) -> bool:
        """Whether the task turns its label into a map (:meth:`measured_map`)."""
        return cls.measured_map is not AuxiliaryTask.measured_map

    def build_plain_head(self, in_channels: int, hidden: int) -> nn.Module:
        """Flat-MTL head: features (B, in_channels, h, w) -> (B, k, h, w).

        Default: 3x3 conv to ``hidden`` + BN + ReLU, then a 1x1 conv to ``k``
        (``hidden == 0``: a single 1x1 conv)."""
        if hidden <= 0:
            return nn.Conv2d(in_channels, self.out_channels, 1)
        return nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, self.out_channels, 1),
        )


def labelled(batch: Mapping[str, Any], task: str, batch_size: int, derived_from: Optional[str] = None,
             device: Optional[torch.device] = None, key: Optional[str] = None) -> torch.Tensor:
    """The one label-present rule, shared by the losses and the metrics.

    (B,) bool: which samples of ``batch`` carry ``task``'s label, read from
    ``batch["has"][task]``; when the batch has no entry for the task, that of
    ``derived_from`` (a task whose labels this one's are computed from); when
    neither, every sample. ``key`` is the batch key holding the label (the
    task's first :attr:`Task.batch_keys`): a batch without it carries no
    label for the task (a dataset without that modality, e.g. COCO images
    without depth), unless its flags say some sample does, which is a
    :class:`~mtlkit.errors.DataError` (the loss would silently be 0). Raises
    ``ValueError`` when the flags do not have B entries."""
    has = batch.get("has") or {}
    flags = has.get(task)
    if flags is None and derived_from is not None:
        flags = has.get(derived_from)
    missing = key is not None and batch.get(key) is None
    if flags is None:
        fill = not missing
        return torch.full((batch_size,), fill, dtype=torch.bool, device=device)
    flags = torch.as_tensor(flags, dtype=torch.bool, device=device).reshape(-1)
    if flags.numel() != batch_size:
        raise ValueError(f"batch['has'][{task!r}] has {flags.numel()} entries for a batch of {batch_size}")
    if missing and bool(flags.any()):
        raise DataError(f"batch['has'][{task!r}] marks {int(flags.sum())} of {batch_size} sample(s) as "
                        f"labelled but the batch has no {key!r}: the dataset must give each labelled "
                        f"sample its {key!r} (or mark it has[{task!r}] = False)")
    return flags


def sensor_view(batch: Mapping[str, Any], keys: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The sensor's measurements of a batch in the format of its labels: every
    ``sensor_<key>`` as ``<key>`` (``keys``: only those label keys), ``has``
    entries ``sensor_<task>`` as ``<task>``, and ``image`` (for its size).
    A task's :meth:`AuxiliaryTask.measured_map` reads this view exactly as
    its loss reads the labels."""
    view: Dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(key, str) and key.startswith(SENSOR_PREFIX):
            name = key[len(SENSOR_PREFIX):]
            if keys is None or name in keys:
                view[name] = value
    has = batch.get("has") or {}
    view["has"] = {k[len(SENSOR_PREFIX):]: v for k, v in has.items()
                   if isinstance(k, str) and k.startswith(SENSOR_PREFIX)}
    if "image" in batch:
        view["image"] = batch["image"]
    return view


def zero_loss(prediction: torch.Tensor) -> torch.Tensor:
    """An exact 0 still connected to the graph of ``prediction`` (no NaN)."""
    return prediction.sum() * 0.0


def downsample_masked(values: torch.Tensor, mask: Optional[torch.Tensor],
                      size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Valid-average pooling of a dense target to a prediction's resolution.

    :param values: (B, C, H, W) target.
    :param mask: (B, 1, H, W) bool validity, or ``None`` (all valid).
    :param size: (h, w) output size.
    :returns: ``(values (B, C, h, w), mask (B, 1, h, w) bool)``: each output cell
        is the mean of the *valid* input pixels that fall in it (area pooling,
        cells overlap when H/h is not an integer, like ``adaptive_avg_pool2d``);
        a cell without any valid pixel is invalid (and its value 0).
    """
    values = values.float()
    if mask is None:
        mask = torch.ones_like(values[:, :1], dtype=torch.bool)
    if tuple(values.shape[-2:]) == tuple(size):
        m = mask.bool()
        return values * m, m
    weight = mask.to(values.dtype)
    pooled_weight = F.adaptive_avg_pool2d(weight, size)
    pooled = F.adaptive_avg_pool2d(values * weight, size)
    valid = pooled_weight > 0
    out = torch.where(valid, pooled / pooled_weight.clamp_min(1e-12), torch.zeros_like(pooled))
    return out, valid
