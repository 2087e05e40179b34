"""dsflow-report on synthetic sweep directories (the layout Hydra multirun writes)."""

import csv
import json

import pytest

from dsflow.report import find_runs, main, swept_keys, write_report
from dsflow.tasks.repurpose import table1


def _job(root, num, overrides, summary, choices=None):
    d = root / str(num)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    ch = {"dataset@source": "usps", "dataset@target": "mnist", "experiment": "nist_to_mnist"}
    ch.update(choices or {})
    lines = "".join(f"      {k}: {v}\n" for k, v in ch.items())
    (d / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n" + lines)
    (d / "summary.json").write_text(json.dumps(summary))
    return d


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun"
    k = 0
    for entreg in (10, 100):
        for lr in (0.1, 1):
            acc = 0.5 + entreg / 400 + lr / 10
            _job(root, k, ["+experiment=nist_to_mnist", f"functional.entreg={entreg}", f"optimizer.lr={lr}"],
                 {"status": "ok", "accuracy_before": 0.7, "accuracy_after": acc, "objective_after": 1.0 / entreg})
            k += 1
    _job(root, k, ["+experiment=nist_to_mnist", "functional.entreg=1000", "optimizer.lr=1"],
         {"status": "failed", "error": "FlowDivergedError: objective is nan at step 3"})
    return root


def test_finds_runs_in_numeric_order_and_sweep_axes(sweep):
    runs = find_runs(sweep)
    assert [r.path.name for r in runs] == ["0", "1", "2", "3", "4"]
    assert swept_keys(runs) == ["functional.entreg", "optimizer.lr"]
    assert runs[0].choices["dataset@source"] == "usps"


def test_report_files_and_values(sweep, tmp_path):
    out = tmp_path / "rep"
    written = write_report(sweep, out)
    rows = list(csv.DictReader(open(written["csv"])))
    assert len(rows) == 5
    assert rows[3]["functional.entreg"] == "100" and rows[3]["optimizer.lr"] == "1"
    assert float(rows[3]["accuracy_after"]) == pytest.approx(0.5 + 100 / 400 + 0.1)
    assert rows[4]["status"] == "failed"
    md = written["markdown"].read_text()
    assert "1 failed" in md and "FlowDivergedError" in md
    assert (out / "report_accuracy_after_vs_functional.entreg.png").stat().st_size > 1000
    assert "accuracy_after_vs_optimizer.lr" in written


def test_table1_layout_uses_best_supervised_and_pseudo_rows(tmp_path):
    root = tmp_path / "t1"
    _job(root, 0, ["source_labels=true"], {"accuracy_before": 0.77, "accuracy_after": 0.95, "source_labels": "true"})
    _job(root, 1, ["source_labels=true"], {"accuracy_before": 0.79, "accuracy_after": 0.97, "source_labels": "true"})
    _job(root, 2, ["source_labels=pseudo"], {"accuracy_before": 0.78, "accuracy_after": 0.6, "source_labels": "pseudo",
                                             "accuracy_ideal_matching": 0.65})
    _job(root, 3, ["source_labels=true"], {"accuracy_before": 0.05, "accuracy_after": 0.9, "source_labels": "true"},
         choices={"dataset@source": "kmnist"})
    text = table1(find_runs(root))
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines() if line.startswith("| ")}
    assert lines[""][:2] == ["usps (ours)", "kmnist (ours)"]
    assert lines["Original (before flow)"][0] == "78.0"  # mean of 77, 79, 78
    assert lines["Flowed (supervised)"][0] == "97.0"  # best supervised run
    assert lines["Flowed (unsupervised, clusters aligned without labels)"][:2] == ["60.0", ""]
    assert lines["Flowed (unsupervised, idealised matching as in the paper)"][:3] == ["65.0", "", "66.4"]
    assert lines["Flowed (supervised)"][2] == "99.1"  # the paper's USPS number


def test_errors_are_clear(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no run found"):
        find_runs(tmp_path)
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_interrupted_and_killed_runs_are_reported_with_their_steps(tmp_path):
    root = tmp_path / "multirun"
    _job(root, 0, ["seed=0"], {"status": "ok", "steps": 40, "steps_done": 40, "objective_after": 0.1})
    _job(root, 1, ["seed=1"], {"status": "interrupted", "steps": 100000, "steps_done": 6,
                              "error": "interrupted by SIGINT after 6 of 100000 steps"})
    killed = _job(root, 2, ["seed=2"], {"status": "running"})  # kill -9: the summary written at the start
    (killed / "config.yaml").write_text("seed: 2\nsteps: 500\n")
    (killed / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n{"step": 2}\n{"step": 3, "obj')  # cut mid-line
    runs = find_runs(root)
    assert [(r.status, r.steps_done, r.steps) for r in runs] == [
        ("ok", 40, 40), ("interrupted", 6, 100000), ("running", 3, 500)]
    md = write_report(root, plots=False)["markdown"].read_text()
    assert "3 runs, 0 failed, 1 interrupted, 1 unfinished." in md
    assert "## Interrupted runs" in md and "`1`: 6 of 100000 steps completed (interrupted by SIGINT" in md
    assert "## Unfinished runs" in md and "`2`: status `running`" in md and "kill -9" in md and "3 of 500 steps" in md
    assert "## Failed runs" not in md
    with open(root / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["status"], r["steps_done"], r["steps"]) for r in rows] == [
        ("ok", "40", "40"), ("interrupted", "6", "100000"), ("running", "3", "500")]


def test_table1_is_the_repurpose_tasks_table(tmp_path):
    """dsflow-report asks each run's task for its tables: Table 1 comes from the repurpose
    task (named by task_class, or by source_labels in summaries written before tasks)."""
    root = tmp_path / "t"
    _job(root, 0, [], {"status": "ok", "accuracy_before": 0.2, "accuracy_after": 0.99, "source_labels": "true",
                       "task_class": "dsflow.tasks.repurpose.RepurposeTask"}, choices={"dataset@source": "digits_rotated"})
    _job(root, 1, [], {"status": "ok", "accuracy_before": 0.7, "accuracy_after": 0.9, "source_labels": "true"})
    _job(root, 2, [], {"status": "ok", "objective_after": 0.1, "task_class": "dsflow.tasks.flow.FlowTask"})
    written = write_report(root, plots=False)
    text = written["table1"].read_text()
    assert "digits_rotated (ours)" in text and "usps (ours)" in text and "99.0" in text
    assert "## Table 1" in written["markdown"].read_text()


# ---------------------------------------------------------------- seeds, curves, heatmaps
def _acc(entreg, lr, seed):
    """A made-up accuracy with a known mean over seeds: base(entreg, lr) + (seed - 1) / 100."""
    return 0.5 + entreg / 10 + lr / 100 + (seed - 1) / 100


def _seeded(root, times=True):
    """2 entreg x 2 lr x 3 seeds, each job with a metrics.jsonl; job (entreg=2, lr=10, seed=2)
    failed.  ``times=False``: no before/time metrics (fewer plots)."""
    k = 0
    for entreg in (1, 2):
        for lr in (1, 10):
            for seed in (0, 1, 2):
                failed = (entreg, lr, seed) == (2, 10, 2)
                summary = {"status": "failed", "error": "boom"} if failed else {
                    "status": "ok", "accuracy_before": 0.2, "accuracy_after": _acc(entreg, lr, seed),
                    "objective_before": 10.0, "objective_after": 1.0 / (entreg * lr + seed),
                    "wall_time": 5.0 + seed, "flow_time_s": 1.5, "steps": 3, "steps_done": 3}
                if not times and not failed:
                    summary = {k: v for k, v in summary.items() if not k.endswith(("before", "time", "time_s"))}
                d = _job(root, k, [f"functional.entreg={entreg}", f"optimizer.lr={lr}", f"seed={seed}"], summary)
                rows = [{"objective": 10.0 / (s + 1), "step_time": 0.5, "time": 0.5 * (s + 1), "step": s,
                         **({"accuracy": 0.2 + 0.1 * (s + 1)} if s % 2 == 1 else {})} for s in range(3)]
                (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                k += 1
    return root


@pytest.fixture
def seeded_sweep(tmp_path):
    return _seeded(tmp_path / "seeded")


def test_aggregate_means_and_sample_stds_over_seeds(seeded_sweep):
    import numpy as np

    from dsflow.report import aggregate

    aggs = aggregate(find_runs(seeded_sweep))
    assert [a.settings for a in aggs] == [{"functional.entreg": e, "optimizer.lr": lr}
                                          for e in ("1", "2") for lr in ("1", "10")]
    for a in aggs:
        e, lr = float(a.settings["functional.entreg"]), float(a.settings["optimizer.lr"])
        seeds = [0, 1] if (e, lr) == (2, 10) else [0, 1, 2]
        vals = np.array([_acc(e, lr, s) for s in seeds])
        assert a.n == len(seeds) and a.not_ok == 3 - len(seeds)
        assert a.mean("accuracy_after") == pytest.approx(vals.mean(), abs=1e-12)
        assert a.std("accuracy_after") == pytest.approx(vals.std(ddof=1), abs=1e-12)
        assert a.cell("accuracy_after") == f"{100 * vals.mean():.1f} ± {100 * vals.std(ddof=1):.1f}"
    # ``over`` names the repeats: over the learning rate instead, seeds become settings
    by_lr = aggregate(find_runs(seeded_sweep), over=("optimizer.lr",))
    assert len(by_lr) == 6 and {a.n for a in by_lr} == {2, 1}


def test_aggregate_keeps_runs_that_name_no_seed_apart(tmp_path):
    from dsflow.report import aggregate

    root = tmp_path / "r"
    for k, acc in enumerate((0.9, 0.7)):  # same overrides, no seed: two settings, not a mean
        _job(root, k, ["functional.entreg=1"], {"status": "ok", "accuracy_after": acc})
    aggs = aggregate(find_runs(root))
    assert [(a.n, a.mean("accuracy_after"), a.std("accuracy_after")) for a in aggs] == [(1, 0.9, None), (1, 0.7, None)]


def test_report_has_seed_table_and_wall_and_flow_times(seeded_sweep, tmp_path):
    written = write_report(seeded_sweep, tmp_path / "rep", plots=False)
    md = written["markdown"].read_text()
    assert "## Mean ± std over seed" in md
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in md.splitlines() if line.startswith("| 2 | 10")}
    (line,) = rows.values()
    assert "| 2 (+1 not ok) |" in line and "79.5 ± 0.7" in line  # 0.5 + 0.2 + 0.1 + (-1, 0)/100
    # wall time: 11 ok jobs of 5, 6, 7 s (the failed one, seed 2, has none); flow time 1.5 s
    # each, the failed job's read from its metrics.jsonl
    assert "wall time 65.0 s in all (11 jobs, median 6.0 s" in md and "flow time 18.0 s in all" in md
    with open(written["seeds_csv"]) as f:
        seeds = list(csv.DictReader(f))
    assert seeds[0]["functional.entreg"] == "1" and seeds[0]["n"] == "3"
    assert float(seeds[0]["accuracy_after_mean"]) == pytest.approx(_acc(1, 1, 1))
    assert float(seeds[0]["accuracy_after_std"]) == pytest.approx(0.01)


def test_report_figures_curves_and_heatmaps(tmp_path):
    written = write_report(_seeded(tmp_path / "s", times=False), tmp_path / "rep")
    md = written["markdown"].read_text()
    for key in ("curves", "heatmap_accuracy_after", "heatmap_objective_after"):
        assert written[key].stat().st_size > 10_000
        assert f"]({written[key].name})" in md


def test_heatmap_grid_is_the_mean_over_seeds_per_cell(seeded_sweep):
    import numpy as np

    from dsflow.report import heatmap_grid

    (ky, ys), (kx, xs), grid, cells = heatmap_grid(find_runs(seeded_sweep), "accuracy_after")
    assert (ky, ys, kx, xs) == ("functional.entreg", ["1", "2"], "optimizer.lr", ["1", "10"])
    expect = [[100 * np.mean([_acc(e, lr, s) for s in ((0, 1) if (e, lr) == (2, 10) else (0, 1, 2))])
               for lr in (1, 10)] for e in (1, 2)]
    np.testing.assert_allclose(grid, expect, rtol=1e-12)
    assert cells[("2", "10")].not_ok == 1


def test_no_heatmap_unless_exactly_two_settings_were_swept(tmp_path):
    root = tmp_path / "one"
    for k, (lr, seed) in enumerate([(1, 0), (1, 1), (10, 0), (10, 1)]):
        _job(root, k, [f"optimizer.lr={lr}", f"seed={seed}"], {"status": "ok", "objective_after": lr + seed})
    written = write_report(root)
    assert not any(k.startswith("heatmap") for k in written)
    assert "objective_after_vs_optimizer.lr" in written and "objective_after_vs_seed" not in written


def test_run_curves_align_objective_accuracy_and_flow_time(tmp_path):
    from dsflow.report import load_run, run_curves

    d = _job(tmp_path / "c", 0, [], {"status": "ok", "accuracy_before": 0.1, "objective_after": 0.5})
    rows = [{"objective": 4.0, "step_time": 0.25, "time": 0.3, "step": 0},
            {"objective": 2.0, "step_time": 0.25, "time": 0.6, "accuracy": 0.5, "step": 1}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"objective": 1')  # torn line
    run = load_run(d)
    curves = run_curves(run)
    # F(x_k) at step k, then F after the last update; accuracy measured after k + 1 updates
    assert curves["objective"] == [(0.0, 4.0), (1.0, 2.0), (2.0, 0.5)]
    assert curves["objective_time"] == [(0.0, 4.0), (0.3, 2.0), (0.6, 0.5)]
    assert curves["accuracy"] == [(0.0, 0.1), (2.0, 0.5)]
    assert run.flow_time == 0.6  # no flow_time_s in the summary: the last `time`
    for r in rows:
        del r["time"]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = load_run(d)
    assert run.flow_time == 0.5 and run_curves(run)["objective_time"] == [(0.0, 4.0), (0.25, 2.0), (0.5, 0.5)]


def test_table1_with_seeds_shows_mean_and_std_of_the_best_setting(tmp_path):
    import statistics

    root = tmp_path / "t1s"
    k = 0
    for entreg, accs in (("1", (0.90, 0.94, 0.92)), ("10", (0.99, 0.80, 0.85))):  # best mean: entreg=1
        for seed, acc in enumerate(accs):
            _job(root, k, [f"functional.entreg={entreg}", f"seed={seed}"],
                 {"status": "ok", "accuracy_before": 0.2 + seed / 100, "accuracy_after": acc, "source_labels": "true"})
            k += 1
    text = table1(find_runs(root))
    cells = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in text.splitlines() if line.startswith("| ")}
    assert cells["Flowed (supervised)"] == f"92.0 ± {100 * statistics.stdev([0.90, 0.94, 0.92]):.1f}"  # not the best run, 99.0
    assert cells["Original (before flow)"] == "21.0 ± 1.0"  # one value per seed: 20, 21, 22


def test_cli_over_option(seeded_sweep, tmp_path, capsys):
    assert main([str(seeded_sweep), "--out", str(tmp_path / "o"), "--no-plots", "--over", "optimizer.lr"]) == 0
    md = (tmp_path / "o" / "report.md").read_text()
    assert "## Mean ± std over optimizer.lr" in md
