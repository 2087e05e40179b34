"""Dataset distillation by flows (``task=distill``; Bonet et al. 2025, their Table 1).

A synthetic set of ``task.ipc`` images per class is flowed toward the whole real training set
(the run's ``target``); a classifier trained on the synthetic set *alone* is then scored on
the real test split.  The hooks (`dsflow.tasks.base`):

* ``prepare``: the synthetic set replaces the source (the particles).  ``task.init``:
  ``real`` (random real images of the run's ``source``, a seeded per-class draw), ``kmeans``
  (per-class k-means centres) or ``noise`` (i.i.d. Gaussian pixels with the real data's mean
  and std, clipped to its range).
* ``start``: with ``task.eval_every=N`` a flow callback trains ``task.eval_train_runs``
  classifiers on the particles every N steps and writes ``distill_accuracy`` into
  ``metrics.jsonl`` (accuracy against flow step).
* labels: a flow between class distributions is blind to label *values* (OTDD's coupling and
  the MMD between sets of classes may move synthetic class c onto real class c' when its
  initial images sit nearer c'), so with ``task.relabel=ot`` (default) each synthetic class
  takes the real class that exact OT between the classes under W_2^2 assigns it (a
  permutation, from training data only; ``distill_label_map``, ``distill_relabelled``), at
  every evaluation; ``none`` keeps the initial labels.
* ``finish``: the flowed set is scored ``task.train_runs`` times (classifier seeds), and so
  are the baselines of the same budget (``task.baselines``): ``random`` (a fresh random draw
  of real images per training run), ``kmeans`` (per-class k-means centres), ``init`` (the
  synthetic set before the flow) and ``full`` (the whole training set: the upper bound,
  trained with ``task.full_classifier`` over ``task.classifier``); figures
  ``distill_images.png`` (per class, before and after) and ``distill_accuracy.png``.
* ``tables``: the WoW Table 1 layout over a sweep: rows random / k-means / flowed (per flow
  family and init) / full set, columns images per class, cells mean ± std (%) over runs
  (seeds) x training runs.

The flow itself is the config's: ``functional=mmd_sw`` (default of the experiments; its
``target_batch`` is the protocol's minibatch of real samples per class per step, and
``optimizer=momentum`` with ``optimizer.lr`` the paper's tau) or ``functional=otdd``
(``functional.target_batch`` too, else the whole target each step;
``functional.allow_singletons=true`` for 1 image per class).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from dsflow.tasks.base import Task, TaskOutput
from dsflow.tasks.scoring import (classifier_spec, dataset_variant, drop_overlap, family_of, format_mean_std,
                                  mean_std, run_seeds, train_and_score)

log = logging.getLogger(__name__)

INITS = ("real", "kmeans", "noise")
RELABEL = ("ot", "none")
BASELINES = ("random", "kmeans", "init", "full")
ROW_LABELS = {"random": "random real images", "kmeans": "k-means centres", "init": "synthetic before the flow",
              "flowed": "flowed", "full": "full training set"}


def draw_real(data, ipc: int, seed: int):
    """``ipc`` random samples of every class of ``data`` (seeded; a class with fewer: an error)."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    y = data.y.detach().cpu()
    rows = []
    for c in data.classes.tolist():
        idx = torch.nonzero(y == c).flatten()
        if idx.numel() < ipc:
            raise ValueError(f"task.ipc={ipc}: class {c} of {data.name!r} has only {idx.numel()} samples")
        rows.append(idx[torch.randperm(idx.numel(), generator=gen)[:ipc]])
    return data.subset(torch.cat(rows).to(data.y.device))


def kmeans_centres(data, ipc: int, seed: int, n_init: int = 3):
    """``ipc`` k-means centres of every class of ``data`` (scikit-learn, seeded)."""
    import numpy as np
    import torch
    from sklearn.cluster import KMeans

    x, y = data.x.detach().cpu().double().numpy(), data.y.detach().cpu().numpy()
    centres, labels = [], []
    for c in data.classes.tolist():
        xc = x[y == c]
        if xc.shape[0] < ipc:
            raise ValueError(f"task.ipc={ipc}: class {c} of {data.name!r} has only {xc.shape[0]} samples")
        km = KMeans(n_clusters=ipc, n_init=n_init, random_state=int(seed) % 2**31).fit(xc)
        centres.append(km.cluster_centers_)
        labels += [c] * ipc
    x_new = torch.as_tensor(np.concatenate(centres), dtype=data.x.dtype, device=data.x.device)
    return data.with_(x=x_new, y=torch.as_tensor(labels, dtype=torch.long, device=data.y.device), meta={})


def noise_images(data, ipc: int, seed: int):
    """``ipc`` images per class of i.i.d. Gaussian pixels with ``data``'s mean and std, clipped
    to its range (labels as the classes of ``data``)."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    x = data.x.detach()
    classes = data.classes
    n = ipc * classes.numel()
    z = torch.randn(n, data.d, generator=gen, dtype=torch.float64)
    noisy = (x.double().mean() + x.double().std() * z).clamp(float(x.min()), float(x.max()))
    y = classes.repeat_interleave(ipc)
    return data.with_(x=noisy.to(x.device, x.dtype), y=y.to(data.y.device), meta={})


def synthetic_set(data, ipc: int, init: str, seed: int):
    init = str(init).lower()
    if init == "real":
        out = draw_real(data, ipc, seed)
    elif init == "kmeans":
        out = kmeans_centres(data, ipc, seed)
    elif init == "noise":
        out = noise_images(data, ipc, seed)
    else:
        raise ValueError(f"task.init={init!r}; use one of {', '.join(INITS)}")
    return out.with_(name=f"synthetic ({init}, {ipc} ipc)", meta={})


class DistillTask(Task):
    """Dataset distillation by flows (see the module docstring)."""

    name = "distill"
    after_flow_options = ("classifier", "full_classifier", "train_runs", "baselines", "test", "eval_train_runs",
                          "eval_every", "relabel")

    def __init__(self, name: str | None = None, *, ipc: int = 10, init: str = "real", classifier: dict | None = None,
                 full_classifier: dict | None = None, train_runs: int = 3, baselines=BASELINES,
                 test: dict | None = None, eval_every: int = 0, eval_train_runs: int = 1, relabel: str = "ot"):
        super().__init__(name)
        self.ipc, self.init = int(ipc), str(init).lower()
        self.classifier = classifier_spec(classifier)
        self.full_classifier = classifier_spec(full_classifier, what="task.full_classifier", base=self.classifier)
        self.train_runs, self.eval_every, self.eval_train_runs = int(train_runs), int(eval_every), int(eval_train_runs)
        self.baselines = _baselines(baselines)
        self.test_options = dict(test or {"split": "test"})
        self.relabel = str(relabel).lower()
        self.history: dict[str, list] = {"step": [], "accuracy": []}
        self.initial = self.pool = self.test = None

    @classmethod
    def check_config(cls, cfg) -> None:
        from dsflow.config_checks import ConfigValueError

        task = cfg.get("task")
        if task is None:
            return
        try:
            for key, low in (("ipc", 1), ("train_runs", 1), ("eval_every", 0), ("eval_train_runs", 1)):
                value = task.get(key, low)
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise ValueError(f"task.{key}={value!r} must be an integer >= {low}")
            if str(task.get("relabel", "ot")).lower() not in RELABEL:
                raise ValueError(f"task.relabel={task.get('relabel')!r}; use one of {', '.join(RELABEL)}")
            if str(task.get("init", "real")).lower() not in INITS:
                raise ValueError(f"task.init={task.get('init')!r}; use one of {', '.join(INITS)}")
            spec = classifier_spec(task.get("classifier"))
            classifier_spec(task.get("full_classifier"), what="task.full_classifier", base=spec)
            _baselines(task.get("baselines", BASELINES))
        except ValueError as err:
            raise ConfigValueError(str(err)) from None
        dynamics = str((cfg.get("dynamics") or {}).get("_target_", ""))
        if dynamics.endswith("VariableLabel"):
            raise ConfigValueError("task=distill keeps ipc images per class: use dynamics=fd (or jd_fl)")

    # ------------------------------------------------------------------ hooks
    def prepare(self, run) -> TaskOutput:
        seed = int(run.cfg.get("seed", 0))
        self.pool = run.source.detach()  # the real images (the source is the synthetic set from here on)
        synthetic = synthetic_set(self.pool, self.ipc, self.init, seed)
        self.initial = synthetic
        self.test = self._test_split(run)
        return TaskOutput(source=synthetic, summary={
            "ipc": self.ipc, "distill_init": self.init, "n": synthetic.n, "flow_family": family_of(run.cfg),
            "distill_classifier": self.classifier["architecture"], "distill_dataset": run.target.name,
            "distill_test_n": self.test.n, "distill_real_n": run.target.n})

    def _test_split(self, run):
        test = dataset_variant(run.cfg.target, self.test_options).to(run.device, run.dtype)
        test, removed = drop_overlap(test, run.target)
        if removed:
            log.info("distill: %d test samples are also training samples; scored without them", removed)
        return test

    def start(self, run) -> TaskOutput:
        if not self.eval_every:
            return TaskOutput()
        seeds = run_seeds(int(run.cfg.get("seed", 0)), self.eval_train_runs)
        steps = int(run.cfg.steps)
        before = self._evaluate(run.state.x.detach(), run.state.y.detach(), seeds, run)
        self.history["step"].append(0)
        self.history["accuracy"].append(before)

        def monitor(step, record, state):
            done = int(state.step)
            if done % self.eval_every and done != steps:
                return
            acc = self._evaluate(state.x.detach(), state.y.detach(), seeds, run)
            record["distill_accuracy"] = acc
            self.history["step"].append(done)
            self.history["accuracy"].append(acc)

        return TaskOutput(callbacks=[monitor], summary={"distill_accuracy_before": before})

    def _labelled(self, data, run):
        """``(data, label map)``: ``data`` relabelled by the OT class map (``task.relabel=ot``)."""
        if self.relabel == "none":
            return data, None
        from dsflow.tasks.transfer import class_map, relabel

        mapping = class_map(data, run.target, "ot")
        return relabel(data, mapping), mapping

    def _evaluate(self, x, y, seeds, run) -> float:
        data = self.initial.with_(x=x.to(self.initial.x), y=y.to(self.initial.y.device))
        data, _ = self._labelled(data, run)
        values = [train_and_score(self.classifier, data, self.test, seed=s, device=run.device,
                                  classes=run.target.classes) for s in seeds]
        return sum(values) / len(values)

    def finish(self, run) -> TaskOutput:
        started = time.perf_counter()
        seed = int(run.cfg.get("seed", 0))
        seeds = run_seeds(seed, self.train_runs)
        classes, device, test = run.target.classes, run.device, self.test
        real = self.pool

        def scores(data, spec=None):
            return [train_and_score(spec or self.classifier, data, test, seed=s, device=device, classes=classes)
                    for s in seeds]

        flowed, mapping = self._labelled(run.flowed.detach(), run)
        accuracy: dict[str, list[float]] = {"flowed": scores(flowed)}
        for baseline in self.baselines:
            if baseline == "init":
                accuracy["init"] = scores(self.initial)
            elif baseline == "random":
                accuracy["random"] = [train_and_score(self.classifier, draw_real(real, self.ipc, 7919 + s), test,
                                                      seed=s, device=device, classes=classes) for s in seeds]
            elif baseline == "kmeans":
                accuracy["kmeans"] = scores(kmeans_centres(real, self.ipc, seed))
            elif baseline == "full":
                accuracy["full"] = scores(run.target.detach(), self.full_classifier)
        history = dict(self.history)
        if history["step"] and history["step"][-1] != int(run.summary.get("steps_done") or 0):
            history["step"].append(int(run.summary.get("steps_done") or 0))
            history["accuracy"].append(mean_std(accuracy["flowed"])[0])
        summary: dict[str, Any] = {
            "distill_accuracy": accuracy,
            "distill_mean": {k: mean_std(v)[0] for k, v in accuracy.items()},
            "distill_history": history,
            "distill_train_runs": self.train_runs,
            "distill_label_map": None if mapping is None else {str(k): v for k, v in mapping.items()},
            "distill_relabelled": None if mapping is None else sum(int(k != v) for k, v in mapping.items()),
            "distill_time_s": time.perf_counter() - started,
        }
        title = f"{run.target.name}: {self.ipc} image(s) per class, init {self.init}"
        lines = [f"{title}; classifier {self.classifier['architecture']} x {self.train_runs} runs, test n={test.n}"]
        lines += [f"  {ROW_LABELS[k]:<28}{format_mean_std(v):>14}" for k, v in accuracy.items()]
        figures = {"distill_accuracy": lambda path: plot_accuracy_vs_step(history, accuracy, path, title=title)}
        if run.target.is_image:
            figures["distill_images"] = lambda path: plot_synthetic_grid(self.initial, flowed, path,
                                                                         title=title)
        return TaskOutput(summary=summary, figures=figures, text="\n".join(lines))

    # ------------------------------------------------------------------ report
    @classmethod
    def tables(cls, runs) -> dict[str, str]:
        text = distill_table(runs)
        return {"distill": text} if text else {}

    @classmethod
    def figures(cls, runs) -> dict:
        """Accuracy against images per class, one line per method (``dsflow-report`` draws it)."""
        sections = distill_cells(runs)
        return {"distill_vs_ipc": lambda path: plot_accuracy_vs_ipc(sections, path)} if sections else {}


def _baselines(value) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or ())
    bad = [b for b in items if str(b) not in BASELINES]
    if bad:
        raise ValueError(f"task.baselines={items!r}: use a list of {', '.join(BASELINES)} (or [])")
    return [str(b) for b in dict.fromkeys(items)]


# ---------------------------------------------------------------------------- sweep table
def distill_cells(runs) -> dict:
    """``{(dataset, classifier): {row name: {ipc: [accuracies]}}}`` over the finished runs."""
    sections: dict = {}
    for r in runs:
        s = r.summary
        if r.status != "ok" or not isinstance(s.get("distill_accuracy"), dict):
            continue
        key = (str(s.get("distill_dataset", "?")), str(s.get("distill_classifier", "?")))
        sec = sections.setdefault(key, {})
        ipc = int(s.get("ipc") or 0)
        for method, values in s["distill_accuracy"].items():
            if method == "flowed":
                row = f"flowed ({s.get('flow_family', '?')}, init {s.get('distill_init', '?')})"
            elif method == "init":
                row = f"synthetic before the flow (init {s.get('distill_init', '?')})"
            else:
                row = ROW_LABELS.get(method, method)
            sec.setdefault(row, {}).setdefault(ipc, []).extend(values or [])
    return sections


def distill_table(runs) -> str | None:
    """The WoW Table 1 layout: per (dataset, classifier), rows random real / k-means / the
    synthetic set before the flow / flowed (per family and init) / full set, columns ipc."""
    sections = distill_cells(runs)
    if not sections:
        return None
    out = ["# Dataset distillation (Bonet et al. 2025, Table 1 layout)", ""]
    order = ["random real images", "k-means centres"]
    for (dataset, classifier), sec in sorted(sections.items()):
        ipcs = sorted({i for row in sec.values() for i in row})
        out += [f"## {dataset}, classifier {classifier}", "",
                "| method | " + " | ".join(f"{i} img/cls" for i in ipcs) + " |",
                "|---|" + "|".join("---" for _ in ipcs) + "|"]
        rows = sorted(sec, key=lambda name: (order.index(name) if name in order else
                                             3 if name.startswith("synthetic") else 4 if name.startswith("flowed")
                                             else 5, name))
        for name in rows:
            out.append(f"| {name} | " + " | ".join(format_mean_std(sec[name].get(i, [])) for i in ipcs) + " |")
        out.append("")
    out.append("Test accuracy (%) on the real test split of a classifier trained on each set alone, mean ± sample "
               "std over runs (seeds) x classifier trainings. 'full training set' is the upper bound.")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- figures
def plot_accuracy_vs_ipc(sections: dict, path):
    """Per (dataset, classifier) panel: accuracy (mean ± std) against images per class, one
    line per method; the full training set as a horizontal band."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sections), figsize=(5.4 * len(sections), 3.8), squeeze=False)
    for ax, ((dataset, classifier), sec) in zip(axes[0], sorted(sections.items())):
        for name, cells in sorted(sec.items()):
            ipcs = sorted(cells)
            stats = [mean_std(cells[i]) for i in ipcs]
            if name == "full training set":
                m = mean_std([v for i in ipcs for v in cells[i]])
                ax.axhline(100 * m[0], color="k", ls=":", lw=1, label=name)
                continue
            ax.errorbar(ipcs, [100 * s[0] for s in stats], yerr=[100 * s[1] for s in stats], marker="o", ms=4,
                        capsize=2, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("images per class")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset}, {classifier}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_synthetic_grid(before, after, path, title: str = "", max_per_class: int = 10):
    """Per class (rows): the synthetic images before the flow (left) and after it (right)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    classes = before.classes.tolist()
    k = min(max_per_class, int(before.class_counts().max()))
    shape = before.image_shape
    fig, axes = plt.subplots(len(classes), 2 * k + 1, figsize=(max(4.0, 0.7 * (2 * k + 1)), 0.7 * len(classes) + 0.6),
                             squeeze=False)
    for row, c in enumerate(classes):
        for side, data in enumerate((before, after)):
            x = data.x.detach().cpu()[data.y.detach().cpu() == c][:k]
            for j in range(k):
                ax = axes[row, side * (k + 1) + j]
                ax.axis("off")
                if j < x.shape[0]:
                    img = x[j].reshape(shape).numpy()
                    img = np.transpose(img, (1, 2, 0)) if shape[0] == 3 else img[0]
                    ax.imshow(np.clip(img, 0, 1) if shape[0] == 3 else img, cmap=None if shape[0] == 3 else "gray")
        axes[row, k].axis("off")
        axes[row, 0].text(-0.3, 0.5, before.class_name(c), transform=axes[row, 0].transAxes, ha="right",
                          va="center", fontsize=8)
    axes[0, 0].set_title("before the flow", fontsize=8, loc="left")
    axes[0, k + 1].set_title("after the flow", fontsize=8, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy_vs_step(history: dict, accuracy: dict, path, title: str = ""):
    """Accuracy of a classifier trained on the particles against flow step, with the baselines
    (mean over training runs) as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.4, 3.6))
    if history.get("step"):
        ax.plot(history["step"], [100 * a for a in history["accuracy"]], marker="o", ms=3, label="synthetic set")
    colours = {"random": "#999999", "kmeans": "#ff7f0e", "full": "#2ca02c", "init": "#9467bd"}
    for key, colour in colours.items():
        if key in accuracy:
            ax.axhline(100 * mean_std(accuracy[key])[0], color=colour, ls="--", lw=1, label=ROW_LABELS[key])
    if "flowed" in accuracy and not history.get("step"):
        ax.axhline(100 * mean_std(accuracy["flowed"])[0], color="#1f77b4", lw=1.5, label="flowed")
    ax.set_xlabel("flow step")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
