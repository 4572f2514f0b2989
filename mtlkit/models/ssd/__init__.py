"""SSD, the built-in primary task: priors (:mod:`.priors`), extra layers and
multibox head (:mod:`.head`), MultiBox loss (:mod:`.loss`) and the task
itself (:mod:`.task`, ``detection``). Matching, decoding and NMS are the
shared ops of :mod:`mtlkit.ops`."""

from .head import ExtraLayer, ExtraLayers, SSDHead
from .loss import device_targets, multibox_loss, normalised_targets
from .priors import PriorCache, make_priors, prior_scales, priors_per_cell
from .task import DetectionTask, LabelError

__all__ = [
    "DetectionTask",
    "LabelError",
    "ExtraLayer",
    "ExtraLayers",
    "PriorCache",
    "SSDHead",
    "device_targets",
    "make_priors",
    "multibox_loss",
    "normalised_targets",
    "prior_scales",
    "priors_per_cell",
]
