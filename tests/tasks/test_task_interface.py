"""Tasks through the app: a task defined only in the tests runs end to end (one module, one
config, no edit of dsflow/app.py); the flow task refuses an oracle; the resume fingerprint
follows the task options that move the particles."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from dsflow.app import flow_fingerprint, run
from dsflow.loggers.local import read_metrics

HERE = Path(__file__).resolve().parent
TINY = ["dataset@source=gaussians", "dataset@target=moons", "source.n_per_class=10", "target.n_samples=30",
        "steps=4", "optimizer.lr=10", "progress=false", "logger=none"]


def compose_cfg(*overrides):
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, *overrides])


def test_a_task_defined_in_the_tests_runs_end_to_end(tmp_path, monkeypatch):
    from dsflow.report import write_report

    monkeypatch.syspath_prepend(str(HERE))  # toy_task.py, named by the config's _target_
    cfg = compose_cfg(f"hydra.searchpath=[file://{HERE / 'configs'}]", "task=toy")
    summary = run(cfg, run_dir=tmp_path / "0")
    assert summary["status"] == "ok" and summary["task"] == "toy" and summary["task_class"] == "toy_task.ToyTask"
    assert summary["toy_kept"] == 15 and summary["n"] == 30  # the task flowed every other sample ...
    with open(tmp_path / "0" / "flowed.npz", "rb"):
        pass
    import numpy as np

    assert np.load(tmp_path / "0" / "flowed.npz")["x"].shape == (15, 2)  # ... and that is what flowed
    assert summary["toy_started"] and summary["toy_steps"] == [0, 1, 2, 3] and summary["shift"] > 0
    assert [r["toy_step"] for r in read_metrics(tmp_path / "0" / "metrics.jsonl")] == [0, 1, 2, 3]
    assert (tmp_path / "0" / "toy_steps.png").stat().st_size > 1000  # drawn by the app
    assert json.loads((tmp_path / "0" / "summary.json").read_text())["shift"] == pytest.approx(summary["shift"])
    written = write_report(tmp_path, plots=False)  # the report asks the task for its tables
    assert "| 0 |" in written["toy_table"].read_text() and "Toy shifts" in written["markdown"].read_text()


def test_flow_task_refuses_an_oracle_and_names_the_fix(tmp_path):
    from dsflow.config_checks import ConfigValueError

    with pytest.raises(ConfigValueError, match="add task=repurpose"):
        run(compose_cfg("oracle=mlp_digits"), run_dir=tmp_path)


def test_fingerprint_follows_the_task_options_that_move_the_particles():
    """task.holdout, task.source_labels and task.pseudo_labels change what flows: in the
    fingerprint; task.pushforward (after the flow) and the oracle are not."""
    base = flow_fingerprint(compose_cfg("task=repurpose"))
    for changed in ("task.holdout=0.2", "task.source_labels=pseudo", "task.pseudo_labels.k=3"):
        assert flow_fingerprint(compose_cfg("task=repurpose", changed)) != base, changed
    for same in ("task.pushforward.epochs=3", "task.pushforward.enabled=true", "oracle=mlp_digits"):
        assert flow_fingerprint(compose_cfg("task=repurpose", same)) == base, same
    assert flow_fingerprint(compose_cfg("task=flow")) != base  # another protocol, another flow
