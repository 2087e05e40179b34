"""Logger interface, fan-out group and the factory used by the app."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)

#: logger names accepted in ``logger.name``
LOGGER_NAMES = ("none", "local", "wandb")


def to_jsonable(value: Any) -> Any:
    """Turn tensors, numpy scalars/arrays, paths and non-finite floats into JSON values.

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` so that files stay
    strict JSON (``json.loads`` of other tools rejects bare ``NaN``).
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu()
        return to_jsonable(value.item() if value.numel() == 1 else value.tolist())
    if hasattr(value, "tolist"):  # numpy array or scalar
        return to_jsonable(value.tolist())
    return str(value)


class RunLogger:
    """What the app tells a logger.  Every method is optional for subclasses."""

    name = "logger"

    def log_config(self, config: Mapping[str, Any]) -> None:
        """The resolved run configuration as a plain dict."""

    def log_metrics(self, record: Mapping[str, Any], step: int) -> None:
        """One flow step: ``objective``, ``parts``, ``wall_time``, ..."""

    def log_images(self, images: Mapping[str, Path]) -> None:
        """Figures written to disk, keyed by a short name."""

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Final figures of the run (also written on failure, with ``status: failed``)."""

    def finish(self, exit_code: int = 0) -> None:
        """Flush and close; called exactly once, also after an error (``exit_code=1``)."""


class LoggerGroup(RunLogger):
    """Fan-out over several loggers; a context manager that always calls ``finish``.

    A failing *secondary* logger (e.g. wandb) must not lose the run: its errors are logged
    and it is dropped, while the local logger's errors propagate.
    """

    name = "group"

    def __init__(self, loggers: Iterable[RunLogger]):
        self.loggers = list(loggers)
        self._finished = False

    def _each(self, method: str, *args, **kwargs) -> None:
        for lg in list(self.loggers):
            try:
                getattr(lg, method)(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - see class docstring
                if lg.name == "local":
                    raise
                log.warning("logger %s failed in %s (%s: %s); disabling it", lg.name, method,
                            type(exc).__name__, exc)
                self.loggers.remove(lg)
                try:
                    lg.finish(exit_code=1)
                except Exception:  # noqa: BLE001
                    pass

    def log_config(self, config):
        self._each("log_config", config)

    def log_metrics(self, record, step):
        self._each("log_metrics", record, step)

    def log_images(self, images):
        self._each("log_images", images)

    def log_summary(self, summary):
        self._each("log_summary", summary)

    def finish(self, exit_code: int = 0) -> None:
        if self._finished:
            return
        self._finished = True
        self._each("finish", exit_code=exit_code)

    def get(self, name: str) -> RunLogger | None:
        return next((lg for lg in self.loggers if lg.name == name), None)

    def __enter__(self) -> "LoggerGroup":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


def build_loggers(logger_cfg: Mapping[str, Any] | None, run_dir: str | Path, *,
                  run_name: str | None = None, resume: bool = False) -> LoggerGroup:
    """Loggers for one run: local always, plus wandb when ``logger_cfg.name == "wandb"``.

    ``logger_cfg`` is the ``logger`` config group (``{name: none}`` or
    ``{name: wandb, mode: offline, project: ..., ...}``).  ``resume=True`` keeps the run's
    ``metrics.jsonl`` (the app rewinds it to the resume point, `LocalLogger.rewind`).
    """
    from dsflow.loggers.local import LocalLogger

    cfg = dict(logger_cfg or {})
    name = str(cfg.pop("name", "none"))
    if name not in LOGGER_NAMES:
        raise ValueError(
            f"unknown logger {name!r}; valid names: {', '.join(LOGGER_NAMES)} "
            "(choose with `logger=wandb` or `logger=none`)"
        )
    loggers: list[RunLogger] = [LocalLogger(run_dir, resume=resume)]
    if name == "wandb":
        from dsflow.loggers.wandb_logger import WandbLogger

        loggers.append(WandbLogger(run_dir, run_name=run_name, **cfg))
    return LoggerGroup(loggers)
