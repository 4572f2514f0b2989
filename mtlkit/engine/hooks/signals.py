"""SIGINT / SIGTERM: finish the iteration, save, stop (:class:`StopOnSignal`)."""

from __future__ import annotations

import signal
import threading
from typing import Any, Dict

from mtlkit.engine.hooks.base import HookBase


class StopOnSignal(HookBase):
    """While the loop runs, SIGINT and SIGTERM set ``state.stop_requested``;
    the step's reduction makes every process stop after the iteration in
    flight, and the trainer saves a checkpoint before it stops. A second
    SIGINT interrupts at once. The previous handlers are restored when the
    loop ends (before the final evaluation: a Ctrl-C then interrupts it)."""

    def __init__(self) -> None:
        self._previous: Dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:  # noqa: ANN001
        if self.state.stop_requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.state.stop_requested = signal.Signals(signum).name

    def before_train(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)

    def after_train(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
