"""Built-in gradient-level weightings (:mod:`mtlkit.gradient_weighting`),
registered under kind ``weighting`` by ``mtlkit_plugins.gradient_weightings``.
``docs/weighting.md`` describes each method, its options, cost and
distributed behaviour.

* primary-aware (:mod:`.primary`): ``gcs``, ``olaux``, ``pcgrad_primary``;
* symmetric (:mod:`.symmetric`): ``pcgrad``, ``cagrad``, ``mgda``, ``imtl``,
  ``aligned_mtl``;
* adaptive / random loss weights (:mod:`.adaptive`): ``gradnorm``, ``famo``, ``rlw``.
"""

from .adaptive import FAMO, GradNorm, RandomLossWeighting
from .primary import GradientCosineSimilarity, OnlineAuxiliaryWeighting, PrimaryPCGrad
from .symmetric import IMTLG, MGDA, AlignedMTL, CAGrad, PCGrad

__all__ = ["FAMO", "GradNorm", "RandomLossWeighting", "GradientCosineSimilarity",
           "OnlineAuxiliaryWeighting", "PrimaryPCGrad", "IMTLG", "MGDA", "AlignedMTL", "CAGrad",
           "PCGrad"]
