"""Sweeps across processes: each job's ``summary.json`` is the record of its outcome.

A sweep (``dsflow -m ...``) may run its jobs in this process (Hydra's basic launcher), in
worker processes (``hydra/launcher=joblib``), in subprocesses (``submitit_local``) or on other
machines (``submitit_slurm``).  An in-process list of outcomes only sees the first case, so
the sweep's exit status is read from what every job leaves on disk instead:

* `SweepRecord`, a Hydra callback (``hydra.callbacks`` in ``configs/config.yaml``), runs in the
  process that launches the jobs.  ``on_multirun_start`` refuses a ``hydra.sweep.dir`` that
  already holds a sweep's jobs unless ``sweep.resume=true`` or ``overwrite=true`` (so that a
  stale ``ok`` can never be taken for this sweep's result), notes which job records exist
  already, and registers the sweep in `SWEEPS`.
* After the sweep, `sweep_jobs` reads the ``summary.json`` of every job directory this sweep
  (re)launched; `report` prints one line per job that failed, was interrupted, is still
  ``running`` (killed with -9, out of memory, a lost node) or left no summary, and returns the
  exit status (1 when any did).
* ``sweep.resume=true`` (`previous_ok`): a job whose directory already holds a summary saying
  ``ok`` under the same resolved config (`COMPARE_EXCLUDED` aside) is skipped and hands the
  sweeper its recorded metric; the other jobs run again in place of their old record.

Standard library and Hydra's callback base only at import time: the CLI loads this module.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback

__all__ = ["SweepRecord", "SweepState", "JobRecord", "SWEEPS", "sweep_jobs", "report", "previous_ok",
           "config_differences", "COMPARE_EXCLUDED", "BAD_STATUSES"]

SUMMARY = "summary.json"
#: what Hydra writes into every job directory when the job starts (``hydra.output_subdir``)
OVERRIDES = Path(".hydra") / "overrides.yaml"
#: statuses that make the sweep fail; ``running`` after the sweep means the job died unrecorded
BAD_STATUSES = ("failed", "interrupted", "running")
#: dotted config keys that do not change a job's result, left out when `previous_ok` compares a
#: job's recorded ``config.yaml`` with its config now: the switches of the re-run itself
COMPARE_EXCLUDED = ("sweep", "overwrite", "flow.resume", "flow.resume_ignore_config", "progress")


@dataclass
class SweepState:
    """A sweep launched by this process: its directory and the job records it found there."""

    sweep_dir: Path
    before: dict = field(default_factory=dict)  # job record file -> (mtime_ns, size) at the start
    resume: bool = False
    resumable: bool = True  # the app has ``sweep.resume`` (dsflow does, dsflow-distance does not)


#: sweeps launched by this process (the CLI reports them at exit)
SWEEPS: list[SweepState] = []


@dataclass
class JobRecord:
    """One job of a sweep as its directory records it."""

    run_dir: Path
    overrides: list
    status: str  # ok | failed | interrupted | running | missing (no summary.json)
    error: str = ""
    skipped: bool = False  # ok in an earlier run of the sweep, not run again (sweep.resume)
    summary: dict = field(default_factory=dict)

    @property
    def bad(self) -> bool:
        return self.status != "ok"

    def line(self, common: frozenset = frozenset()) -> str:
        """One line naming the job (its overrides but the ``common`` ones, which every job of
        the sweep shares), what went wrong and where."""
        what = {
            "failed": f"failed: {self.error}",
            "interrupted": f"interrupted: {self.error}",
            "running": "still 'running' after the sweep: it runs on elsewhere, or died without recording "
                       "its end (kill -9, out of memory, a lost node); see its dsflow.log",
            "missing": "no summary.json: the job stopped before its run started; see its dsflow.log",
        }.get(self.status, f"status {self.status!r}")
        own = [o for o in self.overrides if o not in common] or [f"job {self.run_dir.name}"]
        return f"  [{' '.join(own)}] {what} -> {self.run_dir}"


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job directory under ``sweep_dir``: one holding ``.hydra/overrides.yaml`` (written
    when Hydra starts the job) or a ``summary.json``, at any depth (``hydra.sweep.subdir`` may
    nest), launcher folders (``.submitit``) aside."""
    found = set()
    for name in (str(OVERRIDES), SUMMARY):
        for path in sweep_dir.glob(f"**/{name}"):
            job = path.parent.parent if name != SUMMARY else path.parent
            if not any(part.startswith(".") for part in job.relative_to(sweep_dir).parts):
                found.add(job)
    return sorted(found, key=_natural_key)


def _stamp(path: Path):
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _record_files(job: Path) -> list[Path]:
    return [job / OVERRIDES, job / SUMMARY]


def snapshot(sweep_dir: Path) -> dict:
    """``{record file: (mtime_ns, size)}`` of the jobs already in ``sweep_dir``."""
    return {str(p): _stamp(p) for job in _job_dirs(sweep_dir) for p in _record_files(job) if p.exists()}


def read_summary(run_dir: Path) -> dict | None:
    try:
        data = json.loads((Path(run_dir) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _overrides(job: Path) -> list:
    try:
        import yaml

        data = yaml.safe_load((job / OVERRIDES).read_text())
    except Exception:  # noqa: BLE001 - a name for the job is all it is used for
        return [job.name]
    return [str(o) for o in data] if isinstance(data, list) else [job.name]


def one_line(text) -> str:
    return " ".join(str(text or "").split())


def job_record(job: Path) -> JobRecord:
    summary = read_summary(job)
    if summary is None:
        return JobRecord(job, _overrides(job), "missing")
    status = str(summary.get("status", "missing"))
    error = summary.get("error_line") or one_line(summary.get("error"))
    return JobRecord(job, _overrides(job), status, error, skipped=bool(summary.get("skipped_at")), summary=summary)


def sweep_jobs(state: SweepState) -> list[JobRecord]:
    """The jobs this sweep launched: job directories whose records are new or were rewritten
    since `SweepRecord` saw the sweep directory (a resumed sweep may hold older jobs that this
    run of it did not launch; a rewritten file is detected by its stamp, not the clock, so
    clocks of other machines do not matter)."""
    jobs = []
    for job in _job_dirs(state.sweep_dir):
        if any(_stamp(p) != state.before.get(str(p)) for p in _record_files(job) if p.exists()):
            jobs.append(job_record(job))
    return jobs


def settle(state: SweepState, timeout: float = 15.0, poll: float = 0.25) -> None:
    """Wait (at most ``timeout`` s) for the jobs still ``running`` to record their end: after a
    Ctrl-C the job processes finish their current step and write ``status: interrupted`` while
    the launching process is already reporting.  A second Ctrl-C stops the wait."""
    import time

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and any(j.status == "running" for j in sweep_jobs(state)):
            time.sleep(poll)
    except KeyboardInterrupt:
        pass


def report(state: SweepState, messages: dict | None = None, stream=None) -> int:
    """Print the sweep's bad jobs (one line each) on ``stream`` (stderr); 1 when any."""
    stream = stream or sys.stderr
    jobs = sweep_jobs(state)
    messages = messages or {}
    for job in jobs:  # this process's own one-line message, when it ran the job itself
        if job.status == "failed" and messages.get(os.path.abspath(job.run_dir)):
            job.error = messages[os.path.abspath(job.run_dir)]
    bad = [job for job in jobs if job.bad]
    skipped = sum(job.skipped for job in jobs if not job.bad)
    note = f" ({skipped} skipped: ok in an earlier run of this sweep)" if skipped else ""
    if not bad:
        if skipped:
            print(f"dsflow: sweep {state.sweep_dir}: {len(jobs)} jobs ok{note}", file=stream, flush=True)
        return 0
    common = frozenset.intersection(*(frozenset(j.overrides) for j in jobs)) if len(jobs) > 1 else frozenset()
    what = "failed" if all(job.status == "failed" for job in bad) else "did not end ok"
    print(f"dsflow: {len(bad)} of {len(jobs)} jobs {what}{note} (sweep {state.sweep_dir}):", file=stream)
    for job in bad:
        print(job.line(common), file=stream)
    if state.resumable:
        print("  to run only these again (the ok jobs are skipped): the same command with "
              f"hydra.sweep.dir={state.sweep_dir} sweep.resume=true", file=stream)
    stream.flush()
    return 1


# ---------------------------------------------------------------------------- resume
def _flatten(node, prefix="", out=None) -> dict:
    out = {} if out is None else out
    if isinstance(node, dict) and node:
        for key, value in node.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = node
    return out


def _excluded(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in COMPARE_EXCLUDED)


def config_differences(recorded: dict, current: dict) -> list[str]:
    """Dotted keys whose values differ between two resolved configs (`COMPARE_EXCLUDED` aside)."""
    a, b = _flatten(recorded), _flatten(current)
    return sorted(k for k in set(a) | set(b) if not _excluded(k) and a.get(k, "<absent>") != b.get(k, "<absent>"))


def recorded_config(run_dir: Path) -> dict | None:
    try:
        import yaml

        data = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    except Exception:  # noqa: BLE001 - unreadable means "not the same config"
        return None
    return data if isinstance(data, dict) else None


def previous_ok(run_dir, config: dict) -> tuple[dict | None, str]:
    """``(summary, "")`` when ``run_dir`` holds an ``ok`` run of the resolved ``config``, else
    ``(None, why it must run again)`` (``""`` when nothing was there)."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if summary is None:
        return None, ""
    status = summary.get("status")
    if status != "ok":
        return None, f"its previous run is {status!r}"
    recorded = recorded_config(run_dir)
    if recorded is None:
        return None, "its config.yaml is missing or unreadable"
    differ = config_differences(recorded, config)
    if differ:
        shown = ", ".join(differ[:6]) + (f", ... ({len(differ)} keys)" if len(differ) > 6 else "")
        return None, f"its ok run had another config ({shown})"
    return summary, ""


def mark_skipped(run_dir: Path, summary: dict) -> None:
    """Note in the job's summary when a resumed sweep took it as done (the rest is unchanged)."""
    from datetime import datetime, timezone

    from dsflow.loggers.local import write_json

    summary = {**summary, "skipped_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(Path(run_dir) / SUMMARY, summary)


# ---------------------------------------------------------------------------- callback
def _get(cfg, dotted: str, default=None):
    node = cfg
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get"):
            return default
        node = node.get(part)
    return default if node is None else node


class SweepRecord(Callback):
    """Hydra callback of the launching process (see the module docstring)."""

    def on_multirun_start(self, config, **kwargs) -> None:
        sweep_dir = Path(os.path.abspath(Path(str(config.hydra.sweep.dir)).expanduser()))
        resume = bool(_get(config, "sweep.resume", False))
        if "overwrite" in config and sweep_dir.is_dir() and not resume and not bool(config.get("overwrite")):
            previous = [job for job in _job_dirs(sweep_dir) if (job / SUMMARY).is_file()]
            if previous:
                print(f"dsflow: error: hydra.sweep.dir={sweep_dir} already holds the jobs of a sweep "
                      f"({len(previous)} with a summary.json); re-run it with sweep.resume=true (jobs ok "
                      "under the same config are skipped, the others run again), replace it with "
                      "overwrite=true, or pick another hydra.sweep.dir", file=sys.stderr, flush=True)
                raise SystemExit(1)  # Hydra turns an Exception from a callback into a warning
        _check_sweeper_direction(config)
        SWEEPS.append(SweepState(sweep_dir, snapshot(sweep_dir) if sweep_dir.is_dir() else {}, resume,
                                 resumable="sweep" in config))


def _check_sweeper_direction(config) -> None:
    """An optimising sweeper told to minimise a metric the task maximises (or the reverse)
    would search for the worst runs: refuse it in one line, before any job runs."""
    sweeper = _get(config, "hydra.sweeper")
    direction = _get(sweeper, "direction")
    if direction is None or "task" not in config or _get(config, "sweep.metric") is not None:
        return  # no direction to check, or the user chose the metric (and so its direction)
    direction = str(getattr(direction, "name", direction)).lower()
    if direction not in ("minimize", "maximize"):
        return  # multi-objective lists: the user's own
    from dsflow.tasks.base import task_class

    cls = task_class(config)
    if direction != cls.optimized_direction:
        better = "higher" if cls.optimized_direction == "maximize" else "lower"
        print(f"dsflow: error: hydra.sweeper.direction={direction}, but task {cls.name!r} returns "
              f"{cls.optimized_metric} ({better} is better): set "
              f"hydra.sweeper.direction={cls.optimized_direction} (or choose the metric with "
              "sweep.metric=KEY of summary.json)", file=sys.stderr, flush=True)
        raise SystemExit(1)
