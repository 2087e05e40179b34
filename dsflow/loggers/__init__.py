"""Run loggers (config group ``logger``).

Every run writes local files (``metrics.jsonl``, ``summary.json``) through `LocalLogger`;
``logger=wandb`` (the default, offline unless ``WANDB_MODE``/``logger.mode`` say otherwise)
adds a Weights & Biases run whose files live inside the run directory.  `build_loggers`
returns a `LoggerGroup` that fans every call out and is a context manager, so ``finish`` is
called on success and on error alike.
"""

from dsflow.loggers.base import LoggerGroup, RunLogger, build_loggers, to_jsonable
from dsflow.loggers.local import LocalLogger

__all__ = ["RunLogger", "LoggerGroup", "LocalLogger", "build_loggers", "to_jsonable", "WandbLogger"]


def __getattr__(name: str):
    # wandb is heavy: import its logger only when asked for
    if name == "WandbLogger":
        from dsflow.loggers.wandb_logger import WandbLogger

        return WandbLogger
    raise AttributeError(f"module 'dsflow.loggers' has no attribute {name!r}")
