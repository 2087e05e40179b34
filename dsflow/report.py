"""Turn a directory of runs (a Hydra multirun sweep, or any tree of run dirs) into tables and plots.

Each run directory is recognised by its ``summary.json``.  Its settings are read from
Hydra's ``.hydra/overrides.yaml`` (what the command line changed) and ``.hydra/hydra.yaml``
(``runtime.choices``: which config was chosen in each group, e.g. ``dataset@source: usps``).

Outputs (written into the sweep directory unless ``out`` is given):

* ``report.csv`` and ``report.md``: one row per run, the swept settings and the figures;
* ``report_<metric>_vs_<setting>.png``: each numeric metric against each swept numeric
  setting (one line per value of the other swept settings);
* runs that did not finish are listed by kind: failed (``status: failed``, with the error),
  interrupted (SIGINT/SIGTERM: ``status: interrupted``, with the steps completed) and
  unfinished (``status: running``: still running, or killed with ``kill -9``; the steps
  completed are then counted in its ``metrics.jsonl``);
* the tables each run's task owns (`dsflow.tasks.base.Task.tables`), one file per table: e.g.
  ``table1.md`` from the ``repurpose`` task, the paper's Table 1 layout (rows: before the
  flow, supervised flow, unsupervised flow; columns: source datasets), with the paper's
  numbers next to ours.  A run names its task class in ``summary.json`` (``task_class``);
  runs written before tasks existed count as ``repurpose`` when they report
  ``source_labels``.

Only the standard library (and the task modules, which import torch lazily) is needed for
the tables; matplotlib is imported for plots.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Metrics reported when present in summary.json, in this order.
METRICS = (
    "accuracy_before",
    "accuracy_after",
    "accuracy_pushforward",
    "accuracy_ideal_matching",
    "objective_before",
    "objective_after",
    "wall_time",
)

@dataclass
class RunRecord:
    path: Path
    overrides: dict[str, str] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "ok"))

    @property
    def steps_done(self) -> int | None:
        """Steps completed: the summary's ``steps_done``, else (a run killed before it wrote its
        summary) the number of rows in its ``metrics.jsonl``."""
        done = self.summary.get("steps_done")
        if isinstance(done, int) and not isinstance(done, bool):
            return done
        metrics = self.path / "metrics.jsonl"
        if not metrics.is_file():
            return None
        with open(metrics) as f:
            return sum(1 for line in f if line.strip().endswith("}"))  # a half-written last line is no step

    @property
    def steps(self) -> int | None:
        """Steps asked for: ``steps`` of the summary, else of the run's ``config.yaml``."""
        steps = self.summary.get("steps")
        if steps is None and (self.path / "config.yaml").is_file():
            try:
                steps = (_read_yaml(self.path / "config.yaml") or {}).get("steps")
            except Exception:  # noqa: BLE001 - a damaged config only loses this column
                steps = None
        return steps if isinstance(steps, int) and not isinstance(steps, bool) else None


def _parse_override(line: str) -> tuple[str, str] | None:
    line = line.strip()
    if not line or "=" not in line:
        return None
    key, value = line.split("=", 1)
    return key.lstrip("+~"), value


def _read_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def load_run(path: Path) -> RunRecord:
    """Read one run directory (must contain ``summary.json``)."""
    path = Path(path)
    summary_file = path / "summary.json"
    try:
        summary = json.loads(summary_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{summary_file} is not valid JSON: {err}") from err
    rec = RunRecord(path=path, summary=summary)
    hydra_dir = path / ".hydra"
    if (hydra_dir / "overrides.yaml").exists():
        for item in _read_yaml(hydra_dir / "overrides.yaml") or []:
            kv = _parse_override(str(item))
            if kv:
                rec.overrides[kv[0]] = kv[1]
    if (hydra_dir / "hydra.yaml").exists():
        hy = _read_yaml(hydra_dir / "hydra.yaml") or {}
        choices = ((hy.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
        rec.choices = {str(k): str(v) for k, v in choices.items() if not str(k).startswith("hydra/")}
    return rec


def find_runs(root: str | Path) -> list[RunRecord]:
    """All run directories below ``root`` (sorted by path; job numbers sort numerically)."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dsflow-report: {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"dsflow-report: {root} is not a directory")

    def sort_key(p: Path):
        return [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in p.relative_to(root).parts]

    paths = sorted({p.parent for p in root.rglob("summary.json")}, key=sort_key)
    if not paths:
        raise FileNotFoundError(
            f"dsflow-report: no run found below {root} (looked for */summary.json). "
            "Point it at a run or multirun directory written by `dsflow`."
        )
    return [load_run(p) for p in paths]


def _to_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return None


def swept_keys(runs: list[RunRecord]) -> list[str]:
    """Override keys whose value differs between runs (the sweep's axes)."""
    keys: list[str] = []
    for r in runs:
        for k in r.overrides:
            if k not in keys:
                keys.append(k)
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def table_rows(runs: list[RunRecord]) -> tuple[list[str], list[list[Any]]]:
    axes = swept_keys(runs)
    metrics = [m for m in METRICS if any(m in r.summary for r in runs)]
    header = ["run", *axes, "status", "steps_done", "steps", *metrics]
    rows = []
    for r in runs:
        rows.append(
            [r.path.name, *[r.overrides.get(k, "") for k in axes], r.status, r.steps_done, r.steps]
            + [r.summary.get(m) for m in metrics]
        )
    return header, rows


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_metric_vs_setting(runs: list[RunRecord], metric: str, setting: str, path: Path) -> Path | None:
    """Line plot of ``metric`` against numeric ``setting``; one line per other-settings combo."""
    axes = [k for k in swept_keys(runs) if k != setting]
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for r in runs:
        xv = _to_number(r.overrides.get(setting))
        yv = _to_number(r.summary.get(metric))
        if xv is None or yv is None or r.status != "ok":
            continue
        groups.setdefault(tuple(r.overrides.get(k, "") for k in axes), []).append((xv, yv))
    if not groups:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for key, pts in sorted(groups.items()):
        pts.sort()
        label = ", ".join(f"{a}={v}" for a, v in zip(axes, key)) or None
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    xs = [p[0] for pts in groups.values() for p in pts]
    if min(xs) > 0 and max(xs) / min(xs) >= 20:
        ax.set_xscale("log")
    ax.set_xlabel(setting)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if any(k for k in groups):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: The task class of runs written before tasks existed, by a key only its summaries have.
LEGACY_TASKS = (("source_labels", "dsflow.tasks.repurpose.RepurposeTask"),)


def task_figures(runs: list[RunRecord]) -> dict:
    """``{file stem: draw(path)}``: the figures of every task that ran in ``runs``
    (`dsflow.tasks.base.Task.figures`); a task whose class cannot be imported has none."""
    from hydra.utils import get_class

    figures: dict = {}
    for name, task_runs in _runs_by_task(runs).items():
        try:
            cls = get_class(name)
        except Exception:  # noqa: BLE001 - task_tables already reports the missing class
            continue
        figures.update(cls.figures(task_runs))
    return figures


def _runs_by_task(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """The runs of each task class (by name), legacy runs by the key only their summaries have."""
    by_task: dict[str, list[RunRecord]] = {}
    for r in runs:
        name = r.summary.get("task_class")
        if name is None:
            name = next((cls for key, cls in LEGACY_TASKS if key in r.summary), None)
        if name is not None:
            by_task.setdefault(str(name), []).append(r)
    return by_task


def task_tables(runs: list[RunRecord]) -> dict[str, str]:
    """``{file stem: markdown}``: the tables of every task that ran in ``runs``, each asked
    for over its own runs (`dsflow.tasks.base.Task.tables`)."""
    from hydra.utils import get_class

    tables: dict[str, str] = {}
    for name, task_runs in _runs_by_task(runs).items():
        try:
            cls = get_class(name)
        except Exception as err:  # noqa: BLE001 - a task module that is gone must not stop the report
            tables[f"missing_task_{name.rsplit('.', 1)[-1]}"] = (
                f"The runs of task {name} ({len(task_runs)}) have no tables: its class cannot be imported ({err}).\n")
            continue
        tables.update(cls.tables(task_runs))
    return tables


def write_report(root: str | Path, out: str | Path | None = None, plots: bool = True) -> dict[str, Path]:
    """Write report.csv, report.md, plots and the tables of the runs' tasks (e.g. table1.md). Returns the paths."""
    runs = find_runs(root)
    out_dir = Path(out) if out is not None else Path(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    header, rows = table_rows(runs)
    written: dict[str, Path] = {}
    with open(out_dir / "report.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows([["" if v is None else v for v in row] for row in rows])
    written["csv"] = out_dir / "report.csv"
    failed = [r for r in runs if r.status == "failed"]
    interrupted = [r for r in runs if r.status == "interrupted"]
    unfinished = [r for r in runs if r.status not in ("ok", "failed", "interrupted")]
    counts = f"{len(runs)} runs, {len(failed)} failed, {len(interrupted)} interrupted"
    if unfinished:
        counts += f", {len(unfinished)} unfinished"
    md = [f"# Sweep report: {Path(root)}\n", counts + ".\n", markdown_table(header, rows)]

    def steps_of(r: RunRecord) -> str:
        return f"{_fmt(r.steps_done) or '?'} of {_fmt(r.steps) or '?'} steps"

    if failed:
        md.append("\n## Failed runs\n")
        md += [f"- `{r.path.name}`: {r.summary.get('error', 'unknown error')}\n" for r in failed]
    if interrupted:
        md.append("\n## Interrupted runs\n")
        md += [f"- `{r.path.name}`: {steps_of(r)} completed ({r.summary.get('error') or 'interrupted'}); "
               "flowed.npz holds the particles of the last completed step\n" for r in interrupted]
    if unfinished:
        md.append("\n## Unfinished runs\n")
        md += [f"- `{r.path.name}`: status `{r.status}`: still running, or killed without a chance to "
               f"write its summary (kill -9, power loss) after {steps_of(r)}; its checkpoints, if any, "
               "resume it (flow.resume=true)\n" for r in unfinished]
    warned = [r for r in runs if r.summary.get("warnings")]
    if warned:
        md.append("\n## Warnings\n")
        md += [f"- `{r.path.name}`: {w}\n" for r in warned for w in r.summary["warnings"]]
    for stem, table in task_tables(runs).items():
        (out_dir / f"{stem}.md").write_text(table)
        written[stem] = out_dir / f"{stem}.md"
        md.append("\n## " + table.lstrip("# ").split("\n", 1)[0] + "\n\n" + table.split("\n", 1)[-1].lstrip("\n"))
    if plots:
        for stem, draw in task_figures(runs).items():
            draw(out_dir / f"{stem}.png")
            written[stem + "_png"] = out_dir / f"{stem}.png"
        metric_names = [m for m in METRICS if m in header]
        for setting in swept_keys(runs):
            if not any(_to_number(r.overrides.get(setting)) is not None for r in runs):
                continue
            for metric in metric_names:
                safe = setting.replace("/", "_").replace("@", "_")
                p = plot_metric_vs_setting(runs, metric, setting, out_dir / f"report_{metric}_vs_{safe}.png")
                if p is not None:
                    written[f"{metric}_vs_{setting}"] = p
                    md.append(f"\n![{metric} vs {setting}]({p.name})\n")
    (out_dir / "report.md").write_text("".join(md))
    written["markdown"] = out_dir / "report.md"
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="dsflow-report",
        description="Summarise a dsflow run or sweep directory into report.md/report.csv, plots "
        "and the tables of the runs' tasks (re-purposing runs: the paper's Table 1 layout).",
    )
    parser.add_argument("directory", help="a multirun directory (e.g. outputs/multirun/DATE/TIME) or a run dir")
    parser.add_argument("--out", default=None, help="where to write the report (default: the directory itself)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.directory, args.out, plots=not args.no_plots)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((Path(written["markdown"])).read_text())
    for name, p in written.items():
        print(f"wrote {name}: {p}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
