"""Accuracy of the frozen oracle through Table 1 flows, one curve per run, with the paper's values.

    python scripts/plot_table1_runs.py RUN_DIR [RUN_DIR ...] -o docs/img/table1_usps_test_splits.png

Each RUN_DIR is a finished ``dsflow +experiment=nist_to_mnist...`` run (``metrics.jsonl`` with the
oracle's ``accuracy`` every ``oracle.eval_every`` steps, ``summary.json``).  The dashed lines are
the paper's Table 1 numbers for the run's source dataset (supervised and unsupervised rows).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dsflow.tasks.repurpose import PAPER_TABLE1


def read_run(run_dir: Path) -> dict:
    """A run's curves; a run killed before its summary (``kill -9``) is read from its
    ``config.yaml`` and ``metrics.jsonl`` alone, and labelled as stopped."""
    if (run_dir / "summary.json").is_file():
        summary = json.loads((run_dir / "summary.json").read_text())
    else:
        import yaml

        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        name = cfg["source"].get("name") or cfg["source"]["_target_"].rsplit(".", 1)[-1]
        summary = {"source_labels": cfg.get("source_labels"), "source": {"name": name}, "stopped": True}
    steps, acc, objective = [], [], []
    if summary.get("accuracy_before") is not None:
        steps, acc = [0], [summary["accuracy_before"]]
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        objective.append((row["step"], row["objective"]))
        if row.get("accuracy") is not None:
            steps.append(row["step"] + 1)  # accuracy is measured after the step's update
            acc.append(row["accuracy"])
    return {"summary": summary, "steps": steps, "accuracy": acc, "objective": objective}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--labels", nargs="*", default=[], help="legend names of the runs, in order")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_obj) = plt.subplots(1, 2, figsize=(11, 4))
    paper_rows = {}
    for run_dir in args.runs:
        run = read_run(run_dir)
        s = run["summary"]
        mode = "unsupervised" if str(s.get("source_labels")) == "pseudo" else "supervised"
        src = (s.get("source") or {}).get("name", "source")
        if s.get("stopped"):
            label = f"{src}, {mode}: stopped at step {run['steps'][-1]}, {100 * run['accuracy'][-1]:.1f}%"
        else:
            label = f"{src}, {mode}: {100 * s['accuracy_before']:.1f}% -> {100 * s['accuracy_after']:.1f}%"
        name = f"{src}, {mode}"
        if args.labels:
            name = args.labels.pop(0)
            label = f"{name}: {label.split(': ', 1)[1]}"
        line, = ax_acc.plot(run["steps"], [100 * a for a in run["accuracy"]], marker=".", label=label)
        steps, values = zip(*run["objective"])
        ax_obj.plot(steps, values, color=line.get_color(), label=name)
        paper = PAPER_TABLE1.get(src)
        if paper:
            paper_rows[(src, mode)] = (paper, line.get_color())
    for (src, mode), (paper, color) in paper_rows.items():
        key = "supervised" if mode == "supervised" else "unsupervised"
        if paper.get(key) is not None:
            ax_acc.axhline(paper[key], color=color, linestyle="--", linewidth=1,
                           label=f"paper, {src} {mode}: {paper[key]}%")
        ax_acc.axhline(paper["before"], color="grey", linestyle=":", linewidth=1)
    ax_acc.set_xlabel("flow step")
    ax_acc.set_ylabel("frozen LeNet-5 accuracy (%)")
    ax_acc.set_title("oracle accuracy through the flow (dotted: paper, before)")
    ax_acc.legend(fontsize=8, loc="lower right")
    ax_acc.grid(alpha=0.3)
    ax_obj.set_xlabel("flow step")
    ax_obj.set_ylabel("OTDD² (dsflow units: pixels in [0, 1])")
    ax_obj.set_yscale("log")
    ax_obj.set_title("objective")
    ax_obj.legend(fontsize=8)
    ax_obj.grid(alpha=0.3)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(args.output)


if __name__ == "__main__":
    main()
