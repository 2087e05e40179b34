"""The record of one run, shared by ``dsflow`` (`dsflow.app.run`) and ``dsflow-distance``.

`RunRecord` is a context manager around the work of a run.  It

* installs the SIGINT/SIGTERM handlers of the run (`dsflow.flow.interrupt.StopSignals`,
  available as ``record.signals``) and restores the previous ones on the way out;
* opens the run's loggers, when given a factory for them, inside those handlers;
* writes ``summary.json`` with ``status: running`` at the start (a run killed with -9 is
  still found) and the resolved ``config.yaml``;
* on the way out sets ``status`` to ``ok``, ``failed`` (``error``, ``error_type``,
  ``traceback``) or ``interrupted`` (``signal``, ``error``, ``error_type``: SIGINT, SIGTERM
  or a bare KeyboardInterrupt), adds ``wall_time_s`` / ``wall_time``, runs the ``on_exit``
  hooks and writes the summary again.  Exceptions always propagate; an interruption gets
  the summary attached as ``exc.summary`` (the CLI reports it and exits 128 + signal).

Standard library at import time: ``dsflow --help`` must not pay for torch or OmegaConf.
"""

from __future__ import annotations

import sys
import time
import traceback
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ContextManager

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"


def error_line(exc: BaseException) -> str:
    """One line for a failed run (``error_line`` in ``summary.json``, the line a sweep prints
    per failed job): Hydra's ``InstantiationException`` (three lines: the target, the ``repr``
    of the real error, ``full_key``) becomes ``KEY: Error: message``."""
    import re

    from hydra.errors import InstantiationException

    key = ""
    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        found = re.search(r"full_key: (\S+)", str(exc))
        key = key or (found.group(1) if found else "")
        exc = exc.__cause__
    text = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
    return f"{key}: {text}" if key else text


class RunRecord:
    """``with RunRecord(run_dir, config) as record: ...`` (see the module docstring).

    ``config`` is the resolved config as a plain dict (`dsflow.app.plain_config`).
    ``summary`` is the dict to fill (the caller may keep a reference; it is updated in
    place).  ``loggers`` is a zero-argument callable returning a context manager for a
    `dsflow.loggers.LoggerGroup`: it is called once the signal handlers are installed, gets
    ``log_config(config)``, its ``local`` logger writes the first summary and the whole
    group the last one.  Without it ``summary.json`` is written directly.
    ``on_exit`` hooks (``hook(summary)``) run after the status and wall time are set and
    before the final summary is written (e.g. restore thread counts, list the files).
    """

    def __init__(self, run_dir: str | Path, config: dict, summary: dict | None = None, *,
                 loggers: Callable[[], ContextManager[Any]] | None = None):
        self.run_dir = Path(run_dir)
        self.config = config
        self.summary: dict = summary if summary is not None else {}
        self.on_exit: list[Callable[[dict], None]] = []
        self.signals = None
        self.loggers = None
        self._open_loggers = loggers
        self._stack: ExitStack | None = None
        self._start: float | None = None

    # ------------------------------------------------------------------ writing
    def _write_summary(self, final: bool) -> None:
        if self.loggers is None:
            from dsflow.loggers.local import write_json

            write_json(self.run_dir / SUMMARY_FILE, self.summary)
        elif final:
            self.loggers.log_summary(self.summary)
        else:  # only the local file: remote loggers get the summary once, at the end
            local = self.loggers.get("local")
            if local is not None:
                local.log_summary(self.summary)

    # ------------------------------------------------------------------ context
    def __enter__(self) -> "RunRecord":
        from dsflow.flow.interrupt import StopSignals

        self.summary.update(status="running", run_dir=str(self.run_dir.resolve()),
                            started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self._start = time.perf_counter()
        stack = ExitStack()
        try:
            # a signal from here on raises RunInterrupted (inside StopSignals.deferred: the flow
            # stops at its next step boundary)
            self.signals = stack.enter_context(StopSignals())
            if self._open_loggers is not None:
                self.loggers = stack.enter_context(self._open_loggers())
                self.loggers.log_config(self.config)
            self._write_summary(final=False)
        except BaseException:  # before anything is recorded: close what was opened, propagate
            if not stack.__exit__(*sys.exc_info()):
                raise
        self._stack = stack
        try:
            # recorded: once config.yaml is being written, a failure or an interrupt ends up in
            # summary.json
            from omegaconf import OmegaConf

            (self.run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(self.config))
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        stack, self._stack = self._stack, None
        if stack is None:  # already closed (a failure inside __enter__)
            return False
        try:
            self._finish(exc_type, exc, tb)
        except BaseException:
            stack.__exit__(*sys.exc_info())
            raise
        stack.__exit__(exc_type, exc, tb)
        return False

    def _finish(self, exc_type, exc, tb) -> None:
        summary = self.summary
        try:
            if exc is None:
                summary["status"] = "ok"
            elif isinstance(exc, KeyboardInterrupt):  # SIGINT/SIGTERM (RunInterrupted) or a bare Ctrl-C
                from dsflow.flow.interrupt import signal_name

                name = signal_name(getattr(exc, "signum", 2))
                summary.update(status="interrupted", signal=name, error=str(exc) or f"interrupted by {name}",
                               error_type=type(exc).__name__)
                exc.summary = summary
            else:
                summary.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                               error_line=error_line(exc), error_type=type(exc).__name__,
                               traceback="".join(traceback.format_exception(exc_type, exc, tb)))
        finally:
            summary["wall_time_s"] = time.perf_counter() - self._start
            summary["wall_time"] = summary["wall_time_s"]  # the key dsflow-report reads
            for hook in self.on_exit:
                hook(summary)
            self._write_summary(final=True)


__all__ = ["RunRecord", "SUMMARY_FILE", "CONFIG_FILE", "error_line"]
