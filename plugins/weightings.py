"""Registers the built-in loss weightings (fixed, uncertainty, dwa; written in
:mod:`mtlkit.models.weightings`) through the ``mtlkit`` entry point 'weightings'."""

from mtlkit import hookimpl
from mtlkit.models.weightings import DWAWeighting, FixedWeighting, UncertaintyWeighting


@hookimpl
def mtlkit_register_weightings(registry):
    """Register the built-in loss weightings."""
    registry.add("fixed", FixedWeighting)
    registry.add("uncertainty", UncertaintyWeighting)
    registry.add("dwa", DWAWeighting)
