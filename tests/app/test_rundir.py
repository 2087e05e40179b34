"""`dsflow.rundir`: the run directory is writable and not a previous run's (issue 9, section 5)."""

import json

import pytest
from hydra import compose, initialize_config_module

from dsflow.app import run
from dsflow.rundir import RunDirError, check_previous_run, check_writable

TINY = ["dataset@source=gaussians", "dataset@target=moons", "source.n_per_class=10",
        "target.n_samples=30", "steps=2", "optimizer.lr=10", "progress=false", "logger=none", "plot=false"]


def compose_cfg(*overrides):
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, *overrides])


def test_unwritable_paths_are_named(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for bad, reason in ((a_file / "run", "Not a directory"), (a_file, "is a file"), ("/proc/dsflow_x", "cannot be created")):
        with pytest.raises(RunDirError) as info:
            check_writable(bad)
        assert str(bad) in str(info.value) and reason in str(info.value) and "hydra.run.dir=" in str(info.value)
    # a read-only folder (root ignores permission bits, so the check is simulated)
    import dsflow.rundir as rundir

    monkeypatch.setattr(rundir.os, "access", lambda path, mode: False)
    with pytest.raises(RunDirError, match="is not writable"):
        check_writable(tmp_path / "ro")


def test_second_run_into_the_same_dir_is_refused_unless_resume_or_overwrite(tmp_path):
    first = run(compose_cfg(), run_dir=tmp_path)
    assert first["status"] == "ok"
    before = (tmp_path / "summary.json").read_text()
    with pytest.raises(RunDirError, match="already holds the outputs of a previous run") as info:
        run(compose_cfg("seed=1"), run_dir=tmp_path)
    assert "overwrite=true" in str(info.value) and "flow.resume=true" in str(info.value)
    assert (tmp_path / "summary.json").read_text() == before  # untouched
    assert check_previous_run(tmp_path, resume=True) == ["summary.json", "metrics.jsonl"]
    second = run(compose_cfg("seed=1", "overwrite=true"), run_dir=tmp_path)
    assert second["status"] == "ok" and json.loads((tmp_path / "summary.json").read_text())["seed"] == 1
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2  # replaced, not appended


def test_overwrite_removes_the_old_runs_checkpoints_so_a_resume_cannot_pick_them(tmp_path):
    run(compose_cfg("steps=8", "flow.checkpoint_every=2"), run_dir=tmp_path)
    run(compose_cfg("steps=4", "flow.checkpoint_every=2", "overwrite=true"), run_dir=tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["ckpt_00000002.pt", "ckpt_00000004.pt"]  # the old run's 6 and 8 are gone
    s = run(compose_cfg("steps=4", "flow.checkpoint_every=2", "flow.resume=true"), run_dir=tmp_path)
    assert s["resumed_from"]["step"] == 4
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]


def test_a_resume_without_a_checkpoint_does_not_replace_the_previous_run(tmp_path):
    run(compose_cfg("steps=5"), run_dir=tmp_path)
    rows = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(RunDirError, match="no checkpoint") as info:
        run(compose_cfg("steps=2", "flow.resume=true"), run_dir=tmp_path)
    assert "overwrite=true" in str(info.value)
    assert (tmp_path / "metrics.jsonl").read_text() == rows  # all 5 rows kept


def test_a_run_that_failed_before_its_first_step_does_not_block_its_dir(tmp_path):
    with pytest.raises(Exception, match="n_per_class"):
        run(compose_cfg("source.n_per_class=0"), run_dir=tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"
    assert run(compose_cfg(), run_dir=tmp_path)["status"] == "ok"
