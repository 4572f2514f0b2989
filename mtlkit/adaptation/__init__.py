"""Carrying a trained model into a new domain (issue 16; docs/adapt.md).

* :mod:`.targets`: a target domain as an overlay on a config's data section;
* :mod:`.adabn`: AdaBN, BatchNorm statistics re-estimated on target images;
* :mod:`.params`: which parameters move; :mod:`.unlabelled`: target batches
  without annotations;
* :mod:`.steps`: the adaptation steps of the training loop (auxiliary losses,
  TENT, AdaBN); :mod:`.hooks`: scores before / after, online prediction;
* :mod:`.run`: ``mtlkit adapt`` (:func:`adapt`).
"""

from .adabn import adabn, batchnorm_layers
from .params import PARAMS
from .run import METHODS, MODES, adapt
from .targets import load_target, parse_target, target_data

__all__ = ["adabn", "batchnorm_layers", "PARAMS", "METHODS", "MODES", "adapt", "load_target",
           "parse_target", "target_data"]
