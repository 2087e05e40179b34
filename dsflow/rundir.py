"""Checks of the run directory before anything is written to it.

* `check_writable`: the directory (``hydra.run.dir``, ``hydra.sweep.dir``) can be created
  and written; otherwise one line naming the path and the fix, not Hydra's traceback.
* `check_previous_run`: a directory that already holds a previous run's record
  (``summary.json`` / ``metrics.jsonl``) is refused, so a second run cannot silently
  overwrite the first; a resume (``flow.resume=true``) or ``overwrite=true`` is allowed.

`RunDirCheck` runs both as a Hydra callback (``hydra.callbacks`` in ``configs/config.yaml``
and ``configs/distance.yaml``) before Hydra creates the directory; `dsflow.app.run` runs
`check_previous_run` again for library calls.  Light imports only (the CLI loads this).
"""

from __future__ import annotations

import os
from pathlib import Path

import sys

from hydra.experimental.callback import Callback

__all__ = ["RunDirError", "RunDirCheck", "check_previous_run", "clear_previous_run", "check_writable",
           "PREVIOUS_RUN_FILES"]

#: files whose presence means "a run already wrote here"
PREVIOUS_RUN_FILES = ("summary.json", "metrics.jsonl")


class RunDirError(ValueError):
    """The run directory cannot be used (the message names it and says what to do)."""


def check_writable(path, key: str = "hydra.run.dir") -> Path:
    """Create ``path`` (and parents) and check it is a writable directory; returns it."""
    path = Path(str(path)).expanduser()
    fix = f"pick a folder you can write to, e.g. {key}=outputs/my_run"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"{key}={path} is a file, not a folder; {fix}") from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise RunDirError(f"{key}={path} cannot be created ({reason}); {fix}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirError(f"{key}={path} is not writable; {fix}")
    return path


def _is_failed_start(run_dir: Path) -> bool:
    """The previous run failed before its first step: nothing it computed can be lost."""
    import json

    try:
        status = json.loads((run_dir / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return False
    metrics = run_dir / "metrics.jsonl"
    return status == "failed" and (not metrics.is_file() or metrics.stat().st_size == 0)


def _checkpoint_dir(run_dir: Path, checkpoint_dir) -> Path | None:
    if not checkpoint_dir:
        return None
    path = Path(str(checkpoint_dir)).expanduser()
    return path if path.is_absolute() else run_dir / path


def check_previous_run(run_dir, *, overwrite: bool = False, resume: bool = False, checkpoint_dir=None,
                       key: str = "hydra.run.dir") -> list[str]:
    """Refuse ``run_dir`` when it holds a previous run's record, unless ``overwrite``, or
    ``resume`` with a checkpoint to resume from; returns the names of the record files found.

    A resume that finds no checkpoint would start afresh and replace the previous run's
    metrics: refused too.  A previous run that failed before its first step (status failed,
    no metrics) computed nothing and does not block its directory.
    """
    from dsflow.flow.checkpoint import list_checkpoints

    run_dir = Path(str(run_dir))
    found = [name for name in PREVIOUS_RUN_FILES if (run_dir / name).is_file()]
    if not found or overwrite or _is_failed_start(run_dir):
        return found
    if resume:
        ckpt_dir = _checkpoint_dir(run_dir, checkpoint_dir)
        if ckpt_dir is None or list_checkpoints(ckpt_dir):
            return found
        raise RunDirError(
            f"flow.resume=true but {key}={run_dir} has no checkpoint in {ckpt_dir} to resume from, and "
            f"starting afresh would replace its previous run ({', '.join(found)}); point flow.checkpoint_dir "
            "at the checkpoints, or replace the old outputs with overwrite=true"
        )
    raise RunDirError(
        f"{key}={run_dir} already holds the outputs of a previous run ({', '.join(found)}); "
        f"pick another {key}, continue that run with flow.resume=true, or replace its outputs with overwrite=true"
    )


#: what a run writes besides its record: removed too by ``overwrite=true``, so that nothing of
#: the old run (checkpoints above all: a later resume would pick the old run's newest) survives
OVERWRITTEN_OUTPUTS = ("flowed.npz", "flowed_last_finite.npz", "config.yaml")


def clear_previous_run(run_dir, checkpoint_dir=None) -> None:
    """``overwrite=true``: remove the previous run's record, flowed data and checkpoints."""
    from dsflow.flow.checkpoint import list_checkpoints

    run_dir = Path(str(run_dir))
    for name in (*PREVIOUS_RUN_FILES, *OVERWRITTEN_OUTPUTS):
        (run_dir / name).unlink(missing_ok=True)
    ckpt_dir = _checkpoint_dir(run_dir, checkpoint_dir)
    if ckpt_dir is not None:
        for path in list_checkpoints(ckpt_dir):
            path.unlink(missing_ok=True)


def _flag(cfg, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get"):
            return False
        node = node.get(part)
    return bool(node) if isinstance(node, bool) else False


def _refuse(err: RunDirError):
    # Hydra turns a callback's exception into a warning and goes on (to its own traceback);
    # SystemExit is not an Exception, so it ends the command here with one line
    print(f"dsflow: error: {err}", file=sys.stderr, flush=True)
    raise SystemExit(1)


class RunDirCheck(Callback):
    """Hydra callback: the run (or sweep) directory is writable and, for a flow run, holds
    no previous run unless ``flow.resume`` or ``overwrite`` (see module doc)."""

    def on_run_start(self, config, **kwargs) -> None:
        try:
            run_dir = check_writable(config.hydra.run.dir, "hydra.run.dir")
            if "overwrite" in config:  # the flow app (dsflow); dsflow-distance has no such key
                flow = config.get("flow") or {}
                check_previous_run(run_dir, overwrite=_flag(config, "overwrite"),
                                   resume=_flag(config, "flow.resume"), checkpoint_dir=flow.get("checkpoint_dir"))
        except RunDirError as err:
            _refuse(err)

    def on_multirun_start(self, config, **kwargs) -> None:
        try:
            check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")
        except RunDirError as err:
            _refuse(err)
