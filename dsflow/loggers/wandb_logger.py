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


def sweep_group(run_dir: str | Path) -> str | None:
    """The wandb ``group`` of a job of a sweep: the sweep directory, so that the jobs of one
    sweep are one group, also when a launcher runs them in other processes or machines.

    Inside a Hydra multirun job it is ``hydra.sweep.dir``; otherwise (library use, a sweeper
    that sets no Hydra mode) the parent of ``run_dir`` when it holds the ``multirun.yaml``
    Hydra's sweeper writes.  A single run has no group (None).
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            if hc.mode == RunMode.MULTIRUN and hc.sweep.dir:
                return str(hc.sweep.dir)
    except Exception:  # noqa: BLE001 - no Hydra (or an old one): fall back to the files
        pass
    parent = Path(run_dir).resolve().parent
    return str(parent) if (parent / "multirun.yaml").is_file() else None


#: summary keys whose dict value maps a class to an accuracy (`dsflow.oracle.evaluation`)
PER_CLASS_SUFFIX = "per_class_accuracy"


def per_class_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]] | None:
    """The per-class accuracy table of a summary: ``class``, ``name`` and one column per
    ``*per_class_accuracy*`` key (e.g. ``oracle_per_class_accuracy_after``), or None.

    Class names come from ``summary["source"]`` (``classes`` / ``class_names``) when given.
    """
    keys = [k for k, v in summary.items() if PER_CLASS_SUFFIX in str(k) and isinstance(v, Mapping) and v]
    if not keys:
        return None
    source = summary.get("source") if isinstance(summary.get("source"), Mapping) else {}
    names = dict(zip([str(c) for c in source.get("classes") or []], source.get("class_names") or []))
    classes: list[str] = []
    for k in keys:
        classes += [str(c) for c in summary[k] if str(c) not in classes]

    def order(c: str):
        return (0, int(c), c) if c.lstrip("-").isdigit() else (1, 0, c)

    rows = []
    for c in sorted(classes, key=order):
        values = []
        for k in keys:
            v = summary[k].get(c, summary[k].get(int(c)) if c.lstrip("-").isdigit() else None)
            values.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None)
        rows.append([c, str(names.get(c, c)), *values])
    return ["class", "name", *keys], rows


class WandbLogger(RunLogger):
    """One wandb run per dsflow run (per job in a multirun).

    ``mode`` defaults (in ``configs/logger/wandb.yaml``) to ``$WANDB_MODE`` or ``offline``;
    use ``logger.mode=online`` with a network and a login.  The run is finished in
    ``finish`` with the run's exit code, which the app guarantees to call.

    Conventions, so that a sweep reads as one thing in the wandb UI:

    * ``group``: one per sweep: ``logger.group``, else the sweep directory (`sweep_group`);
      a single run has none;
    * the flowed dataset (``flowed.npz``, or ``flowed_last_finite.npz`` after a divergence)
      is logged as a ``dataset`` artifact ``flowed-<run id>`` when the run ends
      (``log_artifacts``), referenced in place (no copy into wandb's cache);
    * per-class accuracies the oracle reports (``oracle_per_class_accuracy_after``, ...)
      become a ``wandb.Table`` ``per_class_accuracy`` (class, name, one column per key).
    """

    name = "wandb"

    def __init__(self, run_dir: str | Path, *, mode: str = "offline", project: str = "dsflow",
                 entity: str | None = None, group: str | None = None,
                 tags: Sequence[str] | None = None, run_name: str | None = None,
                 log_images: bool = True, log_artifacts: bool = True, **unknown: Any):
        if unknown:
            raise ValueError(
                f"logger=wandb: unknown option(s) {sorted(unknown)}; valid options: mode, project, "
                "entity, group, tags, log_images, log_artifacts"
            )
        mode = str(mode)
        if mode not in WANDB_MODES:
            raise ValueError(f"logger.mode={mode!r} is not valid; use one of {', '.join(WANDB_MODES)}")
        self.run_dir = Path(run_dir).resolve()
        self.log_images_enabled = bool(log_images)
        self.log_artifacts_enabled = bool(log_artifacts)
        self.group = str(group) if group else sweep_group(self.run_dir)
        self._files: dict[str, str] = {}
        self._summary: dict[str, Any] = {}
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
                group=self.group,
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
        summary = to_jsonable(dict(summary))
        for key, value in summary.items():
            if isinstance(value, (int, float, str, bool)) or value is None:
                self.run.summary[key] = value
        table = per_class_rows(summary)
        if table is not None:
            columns, rows = table
            self.run.log({"per_class_accuracy": self._wandb.Table(columns=columns, data=rows)})
        files = summary.get("files")
        self._files = {str(k): str(v) for k, v in files.items()} if isinstance(files, Mapping) else {}
        self._summary = summary

    def log_flowed_dataset(self) -> Any:
        """Log the run's flowed dataset as an artifact (see the class docstring); returns it,
        or None when the run wrote none (it failed before the flow ended)."""
        name = next((self._files[k] for k in ("flowed", "flowed_last_finite") if k in self._files), None)
        path = self.run_dir / name if name else None
        if path is None or not path.is_file():
            return None
        meta_keys = ("status", "task", "n", "d", "classes", "steps", "steps_done", "objective_before",
                     "objective_after", "accuracy_after", "seed")
        metadata = {k: self._summary[k] for k in meta_keys if k in self._summary}
        metadata["file"] = path.name
        artifact = self._wandb.Artifact(f"flowed-{self.run.id}", type="dataset", metadata=metadata,
                                        description="particles of the flow (x, y; trajectories when kept)")
        # immutable: wandb reads the file where it is instead of copying it into its cache
        artifact.add_file(str(path), name=path.name, policy="immutable")
        self.run.log_artifact(artifact)
        return artifact

    def finish(self, exit_code: int = 0) -> None:
        try:
            if self.log_artifacts_enabled:
                try:
                    self.log_flowed_dataset()
                except Exception as err:  # noqa: BLE001 - an artifact must not fail the run's record
                    log.warning("wandb: the flowed dataset was not logged as an artifact: %s", err)
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
