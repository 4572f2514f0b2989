"""Registers the built-in gradient-level weightings (written in
:mod:`mtlkit.models.gradient_weightings`) under kind ``weighting``, through
the ``mtlkit`` entry point 'gradient_weightings'. ``docs/weighting.md``
describes each method.
"""

from mtlkit import hookimpl
from mtlkit.models.gradient_weightings import (  # noqa: F401 - also imported from here
    FAMO,
    IMTLG,
    MGDA,
    AlignedMTL,
    CAGrad,
    GradientCosineSimilarity,
    GradNorm,
    OnlineAuxiliaryWeighting,
    PCGrad,
    PrimaryPCGrad,
    RandomLossWeighting,
)

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
