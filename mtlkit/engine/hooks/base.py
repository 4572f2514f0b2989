"""The hook interface: :class:`HookBase`."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Protocol

from mtlkit.engine.state import RunState


class TrainerServices(Protocol):
    """What a hook may use of the trainer that runs it
    (:class:`mtlkit.engine.trainer.Trainer` provides it)."""

    state: RunState

    def save_checkpoint(self, iteration: Optional[int] = None) -> None:
        """Write ``OUT/last.pt`` now (every rank calls it)."""


class HookBase:
    """Something done around the training loop (in the spirit of detectron2's
    ``HookBase``). Override what you need; the trainer calls every hook at
    each point in the order of ``trainer.hooks``::

        before_train()                 the run is built and restored, the stream open
        for each iteration:
            before_step()              state.iter = index of the step about to run, state.lr set
            (the step)
            after_step()               state.iter = steps done, state.result = its losses
        after_train()                  always, also after an exception: see state.outcome

    ``self.trainer`` is the :class:`~mtlkit.engine.trainer.Trainer` (set when
    the hook is registered), ``self.state`` its
    :class:`~mtlkit.engine.state.RunState`. Services a hook may call:
    ``trainer.save_checkpoint()``, ``state.note(message)``,
    ``state.logger.log(record)``.

    A hook with state that must survive a resume returns it from
    :meth:`state_dict` (stored in the checkpoint under ``"hooks"`` /
    :attr:`name`) and takes it back in :meth:`load_state_dict`.
    """

    #: the key of this hook's state in the checkpoint (default: the class name)
    name: str = ""
    trainer: Optional[TrainerServices] = None

    @property
    def state(self) -> RunState:
        return self.trainer.state

    @property
    def key(self) -> str:
        return self.name or type(self).__name__

    def before_train(self) -> None:
        """Once, before the first iteration of this invocation."""

    def before_step(self) -> None:
        """Before each iteration (after the lr is set)."""

    def after_step(self) -> None:
        """After each iteration (the optimiser step is done)."""

    def after_train(self) -> None:
        """Once, when the loop ended: ``state.outcome`` is FINISHED (every
        iteration done, the final checkpoint written), STOPPED (a signal; the
        checkpoint written) or FAILED (an exception is on its way: clean up
        only)."""

    def state_dict(self) -> Optional[Dict[str, Any]]:
        """State to store in the checkpoint (None: none)."""
        return None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
