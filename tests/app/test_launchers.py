"""Sweeps beyond one process (issue 13): Hydra's submitit and joblib launchers, the exit status
read from each job's summary.json, resumable sweeps, and the Optuna sweeper on the digits demo.

The launcher tests run real sweeps through the installed `dsflow` (each job its own process);
the record-reading and resume rules are also tested in-process on small sweep directories.
"""

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_module

from tests.app.test_cli import DSFLOW, run_cli

pytestmark = pytest.mark.skipif(DSFLOW is None, reason="dsflow is not installed (pip install -e .)")

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

#: two jobs on tiny 2-D data; the sweep chooses the source file, so a job fails when its file is missing
TINY = ["dataset@source=npz", "dataset@target=moons", "target.n_samples=30", "steps=3", "optimizer.lr=10",
        "progress=false", "logger=none", "plot=false", "threads=1"]


def write_source(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.normal(size=(30, 2)).astype(np.float32), y=np.repeat([0, 1, 2], 10))
    return path


def summary(job_dir: Path) -> dict:
    return json.loads((job_dir / "summary.json").read_text())


def failed_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("  [") and " -> " in line]


# ----------------------------------------------------------------------------- launcher configs
@pytest.mark.parametrize("name, schema", [
    ("submitit_local", "hydra_plugins.hydra_submitit_launcher.config:LocalQueueConf"),
    ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.config:SlurmQueueConf"),
    ("joblib", "hydra_plugins.hydra_joblib_launcher.config:JobLibLauncherConf"),
])
def test_shipped_launcher_configs_have_exactly_the_plugin_keys(name, schema):
    """dsflow's files replace the plugins' configs of the same name: they must keep every key of
    the plugin's schema (a later plugin version adding one shows up here) and add none."""
    import importlib

    module, cls = schema.split(":")
    dataclass_ = getattr(importlib.import_module(module), cls)
    ours = yaml.safe_load((CONFIGS / "hydra" / "launcher" / f"{name}.yaml").read_text())
    assert set(ours) == {f.name for f in fields(dataclass_)}
    assert ours["_target_"] == dataclass_._target_
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == dataclass_._target_
    assert cfg.hydra.launcher.get("timeout_min", cfg.hydra.launcher.get("n_jobs")) == \
        ours.get("timeout_min", ours.get("n_jobs"))  # our values, not the plugin's defaults


def test_a_misspelt_launcher_key_is_refused(tmp_path):
    proc = run_cli(["--cfg", "hydra", "hydra/launcher=submitit_slurm", "hydra.launcher.timout_min=5"], tmp_path,
                   timeout=60)
    assert proc.returncode != 0 and "timout_min" in proc.stderr


def test_a_missing_plugin_is_named_with_its_install_command(monkeypatch, capsys):
    import importlib.util

    from dsflow import cli

    real = importlib.util.find_spec
    missing = {"hydra_plugins.hydra_submitit_launcher", "hydra_plugins.hydra_optuna_sweeper"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    for args, extra in ((["-m", "hydra/launcher=submitit_slurm", "seed=0,1"], "launchers"),
                        (["-m", "+experiment=optuna_digits"], "optuna")):
        with pytest.raises(SystemExit):
            cli._require_plugins(args)
        err = capsys.readouterr().err
        assert f"pip install -c constraints.txt -e '.[{extra}]'" in err and args[1] in err
    cli._require_plugins(["-m", "hydra/launcher=joblib", "+experiment=default"])  # installed: no objection


# ----------------------------------------------------------------------------- real sweeps
def test_submitit_local_sweep_exits_non_zero_when_a_child_job_fails(tmp_path):
    """Two jobs in submitit subprocesses; job 1's source file is missing, so it fails in its
    own process, which the launching process never sees: its summary.json tells."""
    sweep = tmp_path / "sweep"
    good = write_source(tmp_path / "a.npz")
    proc = run_cli(["-m", *TINY, f"source.path={good},{tmp_path / 'b.npz'}", "hydra/launcher=submitit_local",
                    f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert summary(sweep / "0")["status"] == "ok" and summary(sweep / "0")["steps_done"] == 3
    failed = summary(sweep / "1")
    assert failed["status"] == "failed" and "b.npz" in failed["error_line"]
    # the jobs ran as submitit jobs (their stdout is in submitit's folder), not in this command
    logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.out"))
    assert f"outputs: {sweep / '0'}" in logs and "final objective" not in proc.stdout
    assert "1 of 2 jobs failed" in proc.stderr
    lines = failed_lines(proc.stderr)  # one line per failed job, naming what differs: the file
    assert len(lines) == 1 and f"source.path={tmp_path / 'b.npz'}" in lines[0]
    assert "FileNotFoundError" in lines[0] and str(sweep / "1") in lines[0] and "a.npz" not in lines[0]


def test_joblib_sweep_then_a_resumed_sweep_skips_the_ok_job(tmp_path):
    sweep = tmp_path / "sweep"
    good, missing = write_source(tmp_path / "a.npz"), tmp_path / "b.npz"
    args = ["-m", *TINY, f"source.path={good},{missing}", f"hydra.sweep.dir={sweep}"]
    proc = run_cli([*args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr  # the jobs ran in joblib's workers
    assert len(failed_lines(proc.stderr)) == 1 and "b.npz" in failed_lines(proc.stderr)[0]
    assert "sweep.resume=true" in proc.stderr  # the hint to re-run only what failed
    first = summary(sweep / "0")
    metrics_stamp = (sweep / "0" / "metrics.jsonl").stat().st_mtime_ns

    # the same sweep dir again, without saying how: refused before any job runs
    refused = run_cli(args, tmp_path, timeout=120)
    assert refused.returncode == 1 and "already holds the jobs of a sweep" in refused.stderr
    assert "sweep.resume=true" in refused.stderr and summary(sweep / "0") == first

    write_source(missing, seed=1)  # what made job 1 fail is fixed
    resumed = run_cli([*args, "sweep.resume=true"], tmp_path)  # Hydra's basic launcher this time
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "job skipped: ok in an earlier run of this sweep" in resumed.stdout
    assert resumed.stdout.count("final objective") == 1  # only job 1 ran
    again = summary(sweep / "0")
    assert again.pop("skipped_at") and again == first  # job 0's record is kept as it was
    assert (sweep / "0" / "metrics.jsonl").stat().st_mtime_ns == metrics_stamp
    assert summary(sweep / "1")["status"] == "ok"
    assert "2 jobs ok (1 skipped" in resumed.stderr


@pytest.mark.slow
def test_ctrl_c_on_a_joblib_sweep_reports_each_interrupted_worker_job(tmp_path):
    """Ctrl-C reaches the whole process group: each worker's job stops at a step boundary and
    records ``interrupted``, unless joblib, aborting, kills its worker first (then the record
    stays ``running``); the command waits for the records, lists each job, exits 130."""
    import signal
    import time

    sweep = tmp_path / "sweep"
    args = [DSFLOW, "-m", *TINY, f"source.path={write_source(tmp_path / 'a.npz')}", "steps=1000000", "seed=0,1",
            "hydra/launcher=joblib", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not all(
                (sweep / str(i) / "metrics.jsonl").is_file() and (sweep / str(i) / "metrics.jsonl").stat().st_size
                for i in (0, 1)):
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out + err
    lines = failed_lines(err)
    assert len(lines) == 2 and "2 of 2 jobs did not end ok" in err, err
    for i, line in enumerate(lines):
        status = summary(sweep / str(i))["status"]
        assert status in ("interrupted", "running")
        assert (f"interrupted: interrupted by SIGINT after" if status == "interrupted" else "still 'running'") in line


# ----------------------------------------------------------------------------- the record, in-process
def make_job(sweep: Path, num: int, overrides: list, status: str | None, **extra) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status is not None:
        (job / "summary.json").write_text(json.dumps({"status": status, **extra}))
    return job


def test_report_counts_failed_interrupted_running_and_missing_jobs(tmp_path, capsys):
    from dsflow.sweeps import SweepState, report, snapshot

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    stale = make_job(sweep, 9, ["seed=9"], "failed", error_line="old")  # an earlier run's job, not relaunched
    state = SweepState(sweep, snapshot(sweep))
    make_job(sweep, 0, ["steps=5", "seed=0"], "ok")
    make_job(sweep, 1, ["steps=5", "seed=1"], "failed", error="ValueError: bad\n  details", error_line="x: ValueError: bad")
    make_job(sweep, 2, ["steps=5", "seed=2"], "interrupted", error="interrupted by SIGTERM after 2 of 5 steps")
    make_job(sweep, 3, ["steps=5", "seed=3"], "running")
    make_job(sweep, 4, ["steps=5", "seed=4"], None)
    (sweep / ".submitit" / "123").mkdir(parents=True)  # the launcher's own folder is no job
    assert report(state) == 1
    err = capsys.readouterr().err
    lines = failed_lines(err)
    assert "4 of 5 jobs did not end ok" in err and len(lines) == 4 and str(stale) not in err
    assert lines[0].startswith("  [seed=1] failed: x: ValueError: bad -> ")  # steps=5 is common to all
    assert "[seed=2] interrupted: interrupted by SIGTERM after 2 of 5 steps" in lines[1]
    assert "[seed=3] still 'running'" in lines[2] and "[seed=4] no summary.json" in lines[3]

    ok_only = tmp_path / "ok"
    ok_only.mkdir()
    state = SweepState(ok_only, {})
    make_job(ok_only, 0, ["seed=0"], "ok")
    assert report(state) == 0 and capsys.readouterr().err == ""


def compose_tiny(*overrides):
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose("config", overrides=["dataset@source=gaussians", "dataset@target=moons",
                                            "source.n_per_class=10", "target.n_samples=30", "steps=2",
                                            "optimizer.lr=10", "progress=false", "logger=none", "plot=false",
                                            *overrides])


def test_previous_ok_needs_status_ok_and_the_same_config(tmp_path):
    from dsflow.app import plain_config, run
    from dsflow.sweeps import previous_ok

    cfg = compose_tiny()
    assert previous_ok(tmp_path, plain_config(cfg)) == (None, "")  # nothing there: just run
    assert run(cfg, run_dir=tmp_path)["status"] == "ok"
    found, why = previous_ok(tmp_path, plain_config(compose_tiny("sweep.resume=true", "progress=true")))
    assert found["status"] == "ok" and why == ""  # the re-run's own switches do not count
    found, why = previous_ok(tmp_path, plain_config(compose_tiny("optimizer.lr=5", "steps=3")))
    assert found is None and "optimizer.lr" in why and "steps" in why
    data = json.loads((tmp_path / "summary.json").read_text())
    (tmp_path / "summary.json").write_text(json.dumps({**data, "status": "running"}))
    assert previous_ok(tmp_path, plain_config(cfg)) == (None, "its previous run is 'running'")


def test_sweep_keys_do_not_change_the_resume_fingerprint():
    from dsflow.app import flow_fingerprint

    base = flow_fingerprint(compose_tiny())["hash"]
    assert flow_fingerprint(compose_tiny("sweep.resume=true", "sweep.metric=objective_ratio"))["hash"] == base


# ----------------------------------------------------------------------------- sweepers
def test_each_task_declares_the_metric_a_sweeper_optimises():
    from dsflow.tasks.base import Task
    from dsflow.tasks.flow import FlowTask
    from dsflow.tasks.repurpose import RepurposeTask

    assert (FlowTask.optimized_metric, FlowTask.optimized_direction) == ("objective_after", "minimize")
    assert (RepurposeTask.optimized_metric, RepurposeTask.optimized_direction) == ("accuracy_after", "maximize")
    assert RepurposeTask.optimized_value({"accuracy_after": 0.75, "objective_after": 2.0}) == 0.75
    assert RepurposeTask.optimized_value({"accuracy_after": 0.75, "objective_after": 2.0}, "objective_after") == 2.0
    for bad in ({}, {"objective_after": float("nan")}, {"objective_after": "x"}, {"objective_after": True}):
        assert Task.optimized_value(bad) is None  # a failed trial, not a number the sweeper would trust


def test_an_optuna_direction_against_the_task_is_refused(capsys):
    from dsflow.sweeps import _check_sweeper_direction

    with initialize_config_module("dsflow.configs", version_base="1.3"):
        wrong = compose("config", overrides=["+experiment=optuna_digits", "hydra.sweeper.direction=minimize"],
                        return_hydra_config=True)
        right = compose("config", overrides=["+experiment=optuna_digits"], return_hydra_config=True)
        chosen = compose("config", overrides=["+experiment=optuna_digits", "hydra.sweeper.direction=minimize",
                                              "sweep.metric=objective_after"], return_hydra_config=True)
    with pytest.raises(SystemExit):
        _check_sweeper_direction(wrong)
    assert "hydra.sweeper.direction=maximize" in capsys.readouterr().err
    _check_sweeper_direction(right)
    _check_sweeper_direction(chosen)  # the user picked the metric, and so its direction


def test_optuna_tunes_entreg_and_the_time_step_on_digits_in_4_trials(tmp_path):
    sweep = tmp_path / "optuna"
    proc = run_cli(["-m", "+experiment=optuna_digits", "hydra.sweeper.n_trials=4", "steps=3",
                    "source.n_per_class=15", "target.n_per_class=20", "task.holdout=0", "oracle.epochs=3",
                    f"oracle.cache_dir={tmp_path / 'oracles'}", "logger=none", "plot=false", "progress=false",
                    f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = [summary(sweep / str(i)) for i in range(4)]
    assert not (sweep / "4").exists() and all(t["status"] == "ok" for t in trials)
    # every trial sampled both parameters inside their ranges; time_step set the SGD step
    for i, t in enumerate(trials):
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((sweep / str(i) / ".hydra" / "overrides.yaml").read_text()))
        entreg, time_step = float(overrides["functional.entreg"]), float(overrides["time_step"])
        assert 0.1 <= entreg <= 10 and 0.03 <= time_step <= 1
        config = yaml.safe_load((sweep / str(i) / "config.yaml").read_text())
        assert config["functional"]["entreg"] == pytest.approx(entreg)
        assert t["lr"] == pytest.approx(time_step * t["n"]) and t["time_step"] == pytest.approx(time_step)
    assert len({t["lr"] for t in trials}) == 4
    # Optuna got each trial's accuracy_after: its best is the best of the four summaries
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    accuracies = [t["accuracy_after"] for t in trials]
    assert best["best_value"] == pytest.approx(max(accuracies))
    winner = trials[accuracies.index(max(accuracies))]
    assert best["best_params"]["time_step"] == pytest.approx(winner["time_step"])
    assert max(accuracies) > trials[0]["accuracy_before"]  # the flow helps the frozen classifier
