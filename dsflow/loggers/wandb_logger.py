"""Weights & Biases logger; offline by default, every file inside the run directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from dsflow.loggers.base import RunLogger, to_jsonable

log = logging.getLogger(__name__)

WANDB_MODES = ("offline", "online", "disabled")
# wandb writes caches, artifacts and its settings under these; pointing them into the run
# directory keeps a run self-contained and never touches ~/.cache or ~/.config.
_WANDB_DIR_VARS = {
    "WANDB_DIR": "",
    "WANDB_CACHE_DIR": "wandb/cache",
    "WANDB_DATA_DIR": "wandb/data",
    "WANDB_CONFIG_DIR": "wandb/config",
}


class WandbLogger(RunLogger):
    """One wandb run per dsflow run (per job in a multirun).

    ``mode`` defaults (in ``configs/logger/wandb.yaml``) to ``$WANDB_MODE`` or ``offline``;
    use ``logger.mode=online`` with a network and a login.  The run is finished in
    ``finish`` with the run's exit code, which the app guarantees to call.
    """

    name = "wandb"

    def __init__(self, run_dir: str | Path, *, mode: str = "offline", project: str = "dsflow",
                 entity: str | None = None, group: str | None = None,
                 tags: Sequence[str] | None = None, run_name: str | None = None,
                 log_images: bool = True, **unknown: Any):
        if unknown:
            raise ValueError(
                f"logger=wandb: unknown option(s) {sorted(unknown)}; valid options: mode, project, "
                "entity, group, tags, log_images"
            )
        mode = str(mode)
        if mode not in WANDB_MODES:
            raise ValueError(f"logger.mode={mode!r} is not valid; use one of {', '.join(WANDB_MODES)}")
        self.run_dir = Path(run_dir).resolve()
        self.log_images_enabled = bool(log_images)
        self._saved_env: dict[str, str | None] = {}
        for var, sub in _WANDB_DIR_VARS.items():
            self._saved_env[var] = os.environ.get(var)
            path = self.run_dir / sub if sub else self.run_dir
            path.mkdir(parents=True, exist_ok=True)
            os.environ[var] = str(path)

        import wandb

        self._wandb = wandb
        try:
            self.run = wandb.init(
                mode=mode,
                project=project,
                entity=entity,
                group=group,
                tags=list(tags or []),
                name=run_name,
                dir=str(self.run_dir),
                # a multirun calls init once per job in one process: close any previous run
                reinit="finish_previous",
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
            )
        except Exception:
            self._restore_env()
            raise
        self.run_path = Path(self.run.dir).parent if getattr(self.run, "dir", None) else None

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(to_jsonable(dict(config)), allow_val_change=True)

    def log_metrics(self, record: Mapping[str, Any], step: int) -> None:
        flat: dict[str, Any] = {}
        for key, value in record.items():
            if isinstance(value, Mapping):  # parts -> parts/<name>
                flat.update({f"{key}/{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        flat = {k: v for k, v in to_jsonable(flat).items() if isinstance(v, (int, float))}
        self.run.log(flat, step=int(step))

    def log_images(self, images: Mapping[str, Path]) -> None:
        if not self.log_images_enabled or not images:
            return
        self.run.log({f"plots/{k}": self._wandb.Image(str(p)) for k, p in images.items()})

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        for key, value in to_jsonable(dict(summary)).items():
            if isinstance(value, (int, float, str, bool)) or value is None:
                self.run.summary[key] = value

    def finish(self, exit_code: int = 0) -> None:
        try:
            self.run.finish(exit_code=exit_code)
        finally:
            self._restore_env()

    def _restore_env(self) -> None:
        for var, old in self._saved_env.items():
            if old is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = old
        self._saved_env = {}
