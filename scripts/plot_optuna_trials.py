"""The trials of an Optuna sweep in its two-parameter search space, coloured by the metric.

    python scripts/plot_optuna_trials.py SWEEP_DIR [--x functional.entreg] [--y time_step]
        [--metric accuracy_after] [--out docs/img/optuna_digits.png]

Reads each job's ``.hydra/overrides.yaml`` (the sampled values) and ``summary.json`` (the metric);
the best trial (``optimization_results.yaml``) is ringed.  Used for docs/img/optuna_digits.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def trials(sweep: Path, x: str, y: str, metric: str):
    rows = []
    for job in sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
                         if "=" in o)
        summary = json.loads((job / "summary.json").read_text())
        if summary.get("status") == "ok" and metric in summary:
            rows.append((int(job.name), float(overrides[x]), float(overrides[y]), float(summary[metric])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--x", default="functional.entreg")
    parser.add_argument("--y", default="time_step")
    parser.add_argument("--metric", default="accuracy_after")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = trials(args.sweep, args.x, args.y, args.metric)
    if not rows:
        raise SystemExit(f"{args.sweep}: no ok job with {args.metric} in its summary.json")
    nums, xs, ys, values = zip(*rows)
    fig, ax = plt.subplots(figsize=(5.6, 4.6), constrained_layout=True)
    points = ax.scatter(xs, ys, c=values, cmap="viridis", s=60, edgecolors="k", linewidths=0.5)
    for n, x, y in zip(nums, xs, ys):
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    best = max(rows, key=lambda r: r[3])
    ax.scatter([best[1]], [best[2]], s=220, facecolors="none", edgecolors="red", linewidths=1.5,
               label=f"best: trial {best[0]}, {args.metric} {best[3]:.3f}")
    ax.set(xscale="log", yscale="log", xlabel=f"{args.x} (epsilon on |x - x'|^2, pixel units)",
           ylabel=f"{args.y} (flow time per step)",
           title=f"Optuna (TPE): {len(rows)} trials, trial number beside each")
    fig.colorbar(points, ax=ax, label=f"{args.metric} (frozen MLP on the flowed digits)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)
    out = args.out or args.sweep / "optuna_trials.png"
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
