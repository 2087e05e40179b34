"""`dsflow.app.run` in-process: outputs, failures recorded, custom stage lists (tasks: tests/tasks)."""

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from dsflow.app import DEFAULT_STAGES, run, stage_flow
from dsflow.loggers.local import read_metrics

TINY = ["dataset@source=gaussians", "dataset@target=moons", "source.n_per_class=10",
        "target.n_samples=30", "steps=6", "optimizer.lr=10", "progress=false", "logger=none"]


def compose_cfg(*overrides):
    keys = {o.split("=", 1)[0] for o in overrides}  # Hydra rejects a key set twice
    base = [o for o in TINY if o.split("=", 1)[0] not in keys]
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose(config_name="config", overrides=[*base, *overrides])


def test_run_writes_outputs_and_trajectory(tmp_path):
    summary = run(compose_cfg("flow.trajectory_every=3", "dtype=float64", "plot=false"), run_dir=tmp_path)
    assert summary["status"] == "ok" and summary["dtype"] == "float64"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["objective_after"] == pytest.approx(summary["objective_after"])
    assert on_disk["objective_after"] < on_disk["objective_before"]
    assert "seed: 0" in (tmp_path / "config.yaml").read_text()  # resolved config
    with np.load(tmp_path / "flowed.npz") as f:
        assert f["x"].dtype == np.float64 and f["x"].shape == (30, 2)
        # frames at steps 0, 3, 6; the last frame is the saved final state
        assert list(f["trajectory_steps"]) == [0, 3, 6] and f["trajectory"].shape == (3, 30, 2)
        np.testing.assert_allclose(f["trajectory"][-1], f["x"], rtol=1e-6)
    assert not list(tmp_path.glob("*.png"))  # plot=false
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 6


def test_dimension_mismatch_fails_early_with_resize_hint(tmp_path):
    cfg = compose_cfg("dataset@source=digits", "source.n_per_class=3")
    with pytest.raises(ValueError, match=r"d=64.*d=2.*holds images and .* flat features"):  # hints: tests/data/test_compat.py
        run(cfg, run_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "flat features" in summary["error"]
    assert "Traceback" in summary["traceback"]
    assert read_metrics(tmp_path / "metrics.jsonl") == []  # failed before any step


def test_divergence_saves_last_finite_state(tmp_path):
    # mean ||x||^2 with lr=1e30: step 0 throws x to ~1e29 (finite), step 1's objective
    # overflows float32 to inf -> FlowDivergedError at step 1
    cfg = compose_cfg("functional=norm", "functional.squared=true", "optimizer.lr=1e30")
    with pytest.raises(Exception) as info:
        run(cfg, run_dir=tmp_path)
    assert type(info.value).__name__ == "FlowDivergedError"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["diverged_at_step"] == 1
    assert "step 1" in summary["error"] and summary["error"].startswith("FlowDivergedError")
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 1  # the metrics so far
    with np.load(tmp_path / "flowed_last_finite.npz") as f:
        assert np.isfinite(f["x"]).all() and f["x"].shape == (30, 2) and int(f["step"]) == 1
        assert np.abs(f["x"]).max() > 1e20  # the state after step 0, not the initial one


def test_bad_run_level_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="use one of float32, float64"):
        run(compose_cfg("dtype=float16"), run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        run(compose_cfg("device=gpu"), run_dir=tmp_path / "b")


def test_custom_stage_list(tmp_path):
    stages = [s for s in DEFAULT_STAGES if s.__name__ not in ("stage_plots",)]
    assert stage_flow in stages
    summary = run(compose_cfg(), run_dir=tmp_path, stages=stages)
    assert summary["status"] == "ok" and not list(tmp_path.glob("*.png"))


def test_low_dimensional_run_plots_paths_gif_parts_and_class_count(tmp_path):
    cfg = compose_cfg("functional=otdd_ball", "dynamics=jd_vl_kmeans", "dynamics.n_clusters=2",
                      "flow.trajectory_every=2", "functional.terms.otdd.functional.entreg=1.0")
    summary = run(cfg, run_dir=tmp_path)
    assert summary["status"] == "ok"
    for name in ("trajectories.png", "objective_parts.png", "class_count.png", "scatter.png"):
        assert (tmp_path / name).stat().st_size > 2000, name
    from PIL import Image

    with Image.open(tmp_path / "trajectories.gif") as gif:
        assert gif.n_frames == 4  # steps 0, 2, 4, 6
