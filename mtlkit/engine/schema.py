"""The ``train`` and ``eval`` schemas, at their old place: they live in
:mod:`mtlkit.schema` with the config's other sections."""

from mtlkit.schema import (  # noqa: F401 - re-exported
    EVAL,
    EVAL_CHOICES,
    EVAL_DEFAULTS,
    EVAL_RANGES,
    TRAIN,
    TRAIN_CHOICES,
    TRAIN_DEFAULTS,
    TRAIN_LENGTHS,
    TRAIN_RANGES,
)
