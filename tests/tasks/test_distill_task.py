"""The distillation task end to end on tiny digits: the synthetic set is built, flowed and
scored with its baselines, the table has every row, one seed repeats its numbers and another
changes them; the initialisations and the config checks."""

import pytest
import torch
from hydra import compose, initialize_config_module

from dsflow.app import run
from dsflow.data import digits

TINY = ["+experiment=distill_digits", "logger=none", "progress=false", "plot=false", "steps=4", "task.ipc=2",
        "target.n_per_class=20", "source.n_per_class=20", "task.eval_every=2",
        "task.classifier.epochs=30", "task.train_runs=2", "+task.test.max_samples=200"]


def compose_cfg(*overrides):
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, *overrides])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    summaries = {}
    for name, overrides in (("a", ["seed=0"]), ("b", ["seed=0"]), ("c", ["seed=1"]),
                            ("d", ["seed=0", "task.ipc=1", "task.init=kmeans", "plot=true"])):
        summaries[name] = run(compose_cfg("functional.n_projections=20", *overrides), run_dir=root / name)
    return root, summaries


def test_synthetic_set_is_flowed_and_scored_with_every_baseline(sweep):
    root, summaries = sweep
    s = summaries["a"]
    assert s["status"] == "ok" and s["task"] == "distill" and s["ipc"] == 2 and s["n"] == 20
    assert s["flow_family"] == "mmd_sw" and s["distill_test_n"] == 200 and s["distill_real_n"] == 200
    acc = s["distill_accuracy"]
    assert set(acc) == {"flowed", "random", "kmeans", "init", "full"}
    assert all(len(v) == 2 and all(0 <= a <= 1 for a in v) for v in acc.values())
    assert sum(acc["full"]) / 2 > 0.8  # 200 real digits train a logistic regression well (chance 0.1)
    assert s["distill_history"]["step"] == [0, 2, 4]  # accuracy against flow step
    import numpy as np

    flowed = np.load(root / "a" / "flowed.npz")
    assert flowed["x"].shape == (20, 64) and sorted(np.bincount(flowed["y"])) == [2] * 10
    d = summaries["d"]
    assert d["n"] == 10 and d["distill_init"] == "kmeans"
    assert d["distill_accuracy"]["init"] == d["distill_accuracy"]["kmeans"]  # k-means init is that baseline
    assert (root / "d" / "distill_images.png").stat().st_size > 3000
    assert (root / "d" / "distill_accuracy.png").stat().st_size > 3000


def test_same_seed_repeats_and_another_seed_changes_the_numbers(sweep):
    _, s = sweep
    assert s["a"]["distill_accuracy"] == s["b"]["distill_accuracy"]
    assert s["a"]["distill_accuracy"]["flowed"] != s["c"]["distill_accuracy"]["flowed"]
    assert s["a"]["distill_accuracy"]["random"] != s["c"]["distill_accuracy"]["random"]


def test_report_table_has_every_row(sweep):
    from dsflow.report import write_report

    root, _ = sweep
    written = write_report(root, plots=True)
    table = written["distill"].read_text()
    assert written["distill_vs_ipc_png"].stat().st_size > 5000  # the task's sweep figure
    assert "| method | 1 img/cls | 2 img/cls |" in table
    for row in ("random real images", "k-means centres", "synthetic before the flow (init real)",
                "flowed (mmd_sw, init real)", "flowed (mmd_sw, init kmeans)", "full training set"):
        assert f"| {row} |" in table, row
    flowed_real = next(line for line in table.splitlines() if line.startswith("| flowed (mmd_sw, init real)"))
    assert flowed_real.count("±") == 1  # only the 2-ipc runs used init real


@pytest.mark.parametrize("init", ["real", "kmeans", "noise"])
def test_initialisations_keep_ipc_per_class(init):
    from dsflow.tasks.distill import synthetic_set

    pool = digits(split="train", n_per_class=12)
    a, b = synthetic_set(pool, 3, init, seed=0), synthetic_set(pool, 3, init, seed=1)
    assert a.n == 30 and torch.equal(torch.bincount(a.y), torch.full((10,), 3))
    assert a.image_shape == (1, 8, 8) and float(a.x.min()) >= -1e-6 and float(a.x.max()) <= 1 + 1e-6
    assert torch.equal(a.x, synthetic_set(pool, 3, init, seed=0).x) and not torch.equal(a.x, b.x)
    if init == "real":  # rows of the pool
        assert all(bool((pool.x == row).all(1).any()) for row in a.x)
    if init == "kmeans":  # one centre per class at ipc 1 is the class mean
        m = synthetic_set(pool, 1, "kmeans", seed=0)
        assert torch.allclose(m.x[m.y == 4][0], pool.x[pool.y == 4].mean(0), atol=1e-5)


def test_config_errors_name_the_key(tmp_path):
    from dsflow.config_checks import ConfigValueError

    for override, message in (("task.init=zeros", "task.init"), ("task.ipc=0", "task.ipc"),
                              ("task.baselines=[best]", "task.baselines"),
                              ("task.classifier.architecture=vgg", "task.classifier.architecture")):
        with pytest.raises(ConfigValueError, match=message):
            run(compose_cfg(override), run_dir=tmp_path / override.split("=")[0])
    with pytest.raises(ValueError, match="class 0 of 'digits' has only 20 samples"):
        run(compose_cfg("task.ipc=25"), run_dir=tmp_path / "ipc")


def test_the_otdd_flow_is_a_config_choice(tmp_path):
    s = run(compose_cfg("functional=otdd", "optimizer=sgd", "time_step=0.25", "functional.allow_singletons=true",
                        "task.ipc=1", "task.baselines=[init]", "task.eval_every=0", "steps=2"), run_dir=tmp_path)
    assert s["status"] == "ok" and s["flow_family"] == "otdd" and s["functional"] == "OTDD"
    assert set(s["distill_accuracy"]) == {"flowed", "init"} and s["objective_after"] < s["objective_before"]
