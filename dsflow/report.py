"""Turn a directory of runs (a Hydra multirun sweep, or any tree of run dirs) into tables and plots.

Each run directory is recognised by its ``summary.json``.  Its settings are read from
Hydra's ``.hydra/overrides.yaml`` (what the command line changed) and ``.hydra/hydra.yaml``
(``runtime.choices``: which config was chosen in each group, e.g. ``dataset@source: usps``).

Outputs (written into the sweep directory unless ``out`` is given):

* ``report.csv`` and ``report.md``: one row per run, the swept settings and the figures;
* ``report_<metric>_vs_<setting>.png``: each numeric metric against each swept numeric
  setting (one line per value of the other swept settings; mean over seeds with a ± std bar);
* ``report_curves.png``: every job's curves overlaid, read from its ``metrics.jsonl``: the
  objective against flow step and against flow time (s), and the oracle's accuracy (%) against
  step when the runs evaluated one (one colour per setting, the seeds of a setting alike);
* ``report_heatmap_<metric>.png``: when exactly two settings (other than seeds) were swept, the
  mean over seeds of ``accuracy_after`` (else ``objective_after``), and of ``objective_after``,
  in each cell of the grid, annotated with mean ± std;
* mean ± std over seeds (`aggregate`): when a seed key (``seed`` or ``*.seed``, or the keys of
  ``--over``) takes several values, ``report.md`` gets a table grouped by the other settings
  (mean ± std and the count ``n``), also written as ``report_seeds.csv``;
* wall time *and* flow time: the ``wall_time`` (s) of a job is the whole process (data,
  oracle, push-forward, plots); ``flow_time_s`` is the time spent in flow steps (the summary's
  ``flow_time_s``, else the last ``time`` of ``metrics.jsonl``, else the sum of ``step_time``);
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
    "flow_time_s",
)

#: How each metric reads on an axis or in a table header: (label, unit scale, unit).
METRIC_LABELS = {
    "accuracy_before": ("oracle accuracy before the flow", 100.0, "%"),
    "accuracy_after": ("oracle accuracy after the flow", 100.0, "%"),
    "accuracy_pushforward": ("accuracy of push-forward-mapped held-out samples", 100.0, "%"),
    "accuracy_ideal_matching": ("accuracy, idealised cluster matching", 100.0, "%"),
    "objective_before": ("objective before the flow", 1.0, ""),
    "objective_after": ("objective after the flow", 1.0, ""),
    "wall_time": ("wall time of the job", 1.0, "s"),
    "flow_time_s": ("flow time (sum of step times)", 1.0, "s"),
}


def metric_label(metric: str) -> str:
    """``"oracle accuracy after the flow (%)"``: the axis label of ``metric`` with its unit."""
    label, _, unit = METRIC_LABELS.get(metric, (metric, 1.0, ""))
    return f"{label} ({unit})" if unit else label


def metric_scale(metric: str) -> float:
    """Factor from the summary's value to the shown unit (fractions -> %)."""
    return METRIC_LABELS.get(metric, (metric, 1.0, ""))[1]

@dataclass
class RunRecord:
    path: Path
    overrides: dict[str, str] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    _metrics: list[dict] | None = field(default=None, repr=False, compare=False)

    @property
    def metrics(self) -> list[dict]:
        """The rows of the run's ``metrics.jsonl`` (read once; a half-written last line, as
        ``kill -9`` leaves it, is dropped; ``[]`` without the file)."""
        if self._metrics is None:
            from dsflow.loggers.local import read_metrics

            path = self.path / "metrics.jsonl"
            self._metrics = read_metrics(path, skip_damaged=True) if path.is_file() else []
        return self._metrics

    @property
    def flow_time(self) -> float | None:
        """Seconds spent in flow steps: the summary's ``flow_time_s``, else the last ``time``
        of ``metrics.jsonl`` (the engine's cumulative flow time), else the sum of its
        ``step_time``."""
        value = _to_number(self.summary.get("flow_time_s"))
        if value is not None:
            return value
        rows = self.metrics
        times = [t for t in (_to_number(r.get("time")) for r in rows) if t is not None]
        if times:
            return times[-1]
        steps = [t for t in (_to_number(r.get("step_time")) for r in rows) if t is not None]
        return sum(steps) if steps else None

    def value(self, metric: str) -> Any:
        """``metric`` of this run: its summary entry (``flow_time_s``: see `flow_time`)."""
        if metric == "flow_time_s":
            return self.flow_time
        return self.summary.get(metric)

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


def present_metrics(runs: list[RunRecord]) -> list[str]:
    """The `METRICS` some run reports, in `METRICS` order."""
    return [m for m in METRICS if any(r.value(m) is not None for r in runs)]


def table_rows(runs: list[RunRecord]) -> tuple[list[str], list[list[Any]]]:
    axes = swept_keys(runs)
    metrics = present_metrics(runs)
    header = ["run", *axes, "status", "steps_done", "steps", *metrics]
    rows = []
    for r in runs:
        rows.append(
            [r.path.name, *[r.overrides.get(k, "") for k in axes], r.status, r.steps_done, r.steps]
            + [r.value(m) for m in metrics]
        )
    return header, rows


# ---------------------------------------------------------------------------- seeds
def is_seed_key(key: str) -> bool:
    """``seed`` and ``*.seed`` (``source.seed``, ``oracle.seed``, ...): repeats, not settings."""
    return key == "seed" or key.endswith(".seed")


def seed_keys(runs: list[RunRecord], over: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """The override keys of ``runs`` averaged over: those named in ``over``, or with
    ``over=None`` every seed key (`is_seed_key`)."""
    keys: list[str] = []
    for r in runs:
        for k in r.overrides:
            if k not in keys and (k in over if over is not None else is_seed_key(k)):
                keys.append(k)
    return keys


@dataclass
class Aggregate:
    """The runs of one setting (equal overrides but for the seed keys), and their metrics.

    ``settings`` holds the swept settings other than the seeds; ``runs`` the runs that
    finished (``status: ok``), the only ones averaged; ``not_ok`` the count of the others.
    """

    settings: dict[str, str]
    runs: list[RunRecord] = field(default_factory=list)
    not_ok: int = 0
    values: dict[str, list[float]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.runs)

    def count(self, metric: str) -> int:
        return len(self.values.get(metric, []))

    def mean(self, metric: str) -> float | None:
        vals = self.values.get(metric)
        return sum(vals) / len(vals) if vals else None

    def std(self, metric: str) -> float | None:
        """Sample standard deviation (n - 1 in the denominator); None below two values."""
        vals = self.values.get(metric) or []
        if len(vals) < 2:
            return None
        import statistics

        return statistics.stdev(vals)

    def cell(self, metric: str, scale: float | None = None, digits: int | None = None) -> str:
        """``"97.1 ± 0.4"`` (``± std`` only with two values or more); ``""`` without any.
        ``scale`` defaults to the metric's unit (`metric_scale`: accuracies in %), ``digits``
        (decimals) to 1 for percentages, else 4 significant digits for the mean and 2 for
        the std."""
        mean = self.mean(metric)
        if mean is None:
            return ""
        scale = metric_scale(metric) if scale is None else scale
        if digits is None and scale == 100.0:
            digits = 1
        std = self.std(metric)
        if digits is not None:
            return f"{mean * scale:.{digits}f}" + ("" if std is None else f" ± {std * scale:.{digits}f}")
        return f"{mean * scale:.4g}" + ("" if std is None else f" ± {std * scale:.2g}")


def _setting_key(run: RunRecord, seeds: list[str]) -> tuple:
    """What makes runs one setting: equal overrides but for ``seeds``; a run that sets none of
    ``seeds`` is its own setting."""
    others = tuple(sorted((k, v) for k, v in run.overrides.items() if k not in seeds))
    return others if any(k in run.overrides for k in seeds) else (others, str(run.path))


def aggregate(runs: list[RunRecord], over: tuple[str, ...] | list[str] | None = None,
              metrics: tuple[str, ...] | list[str] | None = None) -> list[Aggregate]:
    """Group ``runs`` by their settings other than the seed keys and average ``metrics``.

    ``over``: the keys that are repeats (default: every seed key, `seed_keys`).  Runs are
    grouped when all their other overrides agree; a run that sets none of the ``over`` keys
    is a setting of its own (runs are averaged only when they say they are seeds).  Only runs
    with ``status: ok`` are averaged (`Aggregate.not_ok` counts the others); ``metrics``
    default to the `METRICS` present.  Groups come in the order of their first run (a Hydra
    sweep's job order).  Returns one `Aggregate` per setting: ``mean``, ``std`` (n - 1),
    ``n``, ``cell`` ("mean ± std").
    """
    seeds = seed_keys(runs, over)
    metrics = list(metrics) if metrics is not None else present_metrics(runs)
    shown = [k for k in swept_keys(runs) if k not in seeds]
    groups: dict[tuple, Aggregate] = {}
    for r in runs:
        agg = groups.setdefault(_setting_key(r, seeds), Aggregate(settings={k: r.overrides.get(k, "") for k in shown}))
        if r.status != "ok":
            agg.not_ok += 1
            continue
        agg.runs.append(r)
        for m in metrics:
            v = _to_number(r.value(m))
            if v is not None and math.isfinite(v):
                agg.values.setdefault(m, []).append(v)
    return list(groups.values())


def aggregate_table(runs: list[RunRecord], over=None) -> tuple[list[str], list[list[str]]] | None:
    """The markdown rows of the mean ± std table, or None when no seed key varies."""
    seeds = seed_keys(runs, over)
    if not any(len({r.overrides.get(k) for r in runs}) > 1 for k in seeds):
        return None
    aggs = aggregate(runs, over)
    metrics = [m for m in present_metrics(runs) if any(a.count(m) for a in aggs)]
    shown = list(aggs[0].settings) if aggs else []
    def head(m: str) -> str:
        unit = METRIC_LABELS.get(m, ("", 1.0, ""))[2]
        return f"{m} ({unit})" if unit and not m.endswith(f"_{unit}") else m

    header = [*shown, "n", *[head(m) for m in metrics]]
    rows = []
    for a in aggs:
        n = str(a.n) + (f" (+{a.not_ok} not ok)" if a.not_ok else "")
        rows.append([*a.settings.values(), n, *[a.cell(m) for m in metrics]])
    return header, rows


def _write_aggregate_csv(runs: list[RunRecord], path: Path, over=None) -> Path:
    aggs = aggregate(runs, over)
    metrics = [m for m in present_metrics(runs) if any(a.count(m) for a in aggs)]
    shown = list(aggs[0].settings) if aggs else []
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*shown, "n", "not_ok", *[f"{m}_{s}" for m in metrics for s in ("mean", "std", "n")]])
        for a in aggs:
            cells = []
            for m in metrics:
                cells += ["" if a.mean(m) is None else a.mean(m), "" if a.std(m) is None else a.std(m), a.count(m)]
            w.writerow([*a.settings.values(), a.n, a.not_ok, *cells])
    return path


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _sort_values(values) -> list[str]:
    """Setting values in numeric order when they are all numbers, else as strings."""
    values = list(dict.fromkeys(values))
    if all(_to_number(v) is not None for v in values):
        return sorted(values, key=lambda v: _to_number(v))
    return sorted(values, key=str)


def _setting_label(settings: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def _seed_note(runs: list[RunRecord], over=None) -> str:
    seeds = seed_keys(runs, over)
    counts = {a.n for a in aggregate(runs, over, metrics=()) if a.n}
    if not seeds or counts in (set(), {1}):
        return ""
    n = "/".join(str(c) for c in sorted(counts))
    return f"mean ± std over {n} seeds ({', '.join(seeds)})"


def plot_metric_vs_setting(runs: list[RunRecord], metric: str, setting: str, path: Path,
                           over=None) -> Path | None:
    """``metric`` against numeric ``setting``; one line per value of the other swept settings,
    each point the mean over seeds with a ± std bar."""
    seeds = seed_keys(runs, over)
    if setting in seeds:
        return None
    scale = metric_scale(metric)
    lines: dict[tuple, list[tuple[float, float, float]]] = {}
    for agg in aggregate(runs, over, metrics=(metric,)):
        xv, mean = _to_number(agg.settings.get(setting)), agg.mean(metric)
        if xv is None or mean is None:
            continue
        others = tuple((k, v) for k, v in agg.settings.items() if k != setting)
        lines.setdefault(others, []).append((xv, mean * scale, (agg.std(metric) or 0.0) * scale))
    if not lines:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for others, pts in sorted(lines.items()):
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                    capsize=3, label=_setting_label(dict(others)) or None)
    xs = [p[0] for pts in lines.values() for p in pts]
    if min(xs) > 0 and max(xs) / min(xs) >= 20:
        ax.set_xscale("log")
    ax.set_xlabel(setting)
    ax.set_ylabel(metric_label(metric))
    note = _seed_note(runs, over)
    ax.set_title(f"{METRIC_LABELS.get(metric, (metric,))[0]} vs {setting}" + (f"\n{note}" if note else ""), fontsize=9)
    ax.grid(alpha=0.3)
    if any(k for k in lines):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_curves(run: RunRecord) -> dict[str, list[tuple[float, float]]]:
    """The curves of one run from its ``metrics.jsonl``, as ``(x, y)`` points:

    * ``objective``: F(x_k) against the step k (the row of step k holds the objective at the
      particles before that update), ending at ``objective_after`` after the last step;
    * ``objective_time``: the same against the flow time (s) at which x_k was reached (the
      ``time`` column: cumulative seconds of flow steps; else the running sum of ``step_time``);
    * ``accuracy``: the oracle's accuracy against the number of updates done (the row of step
      k holds the accuracy measured *after* its update: k + 1), starting at
      ``accuracy_before`` (0 updates).
    """
    rows = sorted((r for r in run.metrics if isinstance(r.get("step"), int)), key=lambda r: r["step"])
    objective, objective_time, accuracy = [], [], []
    clock = 0.0  # flow time at the start of the current step
    for r in rows:
        obj = _to_number(r.get("objective"))
        if obj is not None and math.isfinite(obj):
            objective.append((float(r["step"]), obj))
            objective_time.append((clock, obj))
        t, dt = _to_number(r.get("time")), _to_number(r.get("step_time"))
        clock = t if t is not None else clock + (dt or 0.0)
        acc = _to_number(r.get("accuracy"))
        if acc is not None:
            accuracy.append((float(r["step"] + 1), acc))
    after = _to_number(run.summary.get("objective_after"))
    if rows and after is not None and math.isfinite(after):
        objective.append((float(rows[-1]["step"] + 1), after))
        objective_time.append((clock, after))
    before = _to_number(run.summary.get("accuracy_before"))
    if accuracy and before is not None:
        accuracy.insert(0, (0.0, before))
    has_time = any(_to_number(r.get("time")) is not None or _to_number(r.get("step_time")) is not None for r in rows)
    return {"objective": objective, "objective_time": objective_time if has_time else [], "accuracy": accuracy}


def plot_curves(runs: list[RunRecord], path: Path, over=None, max_legend: int = 12) -> Path | None:
    """Every job's curves overlaid (objective vs step, vs flow time; accuracy vs step): one
    colour per setting (`aggregate`), the seeds of a setting in the same colour; runs that
    did not finish (failed, interrupted, still running) dashed, up to where they got."""
    seeds = seed_keys(runs, over)
    curves = [(r, run_curves(r)) for r in runs]
    curves = [(r, c) for r, c in curves if c["objective"]]
    if not curves:
        return None
    settings = list(dict.fromkeys(_setting_key(r, seeds) for r, _ in curves))
    shown = [k for k in swept_keys(runs) if k not in seeds]
    panels = [("objective", "flow step (updates)", "objective against flow step"),
              ("objective_time", "flow time (s)", "objective against flow time"),
              ("accuracy", "flow step (updates)", "frozen oracle's accuracy on the particles")]
    panels = [p for p in panels if any(c[p[0]] for _, c in curves)]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.9), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(settings) <= 10 else "viridis")
    labelled: set = set()
    for r, c in curves:
        gi = settings.index(_setting_key(r, seeds))
        color = cmap(gi if len(settings) <= 10 else gi / max(1, len(settings) - 1))
        n = sum(1 for q, _ in curves if _setting_key(q, seeds) == settings[gi] and q.status == "ok")
        label = _setting_label({k: r.overrides.get(k, "") for k in shown}) or r.path.name
        label += f" (n={n})" if n > 1 else ""
        if gi in labelled or gi >= max_legend:
            label = None
        labelled.add(gi)
        for ax, (key, _, _) in zip(axes[0], panels):
            pts = c[key]
            if pts:
                scale = 100.0 if key == "accuracy" else 1.0
                ax.plot([p[0] for p in pts], [p[1] * scale for p in pts], color=color, lw=1.1, alpha=0.8,
                        ls="-" if r.status == "ok" else "--", marker="o" if key == "accuracy" else None,
                        ms=2.5, label=label)
    functional = {str(r.summary.get("functional")) for r in runs if r.summary.get("functional")}
    objective_label = f"objective F ({next(iter(functional))})" if len(functional) == 1 else "objective F"
    positive = all(y > 0 for _, c in curves for _, y in c["objective"])
    for ax, (key, xlabel, title) in zip(axes[0], panels):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("oracle accuracy (%)" if key == "accuracy" else objective_label)
        ax.set_title(title, fontsize=9)
        if key != "accuracy" and positive:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    not_ok = sum(1 for r, _ in curves if r.status != "ok")
    def count(k: int, word: str) -> str:
        return f"{k} {word}" + ("" if k == 1 else "s")

    title = f"{count(len(curves), 'run')}, {count(len(settings), 'setting')}" + (
        f" ({not_ok} not finished: dashed)" if not_ok else "")
    if len(settings) > max_legend:
        title += f"; {len(settings) - max_legend} settings not in the legend"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    handles, labels = axes[0][0].get_legend_handles_labels()
    if labels:  # beside the panels, where it hides no curve
        fig.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 0.93),
                   title="setting (n: seeds)" if seeds else "setting", title_fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def heatmap_settings(runs: list[RunRecord], over=None) -> list[str] | None:
    """The two settings of a heatmap: exactly two swept keys besides the seeds, else None."""
    seeds = seed_keys(runs, over)
    axes = [k for k in swept_keys(runs) if k not in seeds]
    return axes if len(axes) == 2 else None


def heatmap_grid(runs: list[RunRecord], metric: str, over=None):
    """``((row key, row values), (column key, column values), grid, cells)``: the mean over
    seeds of ``metric`` (in its unit: accuracies in %) per pair of values of the two swept
    settings (NaN where no run finished), and the `Aggregate` of each cell by
    ``(row value, column value)``; None without two swept settings or without any value."""
    keys = heatmap_settings(runs, over)
    if keys is None:
        return None
    aggs = aggregate(runs, over, metrics=(metric,))
    if not any(a.count(metric) for a in aggs):
        return None
    ky, kx = keys  # the first swept key down the rows, the second across
    xs = _sort_values(a.settings[kx] for a in aggs)
    ys = _sort_values(a.settings[ky] for a in aggs)
    cells = {(a.settings[ky], a.settings[kx]): a for a in aggs}
    scale = metric_scale(metric)
    import numpy as np

    grid = np.full((len(ys), len(xs)), np.nan)
    for (yv, xv), a in cells.items():
        if a.mean(metric) is not None:
            grid[ys.index(yv), xs.index(xv)] = a.mean(metric) * scale
    return (ky, ys), (kx, xs), grid, cells


def plot_heatmap(runs: list[RunRecord], metric: str, path: Path, over=None) -> Path | None:
    """``metric`` (mean over seeds) in each cell of the grid of the two swept settings, each
    cell annotated ``mean ± std`` (and ``n`` when it differs between cells); cells without a
    finished run are grey and say so."""
    grid_data = heatmap_grid(runs, metric, over)
    if grid_data is None:
        return None
    (ky, ys), (kx, xs), grid, cells = grid_data
    import numpy as np

    plt = _pyplot()
    from matplotlib.colors import LogNorm

    fig, ax = plt.subplots(figsize=(1.2 * len(xs) + 2.8, 0.8 * len(ys) + 2.0))
    finite = grid[np.isfinite(grid)]
    lower_is_better = not metric.startswith("accuracy")
    norm = LogNorm(finite.min(), finite.max()) if lower_is_better and finite.min() > 0 and \
        finite.max() / finite.min() > 20 else None
    cmap = plt.get_cmap("viridis_r" if lower_is_better else "viridis").with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
    counts = {a.count(metric) for a in cells.values() if a.count(metric)}
    lo, hi = (float(finite.min()), float(finite.max()))
    for (yv, xv), a in cells.items():
        i, j = ys.index(yv), xs.index(xv)
        if a.mean(metric) is None:
            text = f"no finished run\n({a.not_ok} not ok)" if a.not_ok else "no run"
            color = "black"
        else:
            text = a.cell(metric).replace(" ± ", "\n± ")
            if len(counts) > 1 or a.not_ok:
                text += f"\nn={a.count(metric)}" + (f" ({a.not_ok} not ok)" if a.not_ok else "")
            frac = 0.5 if hi == lo else (grid[i, j] - lo) / (hi - lo)
            bright = (1 - frac) if lower_is_better else frac  # viridis is light at its top end
            color = "black" if bright > 0.6 else "white"
        ax.text(j, i, text, ha="center", va="center", fontsize=7.5, color=color)
    for i, yv in enumerate(ys):  # pairs of values no job ran
        for j, xv in enumerate(xs):
            if (yv, xv) not in cells:
                ax.text(j, i, "not run", ha="center", va="center", fontsize=7.5, color="black")
    ax.set_xticks(range(len(xs)), xs)
    ax.set_yticks(range(len(ys)), ys)
    ax.set_xlabel(kx)
    ax.set_ylabel(ky)
    fig.colorbar(im, ax=ax, label=metric_label(metric))
    note = _seed_note(runs, over) or "one run per cell"
    ax.set_title(f"{metric_label(metric)}\n{note.replace('mean ± std', 'cells: mean ± std')}", fontsize=9)
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


def _times_line(runs: list[RunRecord]) -> str | None:
    """Wall time and flow time of the jobs, summed and per job (median)."""
    import statistics

    wall = [v for v in (_to_number(r.summary.get("wall_time")) for r in runs) if v is not None]
    flow = [v for v in (r.flow_time for r in runs) if v is not None]
    if not wall and not flow:
        return None
    parts = []
    if wall:
        parts.append(f"wall time {sum(wall):.1f} s in all ({len(wall)} jobs, median {statistics.median(wall):.1f} s "
                     "per job: the whole process, with data, oracle, push-forward and plots)")
    if flow:
        parts.append(f"flow time {sum(flow):.1f} s in all (median {statistics.median(flow):.2f} s per job: "
                     "the flow steps alone)")
    return "Time: " + "; ".join(parts) + ".\n"


def write_report(root: str | Path, out: str | Path | None = None, plots: bool = True,
                 over: tuple[str, ...] | list[str] | None = None) -> dict[str, Path]:
    """Write report.csv, report.md, plots and the tables of the runs' tasks (e.g. table1.md).

    ``over``: the settings that are repeats, averaged in the mean ± std table, the heatmaps
    and the curves' colours (default: ``seed`` and every ``*.seed``).  Returns the paths."""
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
    md = [f"# Sweep report: {Path(root)}\n", counts + ".\n"]
    times = _times_line(runs)
    if times:
        md.append("\n" + times)
    md.append("\n" + markdown_table(header, rows))
    seeds_table = aggregate_table(runs, over)
    if seeds_table is not None:
        md.append(f"\n## Mean ± std over {', '.join(seed_keys(runs, over))}\n\n"
                  "Runs that differ only in these keys are one setting; n counts its finished runs "
                  "(std: n - 1 in the denominator; accuracies in %, times in s).\n\n")
        md.append(markdown_table(*seeds_table))
        written["seeds_csv"] = _write_aggregate_csv(runs, out_dir / "report_seeds.csv", over)

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
        md.append("\n## Figures\n")
        p = plot_curves(runs, out_dir / "report_curves.png", over)
        if p is not None:
            written["curves"] = p
            md.append(f"\n![curves of every job]({p.name})\n")
        if heatmap_settings(runs, over) is not None:
            primary = "accuracy_after" if any(r.value("accuracy_after") is not None for r in runs) else "objective_after"
            for metric in dict.fromkeys((primary, "objective_after")):
                p = plot_heatmap(runs, metric, out_dir / f"report_heatmap_{metric}.png", over)
                if p is not None:
                    written[f"heatmap_{metric}"] = p
                    md.append(f"\n![{metric} over {' x '.join(heatmap_settings(runs, over))}]({p.name})\n")
        metric_names = [m for m in METRICS if m in header]
        for setting in swept_keys(runs):
            if setting in seed_keys(runs, over) or not any(_to_number(r.overrides.get(setting)) is not None for r in runs):
                continue
            for metric in metric_names:
                safe = setting.replace("/", "_").replace("@", "_")
                p = plot_metric_vs_setting(runs, metric, setting, out_dir / f"report_{metric}_vs_{safe}.png", over)
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
    parser.add_argument("--over", default=None, metavar="KEY[,KEY...]",
                        help="settings that are repeats, averaged as mean ± std (default: seed and every *.seed)")
    args = parser.parse_args(argv)
    over = None if args.over is None else tuple(k.strip() for k in args.over.split(",") if k.strip())
    try:
        written = write_report(args.directory, args.out, plots=not args.no_plots, over=over)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((Path(written["markdown"])).read_text())
    for name, p in written.items():
        print(f"wrote {name}: {p}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
