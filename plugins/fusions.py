"""Registers the built-in fusions (residual, concat, gated, none; written in
:mod:`mtlkit.models.fusions`) through the ``mtlkit`` entry point 'fusions'."""

from mtlkit import hookimpl
from mtlkit.models.fusions import ConcatFusion, GatedFusion, NoFusion, ResidualFusion


@hookimpl
def mtlkit_register_fusions(registry):
    """Register the built-in fusions: residual, concat, gated, none."""
    registry.add("residual", ResidualFusion)
    registry.add("concat", ConcatFusion)
    registry.add("gated", GatedFusion)
    registry.add("none", NoFusion)
