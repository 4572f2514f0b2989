"""Built-in gradient-level weightings (:mod:`mtlkit.gradient_weighting`),
registered under kind ``weighting`` through the ``mtlkit`` entry point
'gradient_weightings'. ``docs/weighting.md`` describes each method, its
options, cost and distributed behaviour.

* primary-aware (:mod:`.primary`): ``gcs``, ``olaux``, ``pcgrad_primary``;
* symmetric (:mod:`.symmetric`): ``pcgrad``, ``cagrad``, ``mgda``, ``imtl``,
  ``aligned_mtl``;
* adaptive / random loss weights (:mod:`.adaptive`): ``gradnorm``, ``famo``, ``rlw``.
"""

from mtlkit import hookimpl

from .adaptive import FAMO, GradNorm, RandomLossWeighting
from .primary import GradientCosineSimilarity, OnlineAuxiliaryWeighting, PrimaryPCGrad
from .symmetric import IMTLG, MGDA, AlignedMTL, CAGrad, PCGrad

#: name -> class, in the order of docs/weighting.md
GRADIENT_WEIGHTINGS = {
    "gcs": GradientCosineSimilarity,
    "olaux": OnlineAuxiliaryWeighting,
    "pcgrad_primary": PrimaryPCGrad,
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
    "mgda": MGDA,
    "imtl": IMTLG,
    "aligned_mtl": AlignedMTL,
    "gradnorm": GradNorm,
    "famo": FAMO,
    "rlw": RandomLossWeighting,
}


@hookimpl
def mtlkit_register_weightings(registry):
    """Register the gradient-level weightings (see the module docstring)."""
    for name, cls in GRADIENT_WEIGHTINGS.items():
        registry.add(name, cls)
