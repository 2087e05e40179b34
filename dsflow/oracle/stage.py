"""App extension stage for oracle configs (``oracle.stage: dsflow.oracle.stage.oracle_stage``).

Runs between building the particles and the flow (see `dsflow.app`):

1. builds the frozen oracle from ``cfg.oracle`` (`get_oracle`: checkpoint, cache or training);
2. when the source's label set differs from the oracle's (``correspondence: auto``) or
   when asked (``true``), composes it with a class-correspondence layer computed from the
   OTDD label distances between the source and the flow's target (paper section 6.4);
3. evaluates the oracle on the source before the flow and appends an `OracleMonitor`
   (every ``eval_every`` steps; with a correspondence, recomputed on the particles at each
   evaluation) to the flow callbacks, so ``accuracy`` lands in ``metrics.jsonl``;
4. after the flow: evaluates on the flowed data (recomputing the correspondence on the
   flowed particles), writes ``accuracy_before/after`` (and ``oracle_*`` details) to the
   summary; pseudo-labelled runs also get ``accuracy_ideal_matching`` (IDEALISED: the raw
   predictions matched to the true labels, paper appendix C); with ``pushforward.enabled``
   fits the push-forward map and reports ``accuracy_pushforward`` on the held-out source
   (`dsflow.oracle.pipeline.pushforward_report`); logs a short table and draws confusion
   matrices before/after, the accuracy curve (fig. 6), objective vs accuracy (fig. 11) and
   ``repurposing.png``.

True labels are the source's TRUE labels (``ctx.source_true_y``; differ from the flow's
labels ``ctx.source.y`` with ``source_labels=pseudo``), one per particle.
"""

from __future__ import annotations

import logging

# this module is loaded only when a run uses an oracle (Hydra `oracle.stage`), so torch is fine here
from dsflow.oracle.evaluation import OracleMonitor

log = logging.getLogger(__name__)


def _needs_correspondence(mode, source_classes, oracle_classes) -> bool:
    import torch

    same = source_classes.numel() == oracle_classes.numel() and bool(torch.equal(source_classes, oracle_classes))
    if isinstance(mode, str):
        if mode != "auto":
            raise ValueError(f"oracle.correspondence must be auto, true or false; got {mode!r}")
        return not same
    return bool(mode)


def _classifier(oracle, source, target, mode):
    from dsflow.oracle.correspondence import ComposedClassifier, correspondence_from_data

    sc, oc = source.classes, oracle.classes.detach().cpu()
    if not _needs_correspondence(mode, sc, oc):
        return oracle, None
    tc = target.classes
    if not (tc.numel() == oc.numel() and bool((tc == oc).all())):
        raise ValueError(
            f"oracle: the class correspondence needs the flow target's classes {tc.tolist()} to equal the oracle's "
            f"{oc.tolist()} (label distances are computed between source and target)"
        )
    corr = correspondence_from_data(source.detach(), target.detach()).to(oracle.classes.device)
    return ComposedClassifier(oracle, corr), corr


class _RefreshingMonitor(OracleMonitor):
    """`OracleMonitor` whose classifier is rebuilt from the particles before each evaluation
    (the class correspondence of moving particles changes through the flow)."""

    def __init__(self, classifier, rebuild, **options):
        super().__init__(classifier, **options)
        self.rebuild = rebuild

    def evaluate_state(self, state, step, record=None):
        self.oracle = self.rebuild(state)
        return super().evaluate_state(state, step, record)


def _true_labels(ctx):
    """The source's TRUE labels (pseudo-labelled runs keep them apart from the flow's labels)."""
    true_y = getattr(ctx, "source_true_y", None)
    if true_y is None:
        true_y = ctx.source.meta.get("true_y") if isinstance(ctx.source.meta, dict) else None
    return (ctx.source.y if true_y is None else true_y).detach()


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


def oracle_stage(ctx) -> None:
    """The extension stage: see the module docstring."""
    import time

    from hydra.utils import instantiate

    from dsflow.oracle.evaluation import evaluate, predict
    from dsflow.oracle.pipeline import format_table, plot_repurposing, pushforward_report, source_label_mode

    cfg = ctx.cfg.oracle
    oracle = instantiate(cfg).to(ctx.device)
    mode = cfg.get("correspondence", "auto")
    pseudo = source_label_mode(ctx.cfg.get("source_labels", True)) == "pseudo"
    true_y = _true_labels(ctx).to(ctx.source.y.device)
    # the correspondence maps the oracle's classes to the classes we are scored on: the TRUE
    # labels (for pseudo-labelled runs too: the flow itself never sees them)
    labelled_source = ctx.source.with_(y=true_y)
    classifier, corr = _classifier(oracle, labelled_source, ctx.target, mode)
    every = int(cfg.get("eval_every") or 10)
    if corr is None:
        monitor = OracleMonitor(classifier, every=every, labels=true_y, final_step=int(ctx.cfg.steps))
    else:
        # the correspondence of the moving particles changes through the flow: recompute it at
        # every evaluation, as after the flow, so the curve ends at accuracy_after
        def rebuild(state):
            particles = ctx.source.with_(x=state.x.detach(), y=true_y)
            return _classifier(oracle, particles, ctx.target, mode)[0]

        monitor = _RefreshingMonitor(classifier, rebuild, every=every, labels=true_y, final_step=int(ctx.cfg.steps))
    before = monitor.evaluate_state(ctx.state, 0)
    ctx.callbacks.append(monitor)
    meta = getattr(oracle, "checkpoint_meta", {}) or {}
    ctx.summary.update(
        oracle=str(cfg.get("name", oracle.architecture)),
        oracle_checkpoint=getattr(oracle, "checkpoint_path", None),
        oracle_val_accuracy=meta.get("val_accuracy"),
        oracle_accuracy_before=before.accuracy,
        accuracy_before=before.accuracy,
        oracle_correspondence=None if corr is None else corr.class_map(),
    )
    if pseudo:
        from dsflow.oracle.pseudo_labels import idealized_cluster_accuracy

        raw = predict(oracle, ctx.source.x.detach())
        ctx.summary["accuracy_ideal_matching_before"] = idealized_cluster_accuracy(raw, true_y.cpu())[0]
    log.info("oracle accuracy before the flow: %.4f", before.accuracy)

    def after(ctx) -> None:
        flowed = ctx.flowed
        labelled_flowed = flowed.with_(y=true_y.to(flowed.y.device))
        classifier_after, corr_after = (classifier, corr)
        if corr is not None:
            classifier_after, corr_after = _classifier(oracle, labelled_flowed, ctx.target, mode)
        ev = evaluate(classifier_after, flowed.x, true_y.to(flowed.x.device))
        ctx.summary.update(
            oracle_accuracy_after=ev.accuracy,
            accuracy_after=ev.accuracy,
            oracle_per_class_accuracy_after={str(k): v for k, v in ev.per_class_accuracy.items()},
            oracle_accuracy_history=_accuracy_history(monitor, getattr(ctx, "result", None)),
        )
        if corr_after is not None:
            ctx.summary["oracle_correspondence_after"] = corr_after.class_map()
        if pseudo:
            from dsflow.oracle.pseudo_labels import idealized_cluster_accuracy

            # IDEALISED (paper appendix C): the oracle's predicted classes matched one-to-one to
            # the TRUE labels by the Hungarian algorithm on the confusion matrix
            raw = predict(oracle, flowed.x.detach())
            ctx.summary["accuracy_ideal_matching"] = idealized_cluster_accuracy(raw, true_y.cpu())[0]
        final_step = getattr(getattr(getattr(ctx, "result", None), "state", None), "step", None)
        if final_step is None:
            final_step = ctx.summary.get("steps_done") or 0
        monitor.set_final_objective(ctx.summary.get("objective_after"), int(final_step))
        pf_cfg = ctx.cfg.get("pushforward") or {}
        if bool(pf_cfg.get("enabled", False)):
            pushforward_report(ctx, classifier_after)
        if getattr(ctx, "started", None) is not None:  # the app overwrites it with the final wall time
            ctx.summary["wall_time"] = time.perf_counter() - ctx.started
        log.info("oracle accuracy after the flow: %.4f (before: %.4f)", ev.accuracy, before.accuracy)
        log.info("%s -> %s, oracle %s, source labels: %s\n%s", ctx.source.name, ctx.target.name,
                 ctx.summary["oracle"], "pseudo" if pseudo else "true", format_table(ctx.summary))
        if ctx.cfg.get("plot", True):
            from dsflow.plotting.oracle import plot_accuracy_curve, plot_confusion_matrix, plot_objective_vs_accuracy

            out = ctx.run_dir
            # both axes in the source's label values (a composed classifier maps the oracle's
            # classes to them), with the same names, so the diagonal is the correct cells;
            # pseudo-labelled sources carry the target's names, so their true labels show as values
            names = None if pseudo else {c: ctx.source.class_name(c) for c in ev.true_classes}
            for key, evaluation, mapping, when in (("oracle_confusion_before", before, corr, "before"),
                                                   ("oracle_confusion", ev, corr_after, "after")):
                ctx.images[key] = out / f"{key}.png"
                plot_confusion_matrix(evaluation, names=names, pred_origin=_oracle_origin(mapping),
                                      title=f"{when} the flow: accuracy {evaluation.accuracy:.3f}",
                                      xlabel="predicted class" + (" (oracle class, mapped by the class correspondence)"
                                                                  if mapping is not None else " (oracle)"),
                                      ylabel="true source class", path=ctx.images[key])
            ctx.images["oracle_accuracy"] = out / "oracle_accuracy.png"
            plot_accuracy_curve(monitor.history, path=ctx.images["oracle_accuracy"])
            if any(o is not None for o in monitor.history["objective"]):
                ctx.images["oracle_objective_vs_accuracy"] = out / "oracle_objective_vs_accuracy.png"
                plot_objective_vs_accuracy(monitor.history, xlabel=getattr(getattr(ctx, "objective", None), "label", "objective"),
                                           path=ctx.images["oracle_objective_vs_accuracy"])
            ctx.images["repurposing"] = plot_repurposing(
                ctx.summary, monitor.history, out / "repurposing.png",
                title=f"{ctx.source.name} -> {ctx.target.name} ({'pseudo' if pseudo else 'true'} labels)")

    ctx.after_flow.append(after)
