"""`dsflow-distance` in-process: value against POT, outputs, failure summary."""

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from dsflow.distance_app import run_distance

SMALL = ["dataset@source=moons", "dataset@target=rings", "source.n_samples=16", "target.n_per_class=5",
         "dtype=float64", "device=cpu"]


def compose_distance(*overrides, base=SMALL):
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose(config_name="distance", overrides=[*base, *overrides])


def reference_otdd(xs, ys, xt, yt):
    """Exact OTDD (p=2) with POT only: W_2^2 between class-conditionals, then the outer OT
    on ||x - x'||^2 + W_2^2(y, y'); returns (distance, label distances)."""
    import ot

    cs, ct = np.unique(ys), np.unique(yt)
    W = np.zeros((len(cs), len(ct)))
    for a, c in enumerate(cs):
        for b, e in enumerate(ct):
            A, B = xs[ys == c], xt[yt == e]
            W[a, b] = ot.emd2(np.full(len(A), 1 / len(A)), np.full(len(B), 1 / len(B)), ot.dist(A, B))
    M = ot.dist(xs, xt) + W[np.searchsorted(cs, ys)][:, np.searchsorted(ct, yt)]
    cost = ot.emd2(np.full(len(xs), 1 / len(xs)), np.full(len(xt), 1 / len(xt)), M)
    return np.sqrt(cost), W


def test_exact_distance_matches_pot_and_outputs_exist(tmp_path):
    from dsflow.data import moons, rings

    summary = run_distance(compose_distance("inner=exact", "outer=exact", "p=2"), run_dir=tmp_path)
    xs, ys = moons(n_samples=16, seed=0).numpy()
    xt, yt = rings(n_per_class=5, seed=0).numpy()
    distance, W = reference_otdd(xs.astype(np.float64), ys, xt.astype(np.float64), yt)
    # float64 network simplex on both sides: agreement to round-off
    assert summary["distance"] == pytest.approx(distance, rel=1e-6)
    np.testing.assert_allclose(summary["label_distances"], W, rtol=1e-6, atol=1e-9)
    C = np.array(summary["class_coupling"])
    np.testing.assert_allclose(C.sum(axis=1), [0.5, 0.5], atol=1e-9)  # class masses of the source
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == "ok" and on_disk["source_class_names"] == ["0", "1"]
    for name in ("label_distances.png", "class_coupling.png", "distance.npz", "config.yaml"):
        assert (tmp_path / name).is_file()


def test_distance_failure_is_recorded(tmp_path):
    with pytest.raises(ValueError, match="flat features"):
        cfg = compose_distance("dataset@source=digits", "source.n_per_class=2", "dataset@target=moons", base=[])
        run_distance(cfg, run_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "flat features" in summary["error"]


def _interrupt_inside_otdd(monkeypatch, sig):
    """``dsflow.otdd`` replaced by one that delivers ``sig`` to this process (or, with
    ``sig=None``, raises a bare KeyboardInterrupt) in the middle of the computation."""
    import os

    import dsflow

    def otdd(*args, **kwargs):
        if sig is None:
            raise KeyboardInterrupt
        os.kill(os.getpid(), sig)
        raise AssertionError("the run's signal handler should have raised")

    monkeypatch.setattr(dsflow, "otdd", otdd)


@pytest.mark.parametrize("sig,name", [(2, "SIGINT"), (15, "SIGTERM"), (None, "SIGINT")])
def test_an_interrupt_during_the_distance_is_recorded_and_propagates(tmp_path, monkeypatch, sig, name):
    import signal

    from dsflow.flow.interrupt import RunInterrupted, exit_code_of

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    _interrupt_inside_otdd(monkeypatch, sig)
    with pytest.raises(KeyboardInterrupt) as caught:
        run_distance(compose_distance("inner=exact", "outer=exact"), run_dir=tmp_path)
    if sig is not None:  # a real signal: the run's handler turned it into RunInterrupted
        assert isinstance(caught.value, RunInterrupted) and exit_code_of(caught.value) == 128 + sig
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == name
    assert summary["wall_time_s"] >= 0 and caught.value.summary["status"] == "interrupted"
    assert (tmp_path / "config.yaml").is_file()
    assert {s: signal.getsignal(s) for s in before} == before  # the run's handlers are gone


def test_distance_summary_says_running_while_it_computes(tmp_path, monkeypatch):
    import dsflow

    seen = {}

    def otdd(*args, **kwargs):
        seen.update(json.loads((tmp_path / "summary.json").read_text()))
        raise RuntimeError("stop here")

    monkeypatch.setattr(dsflow, "otdd", otdd)
    with pytest.raises(RuntimeError, match="stop here"):
        run_distance(compose_distance(), run_dir=tmp_path)
    assert seen["status"] == "running" and (tmp_path / "config.yaml").is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error_type"] == "RuntimeError"
    assert "Traceback" in summary["traceback"] and "stop here" in summary["traceback"]


SLOW_DISTANCE = """
import sys, time
import dsflow
def otdd(*args, **kwargs):  # a long distance computation
    time.sleep(600)
dsflow.otdd = otdd
from dsflow.cli import distance_main
sys.argv = ["dsflow-distance", *sys.argv[1:]]
distance_main()
"""


@pytest.mark.parametrize("sig,code", [(2, 130), (15, 143)])
def test_a_signal_stops_dsflow_distance_with_its_exit_status(tmp_path, sig, code):
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DISTANCE, *SMALL, f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    summary_file = run_dir / "summary.json"
    end = time.monotonic() + 90
    while not (summary_file.is_file() and (run_dir / "config.yaml").is_file()):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < end, "timed out waiting for dsflow-distance to start"
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "interrupted by" in err and "before the distance computation started" in err
    summary = json.loads(summary_file.read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == signal.Signals(sig).name
