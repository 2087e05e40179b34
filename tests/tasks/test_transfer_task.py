"""The k-shot transfer task end to end on tiny digits: every adaptation setting trains a
classifier and is scored, the sweep table has every row and column, one seed repeats its
numbers and another changes them; the class map and the config checks."""

import json

import pytest
import torch
from hydra import compose, initialize_config_module

from dsflow.app import run
from dsflow.data import digits

TINY = ["logger=none", "progress=false", "plot=false", "steps=3",
        "task.shots=3", "source.n_per_class=8", "task.holdout=0.5", "flow.trajectory_every=1",
        "task.classifier.options.hidden=[16]", "task.classifier.epochs=3", "task.classifier.min_updates=40",
        "task.train_runs=2", "task.finetune.epochs=2", "task.pushforward.epochs=2", "task.pushforward.restarts=1",
        "task.pushforward.options.hidden=[8]", "task.test.max_samples=300", "task.domain_distance.max_samples=100"]


def compose_cfg(*overrides, experiment="transfer_digits"):
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose(config_name="config", overrides=[f"+experiment={experiment}", *TINY, *overrides])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    summaries = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        summaries[name] = run(compose_cfg(f"seed={seed}"), run_dir=root / name)
    # the other family, same protocol: one more row of the same table
    summaries["w"] = run(compose_cfg("functional.n_projections=20", "flow.trajectory_every=1",
                                     experiment="transfer_digits_wow"), run_dir=root / "w")
    return root, summaries


def test_every_setting_is_trained_and_scored(sweep):
    _, summaries = sweep
    s = summaries["a"]
    assert s["status"] == "ok" and s["task"] == "transfer" and s["shots"] == 3 and s["flow_family"] == "otdd"
    acc = s["transfer_accuracy"]
    assert list(acc) == ["target", "target+source", "target+flowed", "target+trajectory", "target+pushforward",
                         "finetune"]
    assert all(len(v) == 2 and all(0.0 <= a <= 1.0 for a in v) for v in acc.values())
    assert max(max(v) for v in acc.values()) > 0.3  # the classifiers learn (chance is 0.1)
    sizes = s["transfer_train_size"]
    n = s["n"]  # the particles: 40 source samples, half kept out for the push-forward map
    assert n == 40 and s["extra_source_n"] == 40
    assert sizes["target"] == 30 and sizes["target+flowed"] == 30 + n and sizes["target+source"] == 30 + n
    assert sizes["target+trajectory"] == 30 + 3 * n  # steps 1, 2, 3 (z_0 is the raw source)
    assert sizes["target+pushforward"] == 30 + 40
    assert s["transfer_test_n"] == 300 and s["domain_distance"] > 0
    assert s["transfer_label_map"] == {str(c): c for c in range(10)}  # a 30-degree rotation keeps every class


def test_the_wow_family_runs_the_same_protocol(sweep):
    _, s = sweep
    w = s["w"]
    assert w["status"] == "ok" and w["flow_family"] == "mmd_sw" and w["functional"] == "MMDSW"
    assert list(w["transfer_accuracy"]) == list(s["a"]["transfer_accuracy"])
    assert w["objective_after"] < w["objective_before"]


def test_same_seed_repeats_and_another_seed_changes_the_numbers(sweep):
    _, s = sweep
    assert s["a"]["transfer_accuracy"] == s["b"]["transfer_accuracy"]
    assert s["a"]["transfer_accuracy"] != s["c"]["transfer_accuracy"]


def test_report_table_has_every_setting_and_pools_the_seeds(sweep):
    from dsflow.report import write_report

    root, _ = sweep
    written = write_report(root, plots=True)
    table = written["transfer"].read_text()
    assert written["transfer_settings_png"].stat().st_size > 5000  # the task's sweep figures
    assert written["transfer_gain_vs_distance_png"].stat().st_size > 5000
    for column in ("target only", "+ raw source", "+ flowed (z_T)", "+ trajectories (z_1:T)", "+ push-forward h(x)",
                   "fine-tune (source -> target)"):
        assert column in table
    row = [line for line in table.splitlines() if line.startswith("| digits[rotate(angle=30)] -> digits")]
    otdd = [r for r in row if "| 3 | otdd |" in r]
    wow = [r for r in row if "| 3 | mmd_sw |" in r]
    assert len(row) == 2 and len(otdd) == 1 and "3 x 2" in otdd[0]  # 3 runs x 2 trainings, one row
    assert otdd[0].count("±") == 6
    assert len(wow) == 1 and "1 x 2" in wow[0]  # the WoW family's row


def test_sweep_figures(sweep, tmp_path):
    from dsflow.report import find_runs
    from dsflow.tasks.transfer import plot_gain_vs_distance, plot_settings_by_pair

    root, _ = sweep
    runs = find_runs(root)
    assert plot_settings_by_pair(runs, tmp_path / "f3e.png").stat().st_size > 5000
    assert plot_gain_vs_distance(runs, tmp_path / "f4.png").stat().st_size > 5000


def test_class_map_recovers_a_permutation():
    from dsflow.tasks.transfer import class_map, relabel

    target = digits(split="train", n_per_class=5, seed=0)
    perm = torch.tensor([3, 0, 1, 2, 5, 4, 7, 6, 9, 8])
    flowed = digits(split="test", n_per_class=20, seed=1)
    flowed = flowed.with_(y=perm[flowed.y])  # class c of the "source" looks like digit perm^-1[c]
    mapping = class_map(flowed, target, "ot")
    assert all(mapping[int(perm[d])] == d for d in range(10))
    assert torch.equal(relabel(flowed, mapping).y, digits(split="test", n_per_class=20, seed=1).y)
    with pytest.raises(ValueError, match="task.label_map=ot"):
        class_map(flowed.with_(y=flowed.y + 10), target, "identity")


def test_config_errors_name_the_key(tmp_path):
    from dsflow.config_checks import ConfigValueError

    with pytest.raises(ConfigValueError, match="flow.trajectory_every"):
        run(compose_cfg("flow.trajectory_every=0"), run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="set task.holdout"):
        run(compose_cfg("task.holdout=0"), run_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="target.n_per_class=3"):
        run(compose_cfg("target.n_per_class=4"), run_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="task.classifier.architecture"):
        run(compose_cfg("task.classifier.architecture=vgg"), run_dir=tmp_path / "d")
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["status"] == "failed"
