"""The re-purposing task (``task=repurpose``; paper sections 6.3, 6.4, 7.2, 7.3, Table 1).

Flow data a frozen classifier (``oracle``) cannot read toward the data it was trained on,
then classify the flowed data.  The hooks (`dsflow.tasks.base`):

* ``prepare``: ``task.holdout`` (fraction in ``(0, 1)`` or a count >= 1; 0 = off) keeps a
  seeded, stratified part of the source (by its true labels) out of the flow, for the
  push-forward map; ``task.source_labels=pseudo`` (unsupervised flow, 6.3) replaces the
  labels the flow uses by k-means pseudo-labels aligned to the target's classes WITHOUT
  true labels (``task.pseudo_labels.alignment: hungarian | ot`` on the cost
  ``task.pseudo_labels.cost: means | gaussian | otdd``; ``alignment: ideal`` is the paper's
  appendix-C protocol, matched to the TRUE labels: an upper bound).  The true labels stay
  on the task (``self.true_y``) and are used only for evaluation.
* ``start``: builds the oracle (`dsflow.models.get_oracle`: checkpoint, cache or training),
  composes it with the class-correspondence layer (6.4) when the source's classes are not
  the oracle's (``oracle.correspondence: auto``) or always (``true``), records
  ``accuracy_before`` and returns an `OracleMonitor` (every ``oracle.eval_every`` steps; the
  correspondence recomputed on the particles at each evaluation) as a flow callback, so
  ``accuracy`` lands in ``metrics.jsonl``.
* ``finish``: accuracy on the flowed particles (correspondence recomputed), the idealised
  matching of pseudo-labelled runs, with ``task.pushforward.enabled`` the push-forward map
  ``h: x_0 -> x_T`` fitted on the particles and applied to the held-out source
  (``accuracy_pushforward``), and the figures: confusion matrices, accuracy curve (fig. 6),
  objective vs accuracy (fig. 11), ``repurposing.png``, ``pushforward_samples.png``.
* ``tables``: the paper's Table 1 layout (rows: before, supervised, unsupervised; columns:
  source datasets, with the paper's numbers for the *NIST sets).

Without an oracle (``oracle=none``) the task still holds out and pseudo-labels; the
push-forward map then has nothing to classify and is refused.  The pieces are plain
functions too (`holdout_split`, `pseudo_label_source`, `merge_small_clusters`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from dsflow.tasks.base import Task, TaskOutput

log = logging.getLogger(__name__)

#: Table 1 of Alvarez-Melis & Fusi (2021): MNIST LeNet-5 accuracy (%) on 5K samples.
PAPER_TABLE1 = {
    "usps": {"before": 77.1, "supervised": 99.1, "unsupervised": 66.4},
    "kmnist": {"before": 5.05, "supervised": 99.2, "unsupervised": 59.2},
    "fashion_mnist": {"before": 8.22, "supervised": 99.1, "unsupervised": 54.9},
    "emnist": {"before": 3.62, "supervised": 36.7, "unsupervised": 20.7},
}


SOURCE_LABEL_MODES = ("true", "pseudo")
ALIGNMENTS = ("hungarian", "ot", "ideal")
ALIGNMENT_COSTS = ("means", "gaussian", "otdd")


def _get(node, key, default=None):
    if node is None:
        return default
    value = node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)
    return default if value is None else value


def source_label_mode(value) -> str:
    """``task.source_labels`` as ``"true"`` or ``"pseudo"`` (booleans / strings accepted)."""
    if value is None or value is True:
        return "true"
    text = str(value).strip().lower()
    if text in ("true", "supervised"):
        return "true"
    if text in ("pseudo", "unsupervised"):
        return "pseudo"
    raise ValueError(
        f"task.source_labels={value!r} is not valid; use task.source_labels=true (the source's own labels drive the "
        "flow) or task.source_labels=pseudo (k-means pseudo-labels aligned to the target's classes)"
    )


def holdout_split(y, holdout, seed: int = 0):
    """``(flow_index, holdout_index)``: a seeded split of ``y`` stratified by class.

    ``holdout`` is a fraction in ``[0, 1)`` or a number of samples ``>= 1`` (converted to the
    closest fraction; every class keeps at least one sample in the flow part).
    """
    import torch

    from dsflow.data.common import stratified_split

    y = torch.as_tensor(y).detach().cpu().long()
    n = int(y.numel())
    try:
        amount = float(holdout or 0)
    except (TypeError, ValueError):
        raise ValueError(f"task.holdout={holdout!r} must be a fraction in [0, 1) or a number of samples") from None
    if amount < 0 or (amount >= 1 and amount != int(amount)):
        raise ValueError(f"task.holdout={holdout!r} must be a fraction in [0, 1) or a whole number of samples >= 1")
    fraction = amount if amount < 1 else amount / max(n, 1)
    if fraction >= 1:
        raise ValueError(f"task.holdout={holdout!r} keeps every one of the {n} source samples out of the flow; "
                         "use a smaller fraction or count")
    return stratified_split(y, fraction, seed=seed)


def pseudo_label_source(source, target, *, k=None, alignment: str = "hungarian", cost: str = "means",
                        n_init: int = 10, seed: int = 0, min_cluster_size: int = 2) -> tuple[Any, dict]:
    """Pseudo-label ``source`` for an unsupervised flow toward ``target`` (paper 6.3).

    Returns the relabelled copy (true labels in ``meta["true_y"]``, clusters in
    ``meta["clusters"]``) and facts for the summary: ``k``, the alignment used, the cluster
    -> class mapping, the clusters smaller than ``min_cluster_size`` that were merged into
    their nearest cluster (the OTDD's Gaussian label distances need two samples per class),
    and ``cluster_accuracy_ideal`` (the clusters' agreement with the true
    labels under the best one-to-one matching: an upper bound computed WITH true labels).
    """
    import torch

    from dsflow.oracle.pseudo_labels import align_clusters, idealized_cluster_accuracy, kmeans_pseudo_labels

    alignment, cost = str(alignment).lower(), str(cost).lower()
    if alignment not in ALIGNMENTS:
        raise ValueError(f"task.pseudo_labels.alignment={alignment!r}; use one of {', '.join(ALIGNMENTS)}")
    if cost not in ALIGNMENT_COSTS:
        raise ValueError(f"task.pseudo_labels.cost={cost!r}; use one of {', '.join(ALIGNMENT_COSTS)}")
    k = int(k) if k else target.num_classes
    if k > source.n:
        raise ValueError(f"task.pseudo_labels.k={k} clusters but only {source.n} source samples are flowed; "
                         "lower task.pseudo_labels.k or use more samples")
    true_y = source.y.detach().cpu()
    found = kmeans_pseudo_labels(source.x, k, seed=seed, n_init=n_init)
    clusters, merged = merge_small_clusters(source.x.detach().cpu(), found.labels, found.centers, min_cluster_size)
    ideal_accuracy, ideal_map = idealized_cluster_accuracy(clusters, true_y)
    if alignment == "ideal":  # paper appendix C: clusters take the value of their best-matching TRUE label
        lookup = torch.full((k,), -1, dtype=torch.long)
        for c, label in ideal_map.items():
            lookup[c] = label
        labels, mapping, names = lookup[clusters], ideal_map, source.class_names
    else:
        aligned = align_clusters(source.x.detach().cpu(), clusters, target.detach().to("cpu"), method=alignment,
                                 cost=cost)
        labels, mapping, names = aligned.labels, aligned.mapping, target.class_names
    meta = {**source.meta, "true_y": true_y, "clusters": clusters, "alignment": mapping}
    relabelled = source.with_(y=labels.to(source.y.device), meta=meta, class_names=names)
    info = {
        "k": k,
        "alignment": alignment,
        "cost": None if alignment == "ideal" else cost,
        "uses_true_labels": alignment == "ideal",
        "cluster_to_class": {str(c): int(v) for c, v in mapping.items()},
        "cluster_accuracy_ideal": ideal_accuracy,
        "classes_used": int(torch.unique(labels).numel()),
        "merged_clusters": merged,
    }
    return relabelled, info


def merge_small_clusters(x, clusters, centers, min_size: int = 2):
    """Move the samples of clusters with fewer than ``min_size`` members to the nearest
    remaining cluster centre.  Returns ``(clusters, merged cluster ids)``; ids are kept."""
    import torch

    clusters = torch.as_tensor(clusters).long()
    counts = torch.bincount(clusters, minlength=centers.shape[0])
    small = (counts > 0) & (counts < int(min_size))
    keep = counts >= int(min_size)
    if not bool(small.any()):
        return clusters, []
    if not bool(keep.any()):
        raise ValueError(f"pseudo-labels: every k-means cluster has fewer than {min_size} samples; "
                         "lower task.pseudo_labels.k or flow more samples")
    kept_ids = torch.nonzero(keep).flatten()
    moving = small[clusters]
    nearest = torch.cdist(x[moving].double(), centers[kept_ids].double()).argmin(1)
    clusters = clusters.clone()
    clusters[moving] = kept_ids[nearest]
    return clusters, torch.nonzero(small).flatten().tolist()


def _needs_correspondence(mode, source_classes, oracle_classes) -> bool:
    import torch

    same = source_classes.numel() == oracle_classes.numel() and bool(torch.equal(source_classes, oracle_classes))
    if isinstance(mode, str):
        if mode != "auto":
            raise ValueError(f"oracle.correspondence must be auto, true or false; got {mode!r}")
        return not same
    return bool(mode)


def _classifier(oracle, source, target, mode, matching: str = "otdd"):
    from dsflow.oracle.correspondence import ComposedClassifier, correspondence_by

    sc, oc = source.classes, oracle.classes.detach().cpu()
    if not _needs_correspondence(mode, sc, oc):
        return oracle, None
    tc = target.classes
    if not (tc.numel() == oc.numel() and bool((tc == oc).all())):
        raise ValueError(
            f"oracle: the class correspondence needs the flow target's classes {tc.tolist()} to equal the oracle's "
            f"{oc.tolist()} (label distances are computed between source and target)"
        )
    corr = correspondence_by(matching, source.detach(), target.detach()).to(oracle.classes.device)
    return ComposedClassifier(oracle, corr), corr


def _refreshing_monitor(classifier, rebuild, **options):
    """An `OracleMonitor` whose classifier is rebuilt from the particles before each evaluation
    (the class correspondence of moving particles changes through the flow).  Built here, not
    at import, so that ``dsflow-report`` reads this module's tables without torch."""
    from dsflow.oracle.evaluation import OracleMonitor

    class RefreshingMonitor(OracleMonitor):
        def evaluate_state(self, state, step, record=None):
            self.oracle = rebuild(state)
            return super().evaluate_state(state, step, record)

    return RefreshingMonitor(classifier, **options)


def _oracle_origin(corr) -> dict | None:
    """``{source class: "oracle t, u"}``: the oracle classes a correspondence maps to each
    source class (for the confusion matrix's column labels); None without one."""
    if corr is None:
        return None
    origin: dict = {}
    for oracle_class, source_class in corr.class_map().items():
        origin.setdefault(int(source_class), []).append(str(oracle_class))
    return {c: "oracle " + ", ".join(v) for c, v in origin.items()}


def _accuracy_history(monitor, result) -> dict:
    """``{step, accuracy}`` through the whole flow.  After a resume the monitor has seen only
    the resumed steps; the accuracies of the steps before the checkpoint are in the restored
    history records (the monitor wrote them into each record), so they are put back in order."""
    steps, accuracy = list(monitor.history["step"]), list(monitor.history["accuracy"])
    resumed_from = getattr(result, "resumed_from", None)
    if resumed_from is not None and steps:
        earlier = [(int(r["step"]) + 1, float(r["accuracy"])) for r in result.history
                   if r.get("accuracy") is not None and int(r["step"]) + 1 <= int(resumed_from)]
        steps = steps[:1] + [s for s, _ in earlier] + steps[1:]
        accuracy = accuracy[:1] + [a for _, a in earlier] + accuracy[1:]
    return {"step": steps, "accuracy": accuracy}


def _oracle_configured(cfg) -> bool:
    oracle = cfg.get("oracle") if hasattr(cfg, "get") else None
    return bool(oracle is not None and hasattr(oracle, "get") and oracle.get("_target_"))


class RepurposeTask(Task):
    """Re-purposing a frozen classifier (see the module docstring)."""

    name = "repurpose"
    # the push-forward map is fitted after the flow: its options do not move the particles
    after_flow_options = ("pushforward",)

    def __init__(self, name: str | None = None, *, source_labels: Any = True, holdout: Any = 0,
                 pseudo_labels: dict | None = None, pushforward: dict | None = None):
        super().__init__(name)
        self.mode = source_label_mode(source_labels)
        self.holdout_option = holdout
        self.pseudo_options = dict(pseudo_labels or {})
        self.pushforward_options = dict(pushforward or {})
        self.pushforward_enabled = bool(self.pushforward_options.pop("enabled", False))
        self.true_y = None  # the TRUE labels of the particles (prepare), for evaluation only
        self.holdout = None  # LabeledData kept out of the flow, for the push-forward map
        self.pushforward = None  # the fitted push-forward map (finish)
        self._oracle = self._classifier = self._corr = self._monitor = self._before = None

    # ------------------------------------------------------------------ config
    @classmethod
    def check_config(cls, cfg) -> None:
        from dsflow.config_checks import check_number

        task = cfg.get("task")
        if task is not None:
            check_number(task, "holdout", minimum=0, example="task.holdout=0.2", prefix="task.")
        oracle = cfg.get("oracle")
        if oracle is not None and hasattr(oracle, "get") and oracle.get("matching") is not None:
            from dsflow.oracle.correspondence import MATCHINGS

            if oracle.get("matching") not in MATCHINGS:
                raise ValueError(f"oracle.matching={oracle.get('matching')!r}: choose one of {', '.join(MATCHINGS)} "
                                 "(how each flowed class is given a target class), e.g. oracle.matching=w2")

    # ------------------------------------------------------------------ hooks
    def prepare(self, run) -> TaskOutput:
        cfg, source = run.cfg, run.source
        seed = int(cfg.get("seed", 0))
        summary: dict[str, Any] = {"source_labels": self.mode}
        flow_index, hold_index = holdout_split(source.y, self.holdout_option, seed=seed)
        if hold_index.numel():
            self.holdout = source.subset(hold_index.to(source.y.device))
            source = source.subset(flow_index.to(source.y.device))
            summary.update(n=source.n, holdout_n=self.holdout.n)
        if self.pushforward_enabled:
            if self.holdout is None:
                raise ValueError("task.pushforward.enabled=true needs held-out source samples to map: set task.holdout "
                                 "to a fraction (e.g. task.holdout=0.2) or a count of samples kept out of the flow")
            self._check_pushforward(cfg, source)
        elif self.holdout is not None:
            log.warning("task.holdout=%s keeps %d source samples out of the flow, but nothing uses them "
                        "(task.pushforward.enabled=false)", self.holdout_option, self.holdout.n)
        self.true_y = source.y.detach().clone()
        if self.mode == "pseudo":
            options = self.pseudo_options
            started = time.perf_counter()
            source, info = pseudo_label_source(
                source, run.target, k=_get(options, "k"), alignment=_get(options, "alignment", "hungarian"),
                cost=_get(options, "cost", "means"), n_init=int(_get(options, "n_init", 10)), seed=seed,
                min_cluster_size=int(_get(options, "min_cluster_size", 2)))
            # the task keeps the true labels (self.true_y): the flowed data do not carry them
            source = source.with_(meta={k: v for k, v in source.meta.items() if k != "true_y"})
            info["time_s"] = time.perf_counter() - started
            summary.update(pseudo_labels=info, classes=source.num_classes)
            log.info("pseudo-labels: k=%d clusters aligned by %s (cluster accuracy under the idealised matching: "
                     "%.4f)", info["k"], info["alignment"], info["cluster_accuracy_ideal"])
        return TaskOutput(source=source, summary=summary)

    def _check_pushforward(self, cfg, flowed) -> None:
        """Before the flow: the push-forward map needs an oracle to classify the mapped held-out
        samples, and valid options (`check_pushforward_options`)."""
        from dsflow.config_checks import ConfigValueError
        from dsflow.models.pushforward import check_pushforward_options

        if not _oracle_configured(cfg):
            raise ConfigValueError(
                "task.pushforward.enabled=true maps held-out source samples for an oracle to classify, but oracle=none; "
                "pick an oracle (e.g. oracle=mlp_digits) or turn it off with task.pushforward.enabled=false "
                "task.holdout=0")
        check_pushforward_options(dict(self.pushforward_options), dim=flowed.d, image_shape=flowed.image_shape,
                                  n=flowed.n)

    def start(self, run) -> TaskOutput:
        if not _oracle_configured(run.cfg):
            return TaskOutput()
        from hydra.utils import instantiate

        from dsflow.oracle.evaluation import OracleMonitor, predict

        cfg = run.cfg.oracle
        from dsflow.models.training import show_progress

        with show_progress(bool(run.cfg.get("progress", True))):  # the run's `progress` reaches oracle training
            oracle = self._oracle = instantiate(cfg).to(run.device)
        mode = self._corr_mode = cfg.get("correspondence", "auto")
        true_y = self.true_y if self.true_y is not None else run.source.y.detach()
        true_y = self.true_y = true_y.to(run.source.y.device)
        # the correspondence maps the oracle's classes to the classes we are scored on: the TRUE
        # labels (for pseudo-labelled runs too: the flow itself never sees them)
        matching = self._matching = str(cfg.get("matching", "otdd"))
        classifier, corr = _classifier(oracle, run.source.with_(y=true_y), run.target, mode, matching)
        self._classifier, self._corr = classifier, corr
        every, steps = int(cfg.get("eval_every") or 10), int(run.cfg.steps)
        if corr is None:
            monitor = OracleMonitor(classifier, every=every, labels=true_y, final_step=steps)
        else:
            # the correspondence of the moving particles changes through the flow: recompute it at
            # every evaluation, as after the flow, so the curve ends at accuracy_after
            source, target = run.source, run.target

            def rebuild(state):
                return _classifier(oracle, source.with_(x=state.x.detach(), y=true_y), target, mode, matching)[0]

            monitor = _refreshing_monitor(classifier, rebuild, every=every, labels=true_y, final_step=steps)
        self._monitor = monitor
        before = self._before = monitor.evaluate_state(run.state, 0)
        meta = getattr(oracle, "checkpoint_meta", {}) or {}
        summary = dict(
            oracle=str(cfg.get("name", oracle.architecture)),
            oracle_checkpoint=getattr(oracle, "checkpoint_path", None),
            oracle_val_accuracy=meta.get("val_accuracy"),
            oracle_accuracy_before=before.accuracy,
            accuracy_before=before.accuracy,
            oracle_correspondence=None if corr is None else corr.class_map(),
        )
        if self.mode == "pseudo":
            from dsflow.oracle.pseudo_labels import idealized_cluster_accuracy

            raw = predict(oracle, run.source.x.detach())
            summary["accuracy_ideal_matching_before"] = idealized_cluster_accuracy(raw, true_y.cpu())[0]
        log.info("oracle accuracy before the flow: %.4f", before.accuracy)
        return TaskOutput(callbacks=[monitor], summary=summary)

    def finish(self, run) -> TaskOutput:
        if self._oracle is None:
            return TaskOutput()
        from dsflow.oracle.evaluation import evaluate, predict

        oracle, monitor, before, mode = self._oracle, self._monitor, self._before, self._corr_mode
        pseudo = self.mode == "pseudo"
        flowed, true_y = run.flowed, self.true_y.to(run.flowed.y.device)
        classifier_after, corr_after = self._classifier, self._corr
        if self._corr is not None:
            classifier_after, corr_after = _classifier(oracle, flowed.with_(y=true_y), run.target, mode,
                                                       self._matching)
        ev = evaluate(classifier_after, flowed.x, true_y.to(flowed.x.device))
        result = getattr(run, "result", None)
        summary: dict[str, Any] = dict(
            oracle_accuracy_after=ev.accuracy,
            accuracy_after=ev.accuracy,
            oracle_per_class_accuracy_after={str(k): v for k, v in ev.per_class_accuracy.items()},
            oracle_accuracy_history=_accuracy_history(monitor, result),
        )
        if corr_after is not None:
            summary["oracle_correspondence_after"] = corr_after.class_map()
        if pseudo:
            from dsflow.oracle.pseudo_labels import idealized_cluster_accuracy

            # IDEALISED (paper appendix C): the oracle's predicted classes matched one-to-one to
            # the TRUE labels by the Hungarian algorithm on the confusion matrix
            raw = predict(oracle, flowed.x.detach())
            summary["accuracy_ideal_matching"] = idealized_cluster_accuracy(raw, true_y.cpu())[0]
        final_step = getattr(getattr(result, "state", None), "step", None)
        if final_step is None:
            final_step = run.summary.get("steps_done") or 0
        monitor.set_final_objective(run.summary.get("objective_after"), int(final_step))
        figures: dict[str, Any] = {}
        if self.pushforward_enabled:
            summary.update(self._pushforward_report(run, classifier_after, figures))
        log.info("oracle accuracy after the flow: %.4f (before: %.4f)", ev.accuracy, before.accuracy)
        table = {**run.summary, **summary}
        text = (f"{run.source.name} -> {run.target.name}, oracle {run.summary.get('oracle')}, source labels: "
                f"{self.mode}\n{format_table(table)}")
        figures.update(self._figures(run, ev, corr_after, table))
        return TaskOutput(summary=summary, figures=figures, text=text)

    def _figures(self, run, ev, corr_after, summary) -> dict:
        """Confusion matrices before/after, accuracy curve (fig. 6), objective vs accuracy (fig. 11),
        ``repurposing.png``: drawing functions, called by the app with each figure's path."""
        from dsflow.plotting.oracle import plot_accuracy_curve, plot_confusion_matrix, plot_objective_vs_accuracy

        pseudo, monitor, source, target = self.mode == "pseudo", self._monitor, run.source, run.target
        # both axes in the source's label values (a composed classifier maps the oracle's
        # classes to them), with the same names, so the diagonal is the correct cells;
        # pseudo-labelled sources carry the target's names, so their true labels show as values
        names = None if pseudo else {c: source.class_name(c) for c in ev.true_classes}
        figures: dict[str, Any] = {}

        def confusion(evaluation, mapping, when):
            return lambda path: plot_confusion_matrix(
                evaluation, names=names, pred_origin=_oracle_origin(mapping),
                title=f"{when} the flow: accuracy {evaluation.accuracy:.3f}",
                xlabel="predicted class" + (" (oracle class, mapped by the class correspondence)"
                                            if mapping is not None else " (oracle)"),
                ylabel="true source class", path=path)

        figures["oracle_confusion_before"] = confusion(self._before, self._corr, "before")
        figures["oracle_confusion"] = confusion(ev, corr_after, "after")
        figures["oracle_accuracy"] = lambda path: plot_accuracy_curve(monitor.history, path=path)
        if any(o is not None for o in monitor.history["objective"]):
            label = getattr(getattr(run, "objective", None), "label", "objective")
            figures["oracle_objective_vs_accuracy"] = lambda path: plot_objective_vs_accuracy(
                monitor.history, xlabel=label, path=path)
        title = f"{source.name} -> {target.name} ({'pseudo' if pseudo else 'true'} labels)"
        figures["repurposing"] = lambda path: plot_repurposing(summary, monitor.history, path, title=title)
        return figures

    def _pushforward_report(self, run, classifier, figures) -> dict:
        """Fit ``h: x_0 -> x_T`` on the flowed particles and apply it to the held-out source.

        Returns ``pushforward_val_mse`` (fit error on held-out particles),
        ``pushforward_identity_val_mse`` (error of not moving), ``accuracy_pushforward``
        (held-out samples mapped by ``h``) and ``accuracy_holdout_unmapped`` (the same samples
        as they are); adds ``pushforward_samples`` to ``figures`` for image data."""
        from dsflow.models.evaluation import accuracy
        from dsflow.models.pushforward import fit_pushforward

        options = dict(self.pushforward_options)
        started = time.perf_counter()
        x0, xT = run.source.x.detach(), run.flowed.x.detach()
        pf = self.pushforward = fit_pushforward(x0, xT, image_shape=run.source.image_shape, device=run.device,
                                                seed=int(options.pop("seed", run.cfg.get("seed", 0))),
                                                progress=bool(run.cfg.get("progress", True)), **options)
        holdout = self.holdout
        mapped = pf(holdout.x.detach())
        y = holdout.y.detach().cpu()
        out: dict[str, Any] = {
            "pushforward_val_mse": pf.val_mse,
            "pushforward_identity_val_mse": pf.identity_val_mse,
            "pushforward_best_restart": pf.best_restart,
            "pushforward_time_s": time.perf_counter() - started,
            "accuracy_pushforward": accuracy(classifier, mapped, y),
            "accuracy_holdout_unmapped": accuracy(classifier, holdout.x.detach(), y),
        }
        if run.source.is_image:
            from dsflow.plotting.oracle import plot_pushforward_samples

            n, shape = min(8, holdout.n), run.source.image_shape
            # top rows: particles and their flowed / mapped versions; the bottom row of the
            # second figure would need flowed held-out samples, which do not exist by design
            figures["pushforward_samples"] = lambda path: plot_pushforward_samples(
                x0[:n], xT[:n], pf(x0[:n]), shape, n=n, path=path)
        return out

    # ------------------------------------------------------------------ report
    @classmethod
    def tables(cls, runs) -> dict[str, str]:
        out = {}
        text = table1(runs)
        if text:
            out["table1"] = "# Table 1 (Alvarez-Melis & Fusi 2021 layout)\n\n" + text
        families = families_table(runs)
        if families:
            out["families"] = families
        return out

    @classmethod
    def figures(cls, runs) -> dict:
        if len({run_family(r) for r in runs if r.status == "ok"}) < 2:
            return {}
        return {"families_accuracy_vs_time": lambda path: plot_families(runs, path)}


def run_family(r) -> str:
    """The flow family of a run: the ``family`` config group it chose (`configs/family`), else
    its functional's class (``OTDD``, ``MMDSW``, ...)."""
    return str(r.choices.get("family") or r.summary.get("functional") or "?")


def _mean_std(values) -> str:
    vals = [v for v in (_to_number(x) for x in values) if v is not None]
    if not vals:
        return ""
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.4g}"
    std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5  # sample std (n - 1)
    return f"{mean:.4g} ± {std:.2g}"


FAMILY_COLUMNS = (("accuracy (%)", "accuracy_after", 100.0), ("final objective", "objective_after", 1.0),
                  ("wall time (s)", "wall_time_s", 1.0), ("flow time (s)", "flow_time_s", 1.0),
                  ("time per step (s)", "time_per_step_s", 1.0), ("steps", "steps_done", 1.0))


def families_table(runs) -> str | None:
    """Flow families compared on one task (``dsflow -m +experiment=otdd_vs_wow``): one row per
    family and setting (the swept keys other than the family and the seed), mean ± std over
    the seeds, or None when the runs are of one family."""
    ok = [r for r in runs if r.status == "ok"]
    if len({run_family(r) for r in ok}) < 2:
        return None
    ignore = {"seed", "family", "+family"}
    # the settings that tell rows apart: swept keys whose value differs between runs
    keys = {k for r in ok for k in r.overrides if k not in ignore}
    settings = sorted(k for k in keys if len({str(r.overrides.get(k, "")) for r in ok}) > 1)
    groups: dict[tuple, list] = {}
    for r in ok:
        key = (run_family(r), *(str(r.overrides.get(k, "")) for k in settings))
        groups.setdefault(key, []).append(r)
    header = ["family", *settings, "runs", *(name for name, _, _ in FAMILY_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for key in sorted(groups):
        rs = groups[key]
        cells = [_mean_std([None if r.summary.get(m) is None else scale * float(r.summary[m]) for r in rs])
                 for _, m, scale in FAMILY_COLUMNS]
        lines.append("| " + " | ".join([*key, str(len(rs)), *cells]) + " |")
    note = ("\nFrozen-classifier accuracy on the flowed particles; mean ± sample std over the runs of a row "
            "(seeds). Wall time: the whole run (data, oracle, flow, evaluation); flow time: the particle "
            "steps alone; time per step = flow time / steps. The objectives are each family's own "
            "(OTDD² or ½MMD²): compare them within a family only.\n")
    return "# Flow families on one task\n\n" + "\n".join(lines) + "\n" + note


def _accuracy_against_time(r):
    """``[(wall s, flow s, accuracy)]`` through a run: ``(0 flow s, accuracy_before)`` first, then
    its metrics.jsonl rows that carry an accuracy (``wall_time``: since the run started;
    ``time``: the engine's cumulative step time)."""
    import json

    points = []
    before = _to_number(r.summary.get("accuracy_before"))
    path = r.path / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    timed = [row for row in rows if row.get("wall_time") is not None]
    rows = [row for row in timed if row.get("accuracy") is not None]
    if before is not None and timed:
        first = timed[0]  # the flow started one step (its step_time) before its first row
        points.append((float(first["wall_time"]) - float(first.get("step_time") or 0.0), 0.0, before))
    points += [(float(row["wall_time"]), float(row.get("time") or 0.0), float(row["accuracy"])) for row in rows]
    return points


def plot_families(runs, path):
    """Accuracy of the frozen classifier through each run against wall time (since the run
    started: data, oracle, flow) and against flow time (the particle steps alone), one line per
    run, one colour per family (the figure of ``otdd_vs_wow``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    families = sorted({run_family(r) for r in runs if r.status == "ok"})
    colours = {f: plt.get_cmap("tab10")(i) for i, f in enumerate(families)}
    seen = set()
    for r in sorted((r for r in runs if r.status == "ok"), key=lambda r: str(r.path)):
        pts = _accuracy_against_time(r)
        if not pts:
            continue
        fam = run_family(r)
        wall, flow, acc = zip(*pts)
        for ax, t in zip(axes, (wall, flow)):
            ax.plot(t, [100 * v for v in acc], "-o", ms=3, color=colours[fam], alpha=0.8,
                    label=None if fam in seen else fam)
        seen.add(fam)
    axes[0].set_xlabel("wall time since the run started (s)")
    axes[1].set_xlabel("flow time: the particle steps alone (s)")
    axes[0].set_ylabel("frozen-classifier accuracy on the particles (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(title="family")
    fig.suptitle("Flow families on one task: accuracy through the flow")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _to_number(value):
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def table1(runs) -> str | None:
    """The paper's Table 1 layout over re-purposing runs, or None if none finished.

    A cell holds the best ``accuracy_after`` over the settings with that source dataset and
    label mode (``task.source_labels=true`` -> supervised, ``pseudo`` -> unsupervised); the
    row "before" is the mean ``accuracy_before``.  When the runs repeat settings over seeds
    (``seed`` or ``*.seed`` overrides, `dsflow.report.aggregate`), a setting's score is its
    mean over the seeds, and the cell shows ``mean ± std`` of the best setting (std over
    seeds, n - 1; "before": over the seeds' values).  Accuracies are shown in percent; the
    paper's numbers are given for the *NIST sources it reports.
    """
    from dsflow.report import aggregate, seed_keys

    by_cell: dict[str, dict[str, list]] = {}
    for r in runs:
        if r.status != "ok":
            continue
        source = r.choices.get("dataset@source") or r.summary.get("source")
        if isinstance(source, dict):
            source = source.get("name")
        if source is None:
            continue
        mode = str(r.summary.get("source_labels", r.overrides.get("task.source_labels", "true"))).lower()
        by_cell.setdefault(str(source), {}).setdefault("unsupervised" if mode == "pseudo" else "supervised", []).append(r)
    metrics = ("accuracy_before", "accuracy_after", "accuracy_ideal_matching")
    cells: dict[str, dict[str, str]] = {}
    for source, modes in by_cell.items():
        c: dict[str, str] = {}
        pairs = [(row, "accuracy_after") for row in modes]
        if "unsupervised" in modes:  # the paper's protocol: clusters matched to the true labels
            pairs.append(("unsupervised_ideal", "accuracy_ideal_matching"))
        for key, metric in pairs:
            groups = [g for g in aggregate(modes["unsupervised" if key == "unsupervised_ideal" else key],
                                           metrics=metrics) if g.count(metric)]
            if groups:
                c[key] = max(groups, key=lambda g: g.mean(metric)).cell(metric, digits=1)
        every = [r for rs in modes.values() for r in rs]
        seeds = seed_keys(every)
        before: dict[Any, list[float]] = {}  # a seed's runs share the data: one value per seed
        for r in every:
            v = _to_number(r.summary.get("accuracy_before"))
            if v is not None:
                key = tuple(r.overrides.get(k) for k in seeds) if seeds else str(r.path)
                before.setdefault(key, []).append(v)
        if before:
            from dsflow.report import Aggregate

            per_seed = [sum(v) / len(v) for v in before.values()]
            agg = Aggregate(settings={}, values={"accuracy_before": per_seed})
            c["before"] = agg.cell("accuracy_before", digits=1) if seeds else f"{100 * sum(per_seed) / len(per_seed):.1f}"
        if c:
            cells[source] = c
    if not cells:
        return None
    datasets = sorted(cells, key=lambda s: (list(PAPER_TABLE1).index(s) if s in PAPER_TABLE1 else 99, s))
    header = ["", *[f"{d} (ours)" for d in datasets], *[f"{d} (paper)" for d in datasets if d in PAPER_TABLE1]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    labels = {
        "before": "Original (before flow)",
        "supervised": "Flowed (supervised)",
        "unsupervised": "Flowed (unsupervised, clusters aligned without labels)",
        "unsupervised_ideal": "Flowed (unsupervised, idealised matching as in the paper)",
    }
    for key, label in labels.items():
        ours = []
        for d in datasets:
            ours.append(cells[d].get(key, ""))
        paper_key = "unsupervised" if key == "unsupervised_ideal" else key
        paper = [
            ("" if key == "unsupervised" else f"{PAPER_TABLE1[d][paper_key]:g}")
            for d in datasets if d in PAPER_TABLE1
        ]
        lines.append("| " + " | ".join([label, *ours, *paper]) + " |")
    note = (
        "\nAccuracy (%) of the frozen oracle. Flowed cells: best setting of the sweep for that source "
        "dataset (with seeds: mean ± std over the seeds of the setting with the best mean); 'before': "
        "mean over runs (± std over seeds). The paper's unsupervised row permutes the pseudo-labels "
        "to match the true labels (its appendix C), i.e. our 'idealised matching' row; the row "
        "above it is the bona-fide number (clusters aligned to the target without true labels).\n"
    )
    return "\n".join(lines) + "\n" + note


def plot_repurposing(summary: dict, history: dict | None, path, title: str = ""):
    """One figure for a re-purposing run: accuracy bars (before / after / push-forward /
    idealised) and, when recorded, the accuracy through the flow."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    bars = [(label, summary.get(key)) for label, key in (
        ("before", "accuracy_before"), ("after", "accuracy_after"),
        ("push-forward\n(held-out)", "accuracy_pushforward"), ("idealised\nmatching", "accuracy_ideal_matching"))]
    bars = [(label, float(v)) for label, v in bars if isinstance(v, (int, float))]
    has_curve = bool(history and history.get("step"))
    fig, axes = plt.subplots(1, 2 if has_curve else 1, figsize=(9 if has_curve else 4.5, 3.4), squeeze=False)
    ax = axes[0, 0]
    ax.bar(range(len(bars)), [v for _, v in bars], color=["#999999", "#1f77b4", "#2ca02c", "#d62728"][: len(bars)])
    ax.set_xticks(range(len(bars)), [label for label, _ in bars], fontsize=8)
    for i, (_, v) in enumerate(bars):
        ax.text(i, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("oracle accuracy")
    ax.set_title(title or "re-purposing", fontsize=9)
    if has_curve:
        ax = axes[0, 1]
        ax.plot(history["step"], history["accuracy"], marker="o", ms=3)
        ax.set_xlabel("flow step")
        ax.set_ylabel("oracle accuracy")
        ax.set_ylim(0, 1.05)
        ax.set_title("accuracy through the flow", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_table(summary: dict) -> str:
    """A short text table of a re-purposing run's accuracies (printed at the end of a run)."""
    rows = [
        ("before the flow", "accuracy_before"),
        ("after the flow", "accuracy_after"),
        ("push-forward, held-out", "accuracy_pushforward"),
        ("held-out, not mapped", "accuracy_holdout_unmapped"),
        ("idealised matching*", "accuracy_ideal_matching"),
    ]
    lines = [f"{'oracle accuracy':<26}{'value':>8}"]
    lines += [f"  {label:<24}{summary[key]:>8.4f}" for label, key in rows if isinstance(summary.get(key), (int, float))]
    if "accuracy_ideal_matching" in summary:
        lines.append("  * paper's appendix-C protocol: predictions matched to TRUE labels (upper bound)")
    return "\n".join(lines)
