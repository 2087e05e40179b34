"""Command-line entry points: ``dsflow`` (a flow run or sweep) and ``dsflow-distance``.

Both are Hydra apps over the configs installed as the package ``dsflow.configs``.  This
module imports only Hydra at start-up (torch & co. are imported by the run itself), so
``dsflow --help`` is fast.

Failures: every job catches its own error, records it in its ``summary.json``
(``status: failed``) and its log, and lets the other jobs of a multirun go on; the command
then lists the failed jobs and exits with status 1.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig

log = logging.getLogger("dsflow")

CONFIG_PATH = "pkg://dsflow.configs"


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
    """One line for a failed job: Hydra's ``InstantiationException`` (three lines: the target,
    the ``repr`` of the real error, ``full_key``) becomes ``KEY: Error: message``."""
    from hydra.errors import InstantiationException

    key = ""
    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        found = re.search(r"full_key: (\S+)", str(exc))
        key = key or (found.group(1) if found else "")
        exc = exc.__cause__
    text = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
    return f"{key}: {text}" if key else text


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
        if os.environ.get("HYDRA_FULL_ERROR") == "1" and not multirun:
            raise
        return None
    JOBS.append(JobOutcome(run_dir, overrides, "ok"))
    return summary


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
    """Report failed jobs on stderr; 1 when any failed."""
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


def _flow_job(cfg: DictConfig) -> dict | None:
    from dsflow.app import run

    summary = _run_job(cfg, run)
    if summary is not None:
        _print_flow_result(summary)
    return summary


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

    JOBS.clear()
    try:
        app()
    except KeyboardInterrupt as exc:  # SIGINT (Ctrl-C) or SIGTERM: 130 / 143, one line
        print(_interrupted_message(exc, work), file=sys.stderr, flush=True)
        sys.exit(exit_code_of(exc))
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


def main() -> None:
    """``dsflow [overrides]``: flow a labeled dataset; ``dsflow -m ...`` for a sweep.

    Unless the command line picks an experiment or a config group, the primary config is
    ``demo`` (the base config + the default experiment, the offline re-purposing demo), so
    ``dsflow``, ``dsflow steps=10 logger=none``, ``dsflow -m optimizer.lr=100,200`` and
    ``dsflow --cfg job`` all compose the demo.
    """
    args = sys.argv[1:]
    _refuse_moved_keys(args)
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
