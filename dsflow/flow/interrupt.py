"""SIGINT/SIGTERM during a run: stop at the next step boundary, keep what was computed.

`StopSignals` installs handlers for SIGINT (Ctrl-C) and SIGTERM (what ``timeout``, ``kill``
and every batch scheduler send) for the duration of a run and restores the previous ones
afterwards.  Inside a flow (`StopSignals.deferred`) the first signal only *records* the
request; the engine (``run_flow(..., stop=signals)``) sees it at the end of the current step,
writes its checkpoint and returns with ``stop_reason="interrupted"``, so the particles are
those of a completed step and can be saved.  A second signal, or one outside the flow
(loading data, fitting a push-forward map), raises `RunInterrupted` at once.
``kill -9`` (SIGKILL) cannot be caught by any process: there the checkpoints
(``flow.checkpoint_every``) are what survives.

Standard library only: the command-line module imports it before torch.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger("dsflow")

HANDLED = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal.  A `KeyboardInterrupt`, so that it passes every
    ``except Exception`` (one job's handler, Hydra's launcher): a signal stops a whole sweep.

    ``signum`` is the signal, ``exit_code`` the shell convention ``128 + signum`` (130 for
    SIGINT, 143 for SIGTERM); the app attaches ``summary`` (the run's summary) on its way out.
    """

    def __init__(self, signum: int = signal.SIGINT, message: str | None = None):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        self.summary: dict | None = None
        super().__init__(message or f"interrupted by {signal_name(self.signum)}")


def exit_code_of(exc: BaseException) -> int:
    """The process exit status for an interruption (130 for a plain Ctrl-C)."""
    return int(getattr(exc, "exit_code", 128 + signal.SIGINT))


class StopSignals:
    """Context manager: SIGINT/SIGTERM handlers around a run (see the module docstring).

    Call the instance (``signals()``) to ask whether a stop was requested; ``received`` is
    the first signal number (or None).  In a thread other than the main one (where Python
    cannot install handlers) it does nothing.  A signal that was *ignored* when the run
    began (``SIG_IGN``, e.g. SIGINT of a background job of a non-interactive shell) stays
    ignored, as Python itself does for SIGINT.
    """

    def __init__(self, signals=HANDLED):
        self.signals = tuple(signals)
        self.received: int | None = None
        self.deferring = False
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.received is not None

    def _handle(self, signum, frame) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if self.deferring and first:
            log.warning("%s received: stopping after the current step (send it again to stop at once)",
                        signal_name(signum))
            return
        raise RunInterrupted(signum)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in self.signals:
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN:
                continue
            self._previous[sig] = previous
            signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    @contextmanager
    def deferred(self) -> Iterator["StopSignals"]:
        """While inside, a first signal is recorded and acted on at the next step boundary."""
        before, self.deferring = self.deferring, True
        try:
            yield self
        finally:
            self.deferring = before


__all__ = ["StopSignals", "RunInterrupted", "signal_name", "exit_code_of", "HANDLED"]
