"""k-shot transfer learning with flowed data (``task=transfer``; Alvarez-Melis & Fusi section 7.2,
figures 3e, 4 and 10; the WoW paper's Table 2 with ``transfer_nist_wow``).

The target domain has ``task.shots`` labelled samples per class (the run's ``target``, drawn
with ``target.n_per_class``); the source (e.g. 2000 samples, or 200 per class) flows toward
that k-shot target.  A classifier (`dsflow.tasks.scoring`, LeNet-5 by default: appendix C,
20 epochs, Adam 1e-3, weight decay 1e-6) is then trained, ``task.train_runs`` times with
different seeds, on each *adaptation setting* (``task.settings``):

* ``target``: the k-shot target alone (the no-adaptation baseline);
* ``target+source``: plus the raw source samples that were flowed (``z_0``);
* ``target+flowed``: plus the final particles (``z_T``);
* ``target+trajectory``: plus every recorded step of the particles' paths (``z_{1:T}``,
  labels carried along; needs ``flow.trajectory_every``);
* ``target+pushforward``: plus source samples that were *not* flowed (``task.holdout``),
  mapped by a push-forward network ``h: z_0 -> z_T`` fitted on the particles;
* ``finetune``: the model-adaptation baseline with the same labelled budget: pretrain on the
  (raw) source, fine-tune ``task.finetune.epochs`` (10) epochs on the k-shot target;

and scored on the target domain's test split (``task.test``: overrides of the target's
dataset config, ``{split: test}`` by default; samples of the k-shot draw are removed from it
when both come from the same file and split).

Source labels are target labels only after a class map (``task.label_map``): ``ot`` (default)
solves exact OT between the flowed classes and the k-shot target classes under the exact
W_2^2 between class distributions (the WoW paper's labelling; it finds the identity when the
flow kept every class on its own, and the permutation when the labels were permuted);
``identity`` keeps the source's label values (they must be target classes).  The map is
applied to the particles, trajectories and push-forward-mapped samples.  The *raw* source
(``target+source`` and the fine-tuning pretraining set) keeps its own labels when they are
target classes (``task.raw_labels: auto`` or ``own``: a raw USPS 3 is a 3, whatever the flow
made of it) and takes the flow's map otherwise (``mapped``, e.g. clothes toward digits).

``summary.json`` holds ``transfer_accuracy`` ({setting: [accuracy per training run]}),
``transfer_mean``, ``transfer_pair``, ``shots``, ``flow_family`` and ``domain_distance``
(OTDD between the source and the target's test split: figure 4's x axis).  ``tables`` pools
the runs of a sweep (seeds x training runs) into mean ± std per (pair, k, family, setting);
`plot_settings_by_pair` (figures 3e/10) and `plot_gain_vs_distance` (figure 4) draw a
sweep's figures (``figures``: ``dsflow-report`` writes them; ``scripts/transfer_figures.py``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from dsflow.tasks.base import Task, TaskOutput
from dsflow.tasks.scoring import (classifier_spec, concat, dataset_variant, drop_overlap, family_of,
                                  format_mean_std, mean_std, number, run_seeds, train_and_score,
                                  train_classifier, score)

log = logging.getLogger(__name__)

SETTINGS = ("target", "target+source", "target+flowed", "target+trajectory", "target+pushforward", "finetune")
LABELS = {
    "target": "target only",
    "target+source": "+ raw source",
    "target+flowed": "+ flowed (z_T)",
    "target+trajectory": "+ trajectories (z_1:T)",
    "target+pushforward": "+ push-forward h(x)",
    "finetune": "fine-tune (source -> target)",
}
LABEL_MAPS = ("ot", "identity")
RAW_LABELS = ("auto", "own", "mapped")
PUSHFORWARD_DEFAULTS = {"epochs": 20, "restarts": 10, "lr": 1e-3, "batch_size": 64, "val_fraction": 0.2,
                        "architecture": "auto", "options": {}}


def _settings(value) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or ())
    items = [str(s).strip() for s in items]
    bad = [s for s in items if s not in SETTINGS]
    if bad or not items:
        raise ValueError(f"task.settings={items!r}: use a list of {', '.join(SETTINGS)}")
    return list(dict.fromkeys(items))


def class_map(flowed, target, how: str = "ot") -> dict[int, int]:
    """``{source label: target label}`` for the flowed particles (see the module docstring)."""
    import torch

    how = str(how).lower()
    if how not in LABEL_MAPS:
        raise ValueError(f"task.label_map={how!r}; use one of {', '.join(LABEL_MAPS)}")
    sc = [int(c) for c in flowed.classes.tolist()]
    if how == "identity":
        tc = set(int(c) for c in target.classes.tolist())
        missing = [c for c in sc if c not in tc]
        if missing:
            raise ValueError(f"task.label_map=identity: source labels {missing} are not target classes "
                             f"{sorted(tc)}; use task.label_map=ot (classes matched by optimal transport)")
        return {c: c for c in sc}
    from dsflow.oracle.correspondence import correspondence_from_data

    corr = correspondence_from_data(flowed.detach().to("cpu", torch.float64), target.detach().to("cpu", torch.float64),
                                    inner="exact")
    plan = corr.coupling.double()
    best = plan.argmax(1)
    return {c: int(corr.target_classes[int(b)]) for c, b in zip(sc, best.tolist())}


def relabel(data, mapping: dict[int, int]):
    """``data`` with its labels sent through ``mapping`` (labels it lacks: an error)."""
    import torch

    if data is None:
        return None
    keys = torch.tensor(sorted(mapping), dtype=torch.long)
    values = torch.tensor([mapping[int(k)] for k in keys.tolist()], dtype=torch.long)
    y = data.y.detach().cpu()
    pos = torch.searchsorted(keys, y).clamp_max(len(keys) - 1)
    if not bool((keys[pos] == y).all()):
        raise ValueError(f"{data.name}: labels {sorted(set(y.tolist()) - set(keys.tolist()))} have no target class")
    return data.with_(y=values[pos].to(data.y.device))


class TransferTask(Task):
    """k-shot transfer learning with flowed data (see the module docstring)."""

    name = "transfer"
    # everything after the flow: the classifiers, the test split, the push-forward map
    after_flow_options = ("settings", "classifier", "train_runs", "finetune", "pushforward", "test", "label_map",
                          "domain_distance", "pair", "raw_labels")

    def __init__(self, name: str | None = None, *, shots: Any = None, holdout: Any = 0, settings=SETTINGS,
                 classifier: dict | None = None, train_runs: int = 3, finetune: dict | None = None,
                 pushforward: dict | None = None, test: dict | None = None, label_map: str = "ot",
                 domain_distance: dict | None = None, pair: str | None = None, raw_labels: str = "auto"):
        super().__init__(name)
        self.shots = None if shots is None else int(shots)
        self.holdout_option = holdout
        self.settings = _settings(settings)
        self.classifier = classifier_spec(classifier)
        self.train_runs = int(train_runs)
        finetune = dict(finetune or {})
        self.finetune = {"epochs": int(finetune.pop("epochs", 10)), "lr": float(finetune.pop("lr", 1e-3)),
                         "weight_decay": float(finetune.pop("weight_decay", 1e-6))}
        if finetune:
            raise ValueError(f"task.finetune: unknown key(s) {sorted(finetune)}; valid: epochs, lr, weight_decay")
        self.pushforward_options = {**PUSHFORWARD_DEFAULTS, **dict(pushforward or {})}
        self.test_options = dict(test or {"split": "test"})
        self.label_map = str(label_map).lower()
        if self.label_map not in LABEL_MAPS:
            raise ValueError(f"task.label_map={label_map!r}; use one of {', '.join(LABEL_MAPS)}")
        self.raw_labels = str(raw_labels).lower()
        if self.raw_labels not in RAW_LABELS:
            raise ValueError(f"task.raw_labels={raw_labels!r}; use one of {', '.join(RAW_LABELS)}")
        self.domain_distance = {"enabled": True, "max_samples": 1000, **dict(domain_distance or {})}
        self.pair = pair
        if self.train_runs < 1:
            raise ValueError(f"task.train_runs={train_runs}: train at least one classifier per setting")
        self.extra = None  # source samples kept out of the flow (for the push-forward map)

    # ------------------------------------------------------------------ config
    @classmethod
    def check_config(cls, cfg) -> None:
        from dsflow.config_checks import ConfigValueError, check_number

        task = cfg.get("task")
        if task is None:
            return
        check_number(task, "holdout", minimum=0, example="task.holdout=0.5", prefix="task.")
        try:  # the options' own checks, as one-line errors before anything runs (not wrapped by Hydra)
            settings = _settings(task.get("settings", SETTINGS))
            classifier_spec(task.get("classifier"))
            for key, valid in (("label_map", LABEL_MAPS), ("raw_labels", RAW_LABELS)):
                if str(task.get(key, valid[0])).lower() not in valid:
                    raise ValueError(f"task.{key}={task.get(key)!r}; use one of {', '.join(valid)}")
            if int(task.get("train_runs", 1)) < 1:
                raise ValueError(f"task.train_runs={task.get('train_runs')}: train at least one classifier per setting")
        except ValueError as err:
            raise ConfigValueError(str(err)) from None
        if "target+pushforward" in settings and not float(task.get("holdout") or 0):
            raise ConfigValueError("task.settings has target+pushforward, which maps source samples kept out of the "
                                   "flow: set task.holdout (a fraction, e.g. task.holdout=0.5, or a count)")
        every = (cfg.get("flow") or {}).get("trajectory_every") or 0
        if "target+trajectory" in list(settings) and not int(every):
            raise ConfigValueError("task.settings has target+trajectory, which trains on the particles' paths: set "
                                   "flow.trajectory_every=N (record every N steps) or drop the setting")
        dynamics = str((cfg.get("dynamics") or {}).get("_target_", ""))
        if dynamics.endswith("VariableLabel"):
            raise ConfigValueError("task=transfer carries the source labels along the flow: use dynamics=fd or jd_fl")

    # ------------------------------------------------------------------ hooks
    def prepare(self, run) -> TaskOutput:
        from dsflow.tasks.repurpose import holdout_split

        cfg, source, target = run.cfg, run.source, run.target
        counts = target.class_counts()
        if self.shots is not None and not bool((counts == self.shots).all()):
            raise ValueError(f"task.shots={self.shots} but the target has {sorted(set(counts.tolist()))} samples per "
                             f"class; draw the k-shot target with target.n_per_class={self.shots}")
        flow_index, extra_index = holdout_split(source.y, self.holdout_option, seed=int(cfg.get("seed", 0)))
        summary: dict[str, Any] = {"shots": int(counts.min()), "flow_family": family_of(cfg),
                                   "transfer_pair": self._pair_name(run)}
        if extra_index.numel():
            self.extra = source.subset(extra_index.to(source.y.device))
            source = source.subset(flow_index.to(source.y.device))
            summary.update(n=source.n, extra_source_n=self.extra.n)
        return TaskOutput(source=source, summary=summary)

    def _pair_name(self, run) -> str:
        if self.pair:
            return str(self.pair)
        node = run.cfg.get("source") or {}
        transforms = node.get("transform") if hasattr(node, "get") else None
        names = []
        for t in list(transforms or []):
            if isinstance(t, str):
                names.append(t)
            elif hasattr(t, "get"):
                extra = ",".join(f"{k}={v}" for k, v in t.items() if k != "name")
                names.append(f"{t.get('name')}({extra})" if extra else str(t.get("name")))
        src = run.source.name + (f"[{'+'.join(names)}]" if names and run.source.name in ("digits", "data") else "")
        return f"{src} -> {run.target.name}"

    def finish(self, run) -> TaskOutput:
        started = time.perf_counter()
        cfg, target = run.cfg, run.target.detach()
        device = run.device
        test = dataset_variant(cfg.target, self.test_options).to(device, run.dtype)
        test, removed = drop_overlap(test, run.target)
        mapping = class_map(run.flowed, target, self.label_map)
        sets = self._training_sets(run, mapping)
        seeds = run_seeds(int(cfg.get("seed", 0)), self.train_runs)
        accuracy: dict[str, list[float]] = {}
        sizes: dict[str, int] = {}
        classes = target.classes
        for setting in self.settings:
            if setting == "finetune":
                accuracy[setting] = [self._finetune(sets["source_all"], target, test, classes, seed, device)
                                     for seed in seeds]
                sizes[setting] = target.n
                continue
            data = sets[setting]
            sizes[setting] = data.n
            accuracy[setting] = [train_and_score(self.classifier, data, test, seed=seed, device=device, classes=classes)
                                 for seed in seeds]
        summary: dict[str, Any] = {
            "transfer_accuracy": accuracy,
            "transfer_mean": {k: mean_std(v)[0] for k, v in accuracy.items()},
            "transfer_train_size": sizes,
            "transfer_label_map": {str(k): v for k, v in mapping.items()},
            "transfer_raw_labels": self._raw_labels,
            "transfer_test_n": test.n,
            "transfer_test_overlap_removed": removed,
            "transfer_classifier": self.classifier["architecture"],
            "transfer_train_runs": self.train_runs,
        }
        summary.update(self._extras)
        if self.domain_distance.get("enabled", True):
            summary["domain_distance"] = self._domain_distance(run, test)
        summary["transfer_time_s"] = time.perf_counter() - started
        if "target" in accuracy:
            base = mean_std(accuracy["target"])[0]
            summary["transfer_gain"] = {k: mean_std(v)[0] - base for k, v in accuracy.items() if k != "target"}
        pair = run.summary.get("transfer_pair", "")
        lines = [f"{pair}, {summary.get('shots', run.summary.get('shots'))}-shot, classifier "
                 f"{self.classifier['architecture']} x {self.train_runs} runs, test n={test.n}"]
        lines += [f"  {LABELS[k]:<30}{format_mean_std(v):>14}  (train n={sizes[k]})" for k, v in accuracy.items()]
        figures = {"transfer": lambda path: plot_run_settings(accuracy, path, title=f"{pair}, "
                                                              f"{run.summary.get('shots')}-shot")}
        if run.target.is_image:
            figures["transfer_samples"] = lambda path: self._plot_samples(run, sets, path)
        return TaskOutput(summary=summary, figures=figures, text="\n".join(lines))

    def _training_sets(self, run, mapping) -> dict:
        """The training set of every setting (labels mapped to the target's)."""
        import torch

        target = run.target.detach()
        own = {int(c): int(c) for c in run.source.classes.tolist()}
        own_ok = set(own) <= set(int(c) for c in target.classes.tolist())
        if self.raw_labels == "own" and not own_ok:
            raise ValueError("task.raw_labels=own: the source's labels are not target classes; use task.raw_labels="
                             "mapped (the flow's class map) or auto")
        raw_map = own if (self.raw_labels == "own" or (self.raw_labels == "auto" and own_ok)) else mapping
        self._raw_labels = "own" if raw_map is own else "mapped"
        source = relabel(run.source.detach(), raw_map)
        raw_extra = relabel(self.extra.detach(), raw_map) if self.extra is not None else None
        flowed = relabel(run.flowed.detach(), mapping)
        extra = relabel(self.extra.detach(), mapping) if self.extra is not None else None
        sets: dict[str, Any] = {"target": target, "source": source, "flowed": flowed,
                                "source_all": concat([source, raw_extra], "source")}
        self._extras: dict[str, Any] = {}
        if "target+source" in self.settings:
            sets["target+source"] = concat([target, source], "target+source")
        if "target+flowed" in self.settings:
            sets["target+flowed"] = concat([target, flowed], "target+flowed")
        if "target+trajectory" in self.settings:
            frames = run.trajectory.get("trajectory")
            steps = run.trajectory.get("trajectory_steps")
            if frames is None or len(frames) < 2:
                raise ValueError("target+trajectory: the flow recorded no trajectory; set flow.trajectory_every=N")
            keep = [i for i, s in enumerate(list(steps)) if int(s) > 0]  # z_1..z_T (z_0 is the raw source)
            x = torch.as_tensor(frames[keep]).reshape(-1, flowed.d).to(target.x.device, target.x.dtype)
            y = flowed.y.repeat(len(keep))
            sets["target+trajectory"] = concat([target, flowed.with_(x=x, y=y)], "target+trajectory")
            self._extras["trajectory_frames"] = len(keep)
        if "target+pushforward" in self.settings:
            from dsflow.models.pushforward import fit_pushforward

            options = dict(self.pushforward_options)
            pf = fit_pushforward(run.source.x.detach(), run.flowed.x.detach(), image_shape=run.source.image_shape,
                                 device=run.device, seed=int(options.pop("seed", run.cfg.get("seed", 0))), **options)
            mapped = extra.with_(x=pf(extra.x.detach()).to(target.x.device, target.x.dtype))
            sets["mapped"] = mapped
            sets["target+pushforward"] = concat([target, mapped], "target+pushforward")
            self._extras.update(pushforward_val_mse=pf.val_mse, pushforward_identity_val_mse=pf.identity_val_mse)
        return sets

    def _finetune(self, source, target, test, classes, seed, device) -> float:
        """Pretrain on the raw source (mapped labels), fine-tune on the k-shot target (appendix C)."""
        from dsflow.models import fine_tune_classifier
        from dsflow.tasks.scoring import quiet_training

        model = train_classifier(self.classifier, source, classes, seed=seed, device=device)
        spec = self.classifier
        per_epoch = max(1, -(-target.n // spec["batch_size"]))
        epochs = max(self.finetune["epochs"], -(-int(spec.get("min_updates") or 0) // per_epoch))
        with quiet_training():
            tuned, _ = fine_tune_classifier(model, target, epochs=epochs, lr=self.finetune["lr"],
                                            weight_decay=self.finetune["weight_decay"], batch_size=spec["batch_size"],
                                            seed=seed, device=device)
        return score(tuned, test)

    def _domain_distance(self, run, test) -> float | None:
        """OTDD (p=2, Gaussian label model) between the raw source and the target's test split,
        both capped at ``task.domain_distance.max_samples`` (seeded draw): figure 4's x axis."""
        import torch

        import dsflow

        cap = int(self.domain_distance.get("max_samples") or 1000)
        gen = torch.Generator().manual_seed(int(run.cfg.get("seed", 0)))

        def capped(data):
            if data.n <= cap:
                return data
            return data.subset(torch.randperm(data.n, generator=gen)[:cap].to(data.y.device))

        options = {k: v for k, v in self.domain_distance.items() if k not in ("enabled", "max_samples")}
        options.setdefault("entreg", 1.0)
        try:
            result = dsflow.otdd(capped(run.source.detach()), capped(test.detach()), **options)
        except Exception as err:  # noqa: BLE001 - the distance is a figure's axis, not the result
            log.warning("domain distance not computed: %s", err)
            return None
        return float(result.distance)

    def _plot_samples(self, run, sets, path):
        from dsflow.plotting import core

        panels = {f"target ({run.summary.get('shots')}-shot)": run.target, "source (z_0)": run.source,
                  "flowed (z_T)": run.flowed}
        if "mapped" in sets:
            panels["push-forward h(x), not flowed"] = sets["mapped"]
        return core.plot_image_grid(panels, path)

    # ------------------------------------------------------------------ report
    @classmethod
    def tables(cls, runs) -> dict[str, str]:
        text = transfer_table(runs)
        return {"transfer": text} if text else {}

    @classmethod
    def figures(cls, runs) -> dict:
        """The sweep's figure 3e/10 and figure 4 layouts (``dsflow-report`` draws them)."""
        cells = collect(runs)
        if not cells:
            return {}
        figures = {"transfer_settings": lambda path: plot_settings_by_pair(runs, path)}
        if any(c["distance"] and "target" in c["acc"] for c in cells.values()):
            figures["transfer_gain_vs_distance"] = lambda path: plot_gain_vs_distance(runs, path)
        return figures


# ---------------------------------------------------------------------------- sweep tables and figures
def collect(runs) -> dict:
    """``{(pair, shots, family): {"acc": {setting: [...]}, "distance": [...], "runs": n}}`` over ok runs."""
    cells: dict = {}
    for r in runs:
        s = r.summary
        if r.status != "ok" or not isinstance(s.get("transfer_accuracy"), dict):
            continue
        key = (str(s.get("transfer_pair", "?")), int(s.get("shots") or 0), str(s.get("flow_family", "?")))
        cell = cells.setdefault(key, {"acc": {}, "distance": [], "runs": 0})
        cell["runs"] += 1
        for setting, values in s["transfer_accuracy"].items():
            cell["acc"].setdefault(setting, []).extend(values or [])
        if number(s.get("domain_distance")) is not None:
            cell["distance"].append(float(s["domain_distance"]))
    return cells


def transfer_table(runs) -> str | None:
    """One markdown table over a sweep: rows (pair, k, family), columns the adaptation settings,
    cells mean ± std (%) over every run (seed) x training run."""
    cells = collect(runs)
    if not cells:
        return None
    present = [s for s in SETTINGS if any(s in c["acc"] for c in cells.values())]
    header = ["pair", "k", "flow", *[LABELS[s] for s in present], "runs x trainings", "OTDD(source, target)"]
    lines = ["# k-shot transfer (Alvarez-Melis & Fusi 7.2 / Bonet et al. Table 2 layout)", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for (pair, shots, family) in sorted(cells, key=lambda k: (k[0], k[1], k[2])):
        c = cells[(pair, shots, family)]
        n_train = max((len(v) for v in c["acc"].values()), default=0)
        dist = mean_std(c["distance"])
        row = [pair, str(shots), family, *[format_mean_std(c["acc"].get(s, [])) for s in present],
               f"{c['runs']} x {n_train // max(c['runs'], 1)}", f"{dist[0]:.3g}" if dist else ""]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Test accuracy (%) on the target domain's test split, mean ± sample std over all runs (flow "
              "seeds) x classifier trainings. 'fine-tune': pretrained on the raw source, fine-tuned on the "
              "same k-shot target (the same labelled budget)."]
    return "\n".join(lines) + "\n"


def plot_run_settings(accuracy: dict, path, title: str = ""):
    """One run: accuracy of every setting (mean ± std over its training runs)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(accuracy)
    stats = [mean_std(accuracy[k]) for k in names]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(names), 3.4))
    ax.bar(range(len(names)), [100 * s[0] for s in stats], yerr=[100 * s[1] for s in stats], capsize=3,
           color=["#999999" if k == "target" else "#d62728" if k == "finetune" else "#1f77b4" for k in names])
    for i, s in enumerate(stats):
        ax.text(i, 100 * s[0] + 1, f"{100 * s[0]:.1f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), [LABELS[k].replace(" (", "\n(") for k in names], fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_settings_by_pair(runs, path, family: str | None = None):
    """Figures 3e / 10: one panel per k; per domain pair, the accuracy (mean ± std) of every
    adaptation setting (markers side by side)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cells = {k: v for k, v in collect(runs).items() if family is None or k[2] == family}
    if not cells:
        return None
    shots = sorted({k[1] for k in cells})
    pairs = sorted({k[0] for k in cells})
    present = [s for s in SETTINGS if any(s in c["acc"] for c in cells.values())]
    markers = dict(zip(SETTINGS, ["o", "v", "s", "D", "^", "X"]))
    # one row per k, as figure 10 (5-shot above, 10-shot below)
    fig, axes = plt.subplots(len(shots), 1, figsize=(3.2 + 2.4 * len(pairs), 0.4 + 2.9 * len(shots)), squeeze=False)
    width = 0.8 / max(len(present), 1)
    for ax, k in zip(axes[:, 0], shots):
        for j, setting in enumerate(present):
            xs, ms, ss = [], [], []
            for i, pair in enumerate(pairs):
                for key, c in cells.items():
                    if key[0] == pair and key[1] == k and setting in c["acc"]:
                        m, s, _ = mean_std(c["acc"][setting])
                        xs.append(i - 0.4 + width * (j + 0.5))
                        ms.append(100 * m)
                        ss.append(100 * s)
            ax.errorbar(xs, ms, yerr=ss, fmt=markers[setting], capsize=2, label=LABELS[setting],
                        linestyle="none", ms=5)
        ax.set_xticks(range(len(pairs)), [p.replace(" -> ", "\n-> ") for p in pairs], fontsize=7)
        ax.set_title(f"{k}-shot", fontsize=9)
        ax.set_ylabel("target test accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_gain_vs_distance(runs, path, flows=("target+flowed", "target+trajectory")):
    """Figure 4: the gain over the target-only baseline against the OTDD between the domains,
    one point per (pair, k), data adaptation (flows) beside model adaptation (fine-tuning)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cells = collect(runs)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    styles = {"finetune": ("X", "#d62728"), "target+flowed": ("s", "#1f77b4"), "target+trajectory": ("D", "#2ca02c")}
    drawn = False
    for setting in (*flows, "finetune"):
        xs, ys = [], []
        for (pair, k, family), c in cells.items():
            d, base, got = mean_std(c["distance"]), mean_std(c["acc"].get("target")), mean_std(c["acc"].get(setting))
            if d and base and got:
                xs.append(d[0])
                ys.append(100 * (got[0] - base[0]))
        if xs:
            marker, color = styles.get(setting, ("o", None))
            ax.scatter(xs, ys, marker=marker, color=color, label=LABELS[setting])
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("OTDD(source, target)")
    ax.set_ylabel("gain over target only (accuracy points)")
    ax.legend(fontsize=7)
    ax.set_title("data adaptation (flows) vs model adaptation (fine-tuning)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
