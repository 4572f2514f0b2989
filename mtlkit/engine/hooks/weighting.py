"""The loss weighting's iteration and epoch callbacks (:class:`WeightingCallbacks`)."""

from __future__ import annotations

from mtlkit.engine.hooks.base import HookBase
from mtlkit.engine.step import weighting_hook


class WeightingCallbacks(HookBase):
    """Calls the model's weighting (:class:`mtlkit.weighting.LossWeighting`)
    ``on_iteration_end(steps done)`` after each iteration and
    ``on_epoch_end(epoch)`` after the iteration in which the training stream
    passed into the next epoch. (Its ``after_backward`` belongs to the step.)"""

    def __init__(self) -> None:
        self._epoch = 0

    def before_train(self) -> None:
        self._epoch = self.state.epoch

    def after_step(self) -> None:
        state = self.state
        weighting_hook(state.core, "on_iteration_end", state.iter)
        if state.epoch != self._epoch:
            weighting_hook(state.core, "on_epoch_end", self._epoch)
            self._epoch = state.epoch
