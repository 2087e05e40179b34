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
