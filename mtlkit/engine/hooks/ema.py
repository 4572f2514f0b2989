"""The moving average of the weights (:class:`EMAUpdate`)."""

from __future__ import annotations

from mtlkit.engine.hooks.base import HookBase


class EMAUpdate(HookBase):
    """After every optimiser step, ``state.ema.update(state.core)``
    (:class:`mtlkit.engine.ema.ModelEMA`, built by the trainer from
    ``train.ema`` and saved in the checkpoint's ``"ema"``). First of the
    default hooks: evaluation and checkpoints of the same iteration see the
    updated average."""

    def after_step(self) -> None:
        if self.state.ema is not None:
            self.state.ema.update(self.state.core)
