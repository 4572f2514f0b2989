"""Carrying a trained detector into a new domain (issue 16).

* :mod:`.targets`: a target domain as an overlay on a config's data section
  (``configs/synthetic/targets/*.yaml``), with its own data seed;
* :mod:`.adabn`: AdaBN, the first baseline: BatchNorm statistics re-estimated
  on the target's unlabelled images;
* :mod:`.shift`: measure source -> target mAP of trained runs, with and
  without AdaBN (``python -m mtlkit.adaptation.shift``).
"""

from .adabn import adabn, batchnorm_layers
from .targets import load_target, target_data

__all__ = ["adabn", "batchnorm_layers", "load_target", "target_data"]
