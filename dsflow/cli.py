"""Command-line entry points: ``dsflow`` (a flow run or sweep) and ``dsflow-distance``.

Both are Hydra apps over the configs installed as the package ``dsflow.configs``.  This
module imports only Hydra at start-up (torch & co. are imported by the run itself), so
``dsflow --help`` is fast.

Failures: every job catches its own error, records it in its ``summary.json``
(``status: failed``) and its log, and lets the other jobs of a multirun go on; the command
then lists the failed jobs and exits with status 1.  A sweep's jobs may run in other
processes or on other machines (``hydra/launcher=joblib``, ``submitit_local``,
``submitit_slurm``), so after a multirun the exit status is read from the ``summary.json``
of every job it launched (`dsflow.sweeps`), whichever launcher ran them.

Sweepers: a job returns the float its task optimises (`dsflow.tasks.base.Task.optimized_metric`,
or ``sweep.metric=KEY``), so Optuna's sweeper (``+experiment=optuna_digits``) or any other can
optimise it; a failed job returns None (a failed trial).  ``sweep.resume=true`` skips the jobs
whose summary says ``ok`` under the same config (`dsflow.sweeps.previous_ok`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig

log = logging.getLogger("dsflow")

CONFIG_PATH = "pkg://dsflow.configs"

#: dsflow's launcher configs (configs/hydra/launcher/) keep the plugins' names so that
#: ``hydra/launcher=submitit_slurm`` picks them; Hydra 1.3 then validates them against the
#: plugin's schema of the same name (typos and types are caught) with a deprecation warning
#: per job, which says nothing a user can act on.  Should a later Hydra drop the matching,
#: the files still work alone (each names its ``_target_`` and every key).
warnings.filterwarnings("ignore", category=UserWarning,
                        message=r"\s*'hydra/launcher/(submitit_local|submitit_slurm|joblib)' is validated against "
                                r"ConfigStore schema")



def _share_the_config_store() -> None:
    """Hydra copies its config repository, and with it the process-wide `ConfigStore`, once per
    config group it lists (``dsflow --help``: ~100 copies); the store grows with each installed
    plugin (Optuna's sweeper registers eight configs), which cost ``--help`` 0.55 s of CPU (1.15
    -> 1.70 s, measured with the launchers and Optuna installed).  The store is a singleton whose
    nodes are deep-copied when loaded (`ConfigStore.load`), so the copies can share it."""
    from hydra.core.config_store import ConfigStore

    if "__deepcopy__" not in ConfigStore.__dict__:
        ConfigStore.__deepcopy__ = lambda self, memo: self


_share_the_config_store()


@dataclass
class JobOutcome:
    run_dir: str
    overrides: list
    status: str
    error: str = ""
    steps_done: int | None = None  # interrupted jobs: steps completed of ``steps``
    steps: int | None = None
    multirun: bool = False


#: outcomes of the jobs this process ran (one for a run, one per job for a multirun)
JOBS: list[JobOutcome] = []


def _job_info() -> tuple[str, list, bool]:
    """(output dir, overrides, is_multirun) of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return hc.runtime.output_dir, list(hc.overrides.task), hc.mode == RunMode.MULTIRUN


def error_message(exc: BaseException) -> str:
    """One line for a failed job (`dsflow.runs.error_line`: ``KEY: Error: message``)."""
    from dsflow.runs import error_line

    return error_line(exc)


def _run_job(cfg: DictConfig, runner) -> dict | None:
    """Run one job with ``runner(cfg) -> summary``; record, print and swallow its failure.

    Set ``HYDRA_FULL_ERROR=1`` to get the exception raised with its full traceback instead.
    """
    run_dir, overrides, multirun = _job_info()
    try:
        summary = runner(cfg)
    except KeyboardInterrupt as exc:  # SIGINT/SIGTERM: recorded, then it stops the whole sweep
        summary = getattr(exc, "summary", None) or {}
        JOBS.append(JobOutcome(run_dir, overrides, "interrupted", str(exc) or "interrupted",
                               steps_done=summary.get("steps_done"), steps=summary.get("steps"),
                               multirun=multirun))
        raise
    except Exception as exc:  # noqa: BLE001 - recorded, reported at exit with status 1
        message = error_message(exc)
        log.error("run failed: %s\n(outputs and summary.json in %s)", message, run_dir)
        log.debug("traceback:", exc_info=True)
        JOBS.append(JobOutcome(run_dir, overrides, "failed", message))
        _record_early_failure(run_dir, exc, message)
        if os.environ.get("HYDRA_FULL_ERROR") == "1" and not multirun:
            raise
        return None
    JOBS.append(JobOutcome(run_dir, overrides, "ok"))
    return summary


def _record_early_failure(run_dir: str, exc: BaseException, message: str) -> None:
    """A job that failed before its run recorded anything (a bad option value, an unreadable
    file at load time) still leaves a ``summary.json`` (``status: failed``): in a sweep run by
    another process it is the only trace the launching process reads.  An existing summary is
    never replaced: it is this run's own, or a previous run's that refused to be overwritten."""
    path = Path(run_dir) / "summary.json"
    if path.exists():
        return
    try:
        from dsflow.loggers.local import write_json

        write_json(path, {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "error_line": message,
                          "error_type": type(exc).__name__, "run_dir": str(Path(run_dir).resolve()),
                          "failed_before_start": True})
    except OSError as err:  # an unwritable run dir: the log line above is all there is
        log.debug("could not write %s: %s", path, err)


def _resume_sweep_job(cfg: DictConfig, run_dir: str) -> dict | None:
    """``sweep.resume=true``: the summary of this job's ``ok`` run under the same config (the
    job is skipped), or None after clearing whatever record the job directory holds, so the job
    runs again (from its newest checkpoint with ``flow.resume=true``, else afresh)."""
    from dsflow.app import plain_config
    from dsflow.sweeps import mark_skipped, previous_ok

    summary, why = previous_ok(run_dir, plain_config(cfg))
    if summary is not None:
        mark_skipped(Path(run_dir), summary)
        print(f"dsflow: job skipped: ok in an earlier run of this sweep ({run_dir})", flush=True)
        return summary
    if why:
        from dsflow.flow.checkpoint import list_checkpoints
        from dsflow.rundir import _checkpoint_dir, clear_previous_run

        flow = cfg.get("flow") or {}
        ckpt_dir = _checkpoint_dir(Path(run_dir), flow.get("checkpoint_dir"))
        if bool(flow.get("resume", False)) and ckpt_dir is not None and list_checkpoints(ckpt_dir):
            log.info("sweep.resume: %s runs again from its newest checkpoint (%s)", run_dir, why)
        else:
            log.info("sweep.resume: %s runs again (%s)", run_dir, why)
            clear_previous_run(run_dir, flow.get("checkpoint_dir"))
    return None


def _sweep_value(cfg: DictConfig, summary: dict | None) -> float | None:
    """What a job hands its sweeper: the task's optimised metric (``sweep.metric`` if set)."""
    if summary is None or summary.get("status") != "ok":
        return None
    from dsflow.tasks.base import task_class

    metric = (cfg.get("sweep") or {}).get("metric")
    cls = task_class(cfg)
    value = cls.optimized_value(summary, metric)
    if value is None:
        log.warning("sweep: summary.json has no finite %r for the sweeper (task %s)",
                    metric or cls.optimized_metric, cls.name)
    return value


def _print_flow_result(summary: dict) -> None:
    before, after = summary.get("objective_before"), summary.get("objective_after")
    lines = [f"dsflow: finished {summary.get('steps_done', 0)} steps in {summary.get('wall_time_s', 0):.1f} s"]
    if isinstance(after, float) and isinstance(before, float):
        lines.append(f"  final objective: {after:.6g} (before the flow: {before:.6g})")
    for key, value in summary.items():  # oracle accuracies, when an oracle stage ran
        if "accuracy" in key and isinstance(value, float):
            lines.append(f"  {key}: {value:.4f}")
    resumed = summary.get("resumed_from")
    if isinstance(resumed, dict):
        lines.append(f"  resumed from step {resumed.get('step')} ({resumed.get('checkpoint')})")
    for warning in summary.get("warnings") or ():  # e.g. a diverging objective
        lines.append(f"  WARNING: {warning}")
    lines.append(f"  outputs: {summary.get('run_dir')}")
    print("\n".join(lines), flush=True)


def _exit_status() -> int:
    """Report failed jobs on stderr; 1 when any failed.  After a multirun the jobs'
    ``summary.json`` files are the record (`dsflow.sweeps.report`): jobs run by other processes
    count as much as this process's own."""
    from dsflow import sweeps

    if sweeps.SWEEPS:
        messages = {os.path.abspath(j.run_dir): j.error for j in JOBS if j.status == "failed"}
        return max(sweeps.report(state, messages) for state in sweeps.SWEEPS)
    failed = [j for j in JOBS if j.status == "failed"]
    if not failed:
        return 0
    if len(JOBS) == 1:
        details = Path(failed[0].run_dir) / "summary.json"
        print(f"dsflow: error: {failed[0].error}" + (f"\n  details: {details}" if details.is_file() else ""),
              file=sys.stderr)
    else:
        print(f"dsflow: {len(failed)} of {len(JOBS)} jobs failed:", file=sys.stderr)
        for job in failed:
            print(f"  [{' '.join(job.overrides)}] {job.error}\n    -> {job.run_dir}", file=sys.stderr)
    return 1


def _flow_job(cfg: DictConfig) -> float | None:
    """One run of ``dsflow``; returns the float a sweeper optimises (`_sweep_value`)."""
    from dsflow.app import run

    run_dir, _, multirun = _job_info()
    if multirun and bool((cfg.get("sweep") or {}).get("resume", False)):
        done = _resume_sweep_job(cfg, run_dir)
        if done is not None:
            return _sweep_value(cfg, done)
    summary = _run_job(cfg, run)
    if summary is not None:
        _print_flow_result(summary)
    return _sweep_value(cfg, summary)


#: the base config, for command lines that pick an experiment or a config group
_flow_app = hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")(_flow_job)
#: the base config + the default experiment (configs/demo.yaml), for all other command lines
_demo_app = hydra.main(config_path=CONFIG_PATH, config_name="demo", version_base="1.3")(_flow_job)


@hydra.main(config_path=CONFIG_PATH, config_name="distance", version_base="1.3")
def _distance_app(cfg: DictConfig) -> dict | None:
    from dsflow.distance_app import print_distance, run_distance

    summary = _run_job(cfg, run_distance)
    if summary is not None:
        print_distance(summary)
    return summary


def _interrupted_message(exc: BaseException, work: str = "flow") -> str:
    """One line (per stopped sweep) for an interrupted command: no traceback."""
    from dsflow.flow.interrupt import signal_name

    name = signal_name(getattr(exc, "signum", 2))
    stopped = next((j for j in reversed(JOBS) if j.status == "interrupted"), None)
    from dsflow import sweeps

    if stopped is None and sweeps.SWEEPS:  # the jobs ran in other processes: their records follow
        return f"dsflow: interrupted by {name}: the sweep stopped; what its jobs recorded:"
    if stopped is None or not os.path.isfile(os.path.join(stopped.run_dir, "summary.json")):
        return f"dsflow: interrupted by {name} during start-up, before any output was written"
    if stopped.steps_done:
        what = (f"after {stopped.steps_done} of {stopped.steps} steps; flowed.npz and summary.json "
                f"(status: interrupted) in {stopped.run_dir}")
    else:
        what = f"before the {work} started (summary.json in {stopped.run_dir})"
    line = f"dsflow: interrupted by {name} {what}"
    if stopped.multirun:
        line += f"; the sweep stopped at job {len(JOBS) - 1}: the jobs after it were not run"
    return line


def _main(app, work: str = "flow") -> None:
    from dsflow.flow.interrupt import exit_code_of

    from dsflow import sweeps

    JOBS.clear()
    sweeps.SWEEPS.clear()
    try:
        app()
    except KeyboardInterrupt as exc:  # SIGINT (Ctrl-C) or SIGTERM: 130 / 143, one line
        print(_interrupted_message(exc, work), file=sys.stderr, flush=True)
        if sweeps.SWEEPS and not any(j.status == "interrupted" for j in JOBS):
            for state in sweeps.SWEEPS:
                sweeps.settle(state)  # the job processes are writing their "interrupted"
                sweeps.report(state)
        sys.exit(exit_code_of(exc))
    except SystemExit as exc:  # Hydra's own error exit: e.g. a launcher whose job process died
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        sys.exit(max(code, _exit_status()) if sweeps.SWEEPS else code)
    sys.exit(_exit_status())


#: the primary config ``dsflow`` composes unless the command line picks an experiment or a group
DEMO_CONFIG = "demo"
#: config groups of the `dsflow` app; selecting one of them means "not the default demo"
CONFIG_GROUPS = ("dataset", "functional", "dynamics", "optimizer", "flow", "oracle", "task", "experiment")
#: Hydra's flags that take a value (``--flag VALUE`` or ``--flag=VALUE``)
_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c",
                     "--package", "-p", "--experimental-rerun", "--shell-completion", "-sc"}
#: Hydra's flags that only inform (no run): no "running the default experiment" line for them
_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}


def _overrides_of(args: list[str]) -> list[str]:
    """The overrides in ``args``: Hydra's flags and their values left out."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = arg in _FLAGS_WITH_VALUE  # ``--flag=VALUE`` carries its value itself
            continue
        out.append(arg)
    return out


def wants_default_experiment(args: list[str]) -> bool:
    """True when the overrides in ``args`` only tune keys (``steps=5``, ``-m optimizer.lr=1,2``).

    The default experiment (configs/experiment/default.yaml, composed by the primary config
    configs/demo.yaml) is the offline re-purposing demo on the embedded digits.  It is left
    out as soon as the command line chooses an experiment (``+experiment=NAME``;
    ``+experiment=base`` is the bare base config) or a dataset, functional, dynamics,
    optimizer, flow or oracle config.  Hydra's flags (``--cfg job``, ``--config-dir DIR``,
    ``-m``, ...) do not change the choice, so ``dsflow --cfg job`` shows what ``dsflow`` runs.
    """
    for arg in _overrides_of(args):
        key = arg.split("=", 1)[0].lstrip("+~")
        if key.split("@", 1)[0] in CONFIG_GROUPS and "." not in key:
            return False
    return True


def _refuse_moved_keys(args: list[str]) -> None:
    """``holdout=0.2`` and the other re-purposing keys now live under ``task.``: Hydra would
    only say "Key 'holdout' is not in struct"; say where the key went instead."""
    from dsflow.config_checks import MOVED_KEYS, moved_key_message

    for arg in _overrides_of(args):
        key, _, value = arg.partition("=")
        root = key.lstrip("+~").split(".", 1)[0]
        if root in MOVED_KEYS:
            message = moved_key_message(root, None)
            if "." not in key and value:  # the user's own value, as typed, in the suggested override
                message = message.replace(f"{MOVED_KEYS[root]}.<option>=...", f"{MOVED_KEYS[root]}={value}")
            print(f"dsflow: error: {message}", file=sys.stderr)
            sys.exit(1)


#: Hydra plugins dsflow has configs for: (config group, option) -> (plugin module, extra, PyPI package)
PLUGINS = {
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "launchers", "hydra-submitit-launcher"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "launchers", "hydra-submitit-launcher"),
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "launchers", "hydra-joblib-launcher"),
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "optuna", "hydra-optuna-sweeper"),
}


def _wanted_plugins(args: list[str]) -> list[tuple[str, tuple]]:
    """``(what asked for it, PLUGINS entry)`` for each plugin the command line needs: picked
    directly (``hydra/launcher=joblib``) or by an experiment whose defaults pick it."""
    wanted = []
    for arg in _overrides_of(args):
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if (key, value) in PLUGINS:
            wanted.append((arg, PLUGINS[key, value]))
        elif key == "experiment" and re.fullmatch(r"[\w.-]+", value or ""):
            from importlib import resources

            try:
                text = (resources.files("dsflow.configs") / "experiment" / f"{value}.yaml").read_text()
            except OSError:
                continue  # Hydra names the missing experiment itself
            for (group, option), plugin in PLUGINS.items():
                if re.search(rf"override\s+/{re.escape(group)}\s*:\s*{option}\b", text):
                    wanted.append((arg, plugin))
    return wanted


def _require_plugins(args: list[str]) -> None:
    """A launcher or sweeper whose plugin is not installed: one line with the install command,
    instead of Hydra's "Could not find" or an import error deep in instantiate."""
    from importlib.util import find_spec

    for asked, (module, extra, package) in _wanted_plugins(args):
        if find_spec(module) is None:
            print(f"dsflow: error: {asked} needs the Hydra plugin {package}, which is not installed; install "
                  f"dsflow's '{extra}' extra: pip install -c constraints.txt -e '.[{extra}]' (or pip install "
                  f"{package})", file=sys.stderr)
            sys.exit(1)


def main() -> None:
    """``dsflow [overrides]``: flow a labeled dataset; ``dsflow -m ...`` for a sweep.

    Unless the command line picks an experiment or a config group, the primary config is
    ``demo`` (the base config + the default experiment, the offline re-purposing demo), so
    ``dsflow``, ``dsflow steps=10 logger=none``, ``dsflow -m optimizer.lr=100,200`` and
    ``dsflow --cfg job`` all compose the demo.
    """
    args = sys.argv[1:]
    _refuse_moved_keys(args)
    _require_plugins(args)
    if wants_default_experiment(args):
        if not any(a.split("=", 1)[0] in _INFO_FLAGS for a in args):
            print("dsflow: running the default experiment (configs/experiment/default.yaml; "
                  "+experiment=base for the bare base config)", flush=True)
        _main(_demo_app)
    else:
        _main(_flow_app)


def distance_main() -> None:
    """``dsflow-distance [overrides]``: the OTDD between two labeled datasets."""
    _main(_distance_app, work="distance computation")


if __name__ == "__main__":
    main()
