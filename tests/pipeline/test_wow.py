"""The WoW experiments end to end: presets in the paper's units, runs on fake *NIST files and on
the embedded digits, the rings picture, and the family comparison's report (tiny sizes: the
numbers say nothing about the method, the tests check what each run writes and decides)."""

import json

import pytest
from hydra.utils import instantiate

from dsflow.app import run
from dsflow.loggers.local import read_metrics

from pipeline_helpers import compose_cfg, fake_experiment


def test_wow_presets_are_the_papers_hyper_parameters():
    cfg = compose_cfg("+experiment=wow_nist_to_mnist")
    assert cfg.functional._target_ == "dsflow.functionals.MMDSW" and cfg.functional.kernel == "riesz"
    assert cfg.functional.n_projections == 500 and cfg.functional.r == 1.0
    assert cfg.optimizer.lr == 0.1 and cfg.optimizer.momentum == 0.9 and cfg.optimizer.dampening == 0
    assert cfg.source.n_per_class == 500 and cfg.target.n_per_class == 500
    assert cfg.oracle.matching == "w2" and cfg.dynamics._target_.endswith("FeatureDriven")
    digits = compose_cfg("+experiment=wow_digits_da")
    assert digits.optimizer.lr == 3.0 and digits.steps == 250 and digits.flow.schedule == "cosine" and digits.oracle.matching == "w2"
    from hydra import compose, initialize_config_module

    with initialize_config_module("dsflow.configs", version_base="1.3"):
        sweep = compose(config_name="config", overrides=["+experiment=otdd_vs_wow"], return_hydra_config=True)
    assert dict(sweep.hydra.sweeper.params) == {"+family": "otdd,wow", "seed": "0,1"}


def test_a_hint_for_otdd_options_left_on_mmd_sw_works():
    cfg = compose_cfg("+experiment=default", "+family=wow")  # the demo sets functional.entreg (OTDD)
    with pytest.raises(Exception, match="~functional.entreg"):  # Hydra wraps it in InstantiationException
        instantiate(cfg.functional)
    fixed = compose_cfg("+experiment=default", "+family=wow", "~functional.entreg")
    assert type(instantiate(fixed.functional)).__name__ == "MMDSW"


def test_wow_nist_to_mnist_e2e_on_fake_files(nist_root, tmp_path):
    cfg = compose_cfg(*fake_experiment("wow_nist_to_mnist", nist_root, tmp_path / "cache", "dataset@source=kmnist",
                                       "source.n_per_class=null", "target.n_per_class=null", "optimizer.lr=0.1",
                                       "functional.n_projections=20", "plot=false", steps=3))
    summary = run(cfg, run_dir=tmp_path / "run")
    assert summary["status"] == "ok" and summary["functional"] == "MMDSW" and summary["steps_done"] == 3
    for key in ("accuracy_before", "accuracy_after"):
        assert 0.0 <= summary[key] <= 1.0
    # each flowed class got one MNIST class (exact OT between classes, uniform weights: a permutation)
    assert sorted(summary["oracle_correspondence_after"].values()) == list(range(10))
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(rows) == 3 and all("mmd_sw" in r["parts"] or r["objective"] is not None for r in rows)
    assert rows[-1]["lr"] == pytest.approx(0.1)  # lr is tau: no factor n for class-mass functionals


def test_wow_digits_da_e2e_with_a_time_step(tmp_path):
    """time_step on a class-mass functional is optimizer.lr itself (velocity factor 1)."""
    cfg = compose_cfg("+experiment=wow_digits_da", "steps=4", "optimizer=sgd", "time_step=0.5", "~optimizer.momentum",
                      "oracle.epochs=1", f"oracle.cache_dir={tmp_path / 'cache'}", "oracle.eval_every=2",
                      "functional.n_projections=10", "source.n_per_class=8", "target.n_per_class=8",
                      "oracle.matching=nn_vote")
    summary = run(cfg, run_dir=tmp_path / "run")
    assert summary["status"] == "ok" and summary["lr"] == pytest.approx(0.5)
    assert summary["objective_after"] < summary["objective_before"]
    assert {int(c) for c in summary["oracle_correspondence_after"]} == set(range(10))
    assert (tmp_path / "run" / "images.png").is_file() and (tmp_path / "run" / "oracle_accuracy.png").is_file()


def test_wow_rings_draws_trajectories_and_a_gif(tmp_path):
    cfg = compose_cfg("+experiment=wow_rings", "steps=6", "flow.trajectory_every=2", "source.n_samples=30",
                      "target.n_samples=30", "functional.n_projections=8")
    summary = run(cfg, run_dir=tmp_path / "run")
    assert summary["status"] == "ok" and summary["objective_after"] < summary["objective_before"]
    for name in ("scatter.png", "trajectories.png", "trajectories.gif"):
        assert (tmp_path / "run" / name).stat().st_size > 0, name


def test_the_families_table_and_figure_from_run_directories(tmp_path):
    from dsflow.report import find_runs, write_report

    def job(i, family, seed, acc, functional):
        d = tmp_path / str(i)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(f"- +family={family}\n- seed={seed}\n")
        (d / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    choices:\n      family: {family}\n")
        (d / "summary.json").write_text(json.dumps(dict(
            status="ok", task_class="dsflow.tasks.repurpose.RepurposeTask", functional=functional,
            accuracy_before=0.2, accuracy_after=acc, objective_after=0.1, wall_time_s=10.0 + seed,
            flow_time_s=8.0, time_per_step_s=0.2, steps_done=40)))
        (d / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "accuracy": acc * s / 4, "wall_time": s})
                                                   for s in range(1, 5)) + "\n")

    job(0, "otdd", 0, 0.95, "OTDD")
    job(1, "otdd", 1, 0.97, "OTDD")
    job(2, "wow", 0, 0.99, "MMDSW")
    written = write_report(tmp_path)
    table = (tmp_path / "families.md").read_text()
    assert "| otdd | 2 | 96 ± 1.4 |" in table  # mean ± sample std over the two seeds, in %
    assert "| wow | 1 | 99 |" in table
    assert (tmp_path / "families_accuracy_vs_time.png").stat().st_size > 0 and "families_accuracy_vs_time_png" in written
    assert len(find_runs(tmp_path)) == 3
