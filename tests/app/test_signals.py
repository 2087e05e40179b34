"""SIGINT/SIGTERM sent to a real `dsflow` process: a single run, a sweep, start-up.

Each test starts a flow that would run for hours (``steps=100000`` on embedded 2-D data),
waits until it has written a few metric rows (or, for start-up, only its config), signals
it and checks the exit status, the summary and the saved particles.
"""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dsflow.loggers.local import read_metrics


def installed_command(name):
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


DSFLOW = installed_command("dsflow")
pytestmark = pytest.mark.skipif(DSFLOW is None, reason="dsflow is not installed (pip install -e .)")

LONG = ["dataset@source=moons", "dataset@target=rings", "source.n_samples=200", "target.n_samples=200",
        "logger=none", "steps=100000", "progress=false"]


def start(args, cwd):
    # SIGINT as a terminal would deliver it, even if this test process inherited it ignored
    return subprocess.Popen([DSFLOW, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(predicate, proc, timeout=90.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"dsflow ended early ({proc.returncode}): {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting for the run")


def rows(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_flow_at_a_step_and_keeps_its_particles(tmp_path, sig, code):
    run_dir = tmp_path / "run"
    proc = start([*LONG, f"hydra.run.dir={run_dir}", "flow.checkpoint_every=1000"], tmp_path)
    wait_for(lambda: rows(run_dir / "metrics.jsonl") >= 3, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    summary = json.loads((run_dir / "summary.json").read_text())
    done = summary["steps_done"]
    assert summary["status"] == "interrupted" and summary["signal"] == sig.name and 3 <= done < 100000
    assert f"interrupted by {sig.name} after {done} of 100000 steps" in err and "Traceback" not in err
    assert len(read_metrics(run_dir / "metrics.jsonl")) == done  # stopped at a step boundary
    with np.load(run_dir / "flowed.npz") as f:
        assert f["x"].shape == (200, 2) and np.isfinite(f["x"]).all()
    # the stop wrote a checkpoint of the step reached (checkpoint_every=1000 had not come)
    assert (run_dir / "checkpoints" / f"ckpt_{done:08d}.pt").is_file()


def test_ctrl_c_stops_a_whole_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    proc = start(["-m", *LONG, "seed=0,1,2", f"hydra.sweep.dir={sweep}"], tmp_path)
    wait_for(lambda: rows(sweep / "0" / "metrics.jsonl") >= 2, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert json.loads((sweep / "0" / "summary.json").read_text())["status"] == "interrupted"
    assert not (sweep / "1").exists() and not (sweep / "2").exists()  # the later jobs never ran
    assert "the sweep stopped at job 0" in err and "Traceback" not in err
    from dsflow.report import write_report

    md = write_report(sweep, plots=False)["markdown"].read_text()
    assert "1 interrupted" in md and "## Interrupted runs" in md


def test_ctrl_c_during_start_up_prints_one_line(tmp_path):
    run_dir = tmp_path / "run"
    proc = start([*LONG, f"hydra.run.dir={run_dir}"], tmp_path)
    # config.yaml is written just before torch is imported and the data are loaded (seconds)
    wait_for(lambda: (run_dir / "config.yaml").is_file(), proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[")]  # [time][dsflow] log lines
    assert lines == [f"dsflow: interrupted by SIGINT before the flow started (summary.json in {run_dir})"], err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps_done"] == 0
