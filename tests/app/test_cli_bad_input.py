"""Bad input on the command line: one line naming the key or the file and the fix, no
traceback, exit status 1 (issue 9, section 5).  Subprocesses, as a user runs them."""

import json

import numpy as np
import pytest

from test_cli import DISTANCE, DSFLOW, TINY, run_cli, with_overrides

pytestmark = pytest.mark.skipif(DSFLOW is None, reason="dsflow is not installed (pip install -e .)")


def error_line(proc):
    """The command's own error line; asserts that nothing looks like a traceback."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("dsflow: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def bad_files(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2)).astype(np.float32), np.arange(40) % 2
    files = {}
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        bad = x.copy()
        bad[3, 1] = value
        np.savez(tmp_path / f"{name}.npz", x=bad, y=y)
        files[name] = tmp_path / f"{name}.npz"
    single = y.copy()
    single[0] = 5  # class 5 has one sample
    np.savez(tmp_path / "single.npz", x=x, y=single)
    files["single"] = tmp_path / "single.npz"
    (tmp_path / "text.npz").write_text("not an archive\n")
    files["text"] = tmp_path / "text.npz"
    np.save(tmp_path / "array.npy", x)
    files["npy"] = tmp_path / "array.npy"
    (tmp_path / "folder.npz").mkdir()
    files["dir"] = tmp_path / "folder.npz"
    return files


@pytest.mark.parametrize("kind,expected", [("nan", "1 NaN"), ("inf", "1 Inf")])
def test_distance_refuses_non_finite_data_like_dsflow(tmp_path, bad_files, kind, expected):
    # before: `OTDD = 0`, exit 0 and status ok with a NaN; `nan` with an Inf
    args = ["dataset@source=npz", f"source.path={bad_files[kind]}", "dataset@target=moons", "device=cpu"]
    for command, extra in ((DISTANCE, []), (DSFLOW, ["steps=1", "logger=none"])):
        out = tmp_path / f"{kind}_{'d' if command == DISTANCE else 'f'}"
        line = error_line(run_cli([*args, *extra, f"hydra.run.dir={out}"], tmp_path, command=command))
        assert f"source dataset '{kind}'" in line and expected in line and "drop those samples" in line
        assert json.loads((out / "summary.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("kind,expected", [
    ("text", "is not an .npz archive"), ("npy", "is a .npy file"), ("dir", "is a directory")])
def test_npz_loader_names_the_file_and_the_format(tmp_path, bad_files, kind, expected):
    line = error_line(run_cli(["dataset@source=npz", f"source.path={bad_files[kind]}", "dataset@target=moons",
                               f"hydra.run.dir={tmp_path / kind}"], tmp_path, command=DISTANCE))
    assert line.startswith("dsflow: error: source:") and str(bad_files[kind]) in line and expected in line
    assert "numpy.savez(path, x=x, y=y)" in line and "allow_pickle" not in line


@pytest.mark.parametrize("override,named", [("steps=abc", "steps='abc'"), ("optimizer.lr=abc", "optimizer.lr='abc'"),
                                            ("steps=2.5", "steps=2.5")])
def test_bad_types_are_one_line(tmp_path, override, named):
    line = error_line(run_cli(with_overrides(TINY, override, "logger=none", f"hydra.run.dir={tmp_path / 'r'}"),
                              tmp_path))
    assert named in line and "must be" in line


def test_singleton_class_names_dataset_class_and_a_working_override(tmp_path, bad_files):
    base = ["dataset@source=npz", f"source.path={bad_files['single']}", "dataset@target=moons", "steps=2",
            "optimizer.lr=10", "logger=none", "progress=false", "plot=false"]
    for functional in ("otdd", "otdd_ball"):  # a top-level OTDD and one nested in a weighted sum
        line = error_line(run_cli([*base, f"functional={functional}", f"hydra.run.dir={tmp_path / functional}"],
                                  tmp_path))
        assert "source dataset 'single'" in line and "class 5 has a single sample" in line
        fix = line.split("point mass with ", 1)[1].split(",", 1)[0]
        assert fix.endswith("allow_singletons=true")
        # the suggested override works as printed
        ok = run_cli([*base, f"functional={functional}", fix, f"hydra.run.dir={tmp_path / (functional + '_ok')}"],
                     tmp_path)
        assert ok.returncode == 0, ok.stderr
    distance = ["dataset@source=npz", f"source.path={bad_files['single']}", "dataset@target=moons"]
    line = error_line(run_cli([*distance, f"hydra.run.dir={tmp_path / 'd'}"], tmp_path, command=DISTANCE))
    fix = line.split("point mass with ", 1)[1].split(",", 1)[0]
    assert fix == "allow_singletons=true"
    ok = run_cli([*distance, fix, f"hydra.run.dir={tmp_path / 'd_ok'}"], tmp_path, command=DISTANCE)
    assert ok.returncode == 0 and "OTDD(single -> moons)" in ok.stdout, ok.stderr


def test_unwritable_run_dir_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for command, args in ((DSFLOW, with_overrides(TINY, "logger=none")), (DISTANCE, [])):
        for bad in ("/proc/dsflow_x", str(blocker / "run")):
            line = error_line(run_cli([*args, f"hydra.run.dir={bad}"], tmp_path, command=command))
            assert f"hydra.run.dir={bad}" in line and "pick a folder you can write to" in line
    line = error_line(run_cli(["-m", *with_overrides(TINY, "logger=none", "steps=1,2"),
                               "hydra.sweep.dir=/proc/dsflow_y"], tmp_path))
    assert "hydra.sweep.dir=/proc/dsflow_y" in line


def test_second_run_into_the_same_dir_is_refused(tmp_path):
    args = with_overrides(TINY, "logger=none", "steps=2", "plot=false", f"hydra.run.dir={tmp_path / 'run'}")
    assert run_cli(args, tmp_path).returncode == 0
    first = (tmp_path / "run" / "summary.json").read_text()
    line = error_line(run_cli([*args, "seed=1"], tmp_path))
    assert "already holds the outputs of a previous run" in line and "overwrite=true" in line
    assert (tmp_path / "run" / "summary.json").read_text() == first
    assert run_cli([*args, "seed=1", "overwrite=true"], tmp_path).returncode == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["seed"] == 1


def test_pushforward_is_validated_before_step_0(tmp_path):
    for override, expected in (("oracle=none", "oracle=none"),
                               ("task.pushforward.architecture=bogus", "pushforward.architecture='bogus'")):
        out = tmp_path / override.split("=")[0]
        # the demo (holdout 0.2, push-forward on, MLP oracle) with one thing wrong
        line = error_line(run_cli(["+experiment=default", override, "steps=2", "logger=none",
                                   f"hydra.run.dir={out}"], tmp_path))
        assert expected in line
        metrics = out / "metrics.jsonl"
        assert not metrics.exists() or not metrics.read_text().strip()  # refused before step 0
