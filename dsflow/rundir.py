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

__all__ = ["RunDirError", "RunDirCheck", "check_previous_run", "check_writable", "PREVIOUS_RUN_FILES"]

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


def check_previous_run(run_dir, *, overwrite: bool = False, resume: bool = False,
                       key: str = "hydra.run.dir") -> list[str]:
    """Refuse ``run_dir`` when it holds a previous run's record, unless ``resume`` or
    ``overwrite``; returns the names of the record files found."""
    run_dir = Path(str(run_dir))
    found = [name for name in PREVIOUS_RUN_FILES if (run_dir / name).is_file()]
    if found and not (overwrite or resume):
        raise RunDirError(
            f"{key}={run_dir} already holds the outputs of a previous run ({', '.join(found)}); "
            f"pick another {key}, continue that run with flow.resume=true, or replace its outputs with overwrite=true"
        )
    return found


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
                check_previous_run(run_dir, overwrite=_flag(config, "overwrite"),
                                   resume=_flag(config, "flow.resume"))
        except RunDirError as err:
            _refuse(err)

    def on_multirun_start(self, config, **kwargs) -> None:
        try:
            check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")
        except RunDirError as err:
            _refuse(err)
