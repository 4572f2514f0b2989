"""Periodic checkpoints (:class:`PeriodicCheckpoint`)."""

from __future__ import annotations

from mtlkit.engine.hooks.base import HookBase


class PeriodicCheckpoint(HookBase):
    """``trainer.save_checkpoint()`` every ``every`` iterations
    (``train.checkpoint_every``; 0: never). The trainer itself always saves
    when the run finishes and when it stops on a signal."""

    def __init__(self, every: int) -> None:
        self.every = int(every)

    def after_step(self) -> None:
        if self.every and self.state.iter % self.every == 0:
            self.trainer.save_checkpoint()
