"""The re-purposing pipeline around a flow (paper sections 6.3, 7.2, 7.3; project issue 5).

App stage `stage_prepare_source` runs after the data are loaded and *before* the particles
are built, because it changes what the flow sees:

1. ``holdout`` (fraction in ``(0, 1)`` or a count >= 1; 0 = off): a seeded, stratified part
   of the source (by its true labels) is kept out of the flow.  The push-forward map fitted
   on the flowed particles is judged on it (`pushforward_report`).
2. ``source_labels``: ``true`` (supervised flow: the source's labels drive the flow) or
   ``pseudo`` (unsupervised flow, paper 6.3): k-means pseudo-labels on the data to be flowed
   (``pseudo_labels.k``, default the number of target classes) are aligned to the target's
   classes WITHOUT true labels (``pseudo_labels.alignment: hungarian | ot`` on the label
   cost ``pseudo_labels.cost: means | gaussian | otdd``) and replace the labels the flow
   uses.  ``alignment: ideal`` is the paper's appendix-C protocol instead (clusters matched
   to the TRUE labels; an upper bound, not an unsupervised method).

The true labels are kept (``ctx.source_true_y``, ``ctx.source.meta["true_y"]``) and used
only for evaluation.  The oracle stage (`dsflow.oracle.stage`) reads them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

SOURCE_LABEL_MODES = ("true", "pseudo")
ALIGNMENTS = ("hungarian", "ot", "ideal")
ALIGNMENT_COSTS = ("means", "gaussian", "otdd")


def _get(node, key, default=None):
    if node is None:
        return default
    value = node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)
    return default if value is None else value


def source_label_mode(value) -> str:
    """``source_labels`` as ``"true"`` or ``"pseudo"`` (booleans / strings accepted)."""
    if value is None or value is True:
        return "true"
    text = str(value).strip().lower()
    if text in ("true", "supervised"):
        return "true"
    if text in ("pseudo", "unsupervised"):
        return "pseudo"
    raise ValueError(
        f"source_labels={value!r} is not valid; use source_labels=true (the source's own labels drive the "
        "flow) or source_labels=pseudo (k-means pseudo-labels aligned to the target's classes)"
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
        raise ValueError(f"holdout={holdout!r} must be a fraction in [0, 1) or a number of samples") from None
    if amount < 0 or (amount >= 1 and amount != int(amount)):
        raise ValueError(f"holdout={holdout!r} must be a fraction in [0, 1) or a whole number of samples >= 1")
    fraction = amount if amount < 1 else amount / max(n, 1)
    if fraction >= 1:
        raise ValueError(f"holdout={holdout!r} keeps every one of the {n} source samples out of the flow; "
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
        raise ValueError(f"pseudo_labels.alignment={alignment!r}; use one of {', '.join(ALIGNMENTS)}")
    if cost not in ALIGNMENT_COSTS:
        raise ValueError(f"pseudo_labels.cost={cost!r}; use one of {', '.join(ALIGNMENT_COSTS)}")
    k = int(k) if k else target.num_classes
    if k > source.n:
        raise ValueError(f"pseudo_labels.k={k} clusters but only {source.n} source samples are flowed; "
                         "lower pseudo_labels.k or use more samples")
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
                         "lower pseudo_labels.k or flow more samples")
    kept_ids = torch.nonzero(keep).flatten()
    moving = small[clusters]
    nearest = torch.cdist(x[moving].double(), centers[kept_ids].double()).argmin(1)
    clusters = clusters.clone()
    clusters[moving] = kept_ids[nearest]
    return clusters, torch.nonzero(small).flatten().tolist()


def check_pushforward_config(cfg, flowed) -> None:
    """Before the flow: ``pushforward.enabled=true`` needs an oracle to classify the mapped
    held-out samples, and valid ``pushforward.*`` options (`check_pushforward_options`);
    ``flowed`` is the part of the source that flows."""
    from omegaconf import OmegaConf

    from dsflow.config_checks import ConfigValueError
    from dsflow.models.pushforward import check_pushforward_options

    oracle = cfg.get("oracle") or {}
    if not (oracle.get("stage") if hasattr(oracle, "get") else None):
        raise ConfigValueError(
            "pushforward.enabled=true maps held-out source samples for an oracle to classify, but oracle=none; "
            "pick an oracle (e.g. oracle=mlp_digits) or turn it off with pushforward.enabled=false holdout=0"
        )
    pf_cfg = cfg.get("pushforward") or {}
    options = OmegaConf.to_container(pf_cfg, resolve=True) if OmegaConf.is_config(pf_cfg) else dict(pf_cfg)
    options.pop("enabled", None)
    check_pushforward_options(options, dim=flowed.d, image_shape=flowed.image_shape, n=flowed.n)


def stage_prepare_source(ctx) -> None:
    """App stage between ``load_data`` and ``build``: hold-out split and pseudo-labels (see module doc)."""
    cfg = ctx.cfg
    mode = source_label_mode(cfg.get("source_labels", True))
    source = ctx.source
    ctx.summary["source_labels"] = mode

    flow_index, hold_index = holdout_split(source.y, cfg.get("holdout", 0), seed=int(cfg.get("seed", 0)))
    ctx.holdout = None
    if hold_index.numel():
        ctx.holdout = source.subset(hold_index.to(source.y.device))
        source = source.subset(flow_index.to(source.y.device))
        ctx.summary.update(n=source.n, holdout_n=ctx.holdout.n)
    pf_cfg = cfg.get("pushforward") or {}
    if bool(_get(pf_cfg, "enabled", False)):
        if ctx.holdout is None:
            raise ValueError("pushforward.enabled=true needs held-out source samples to map: set holdout to a "
                             "fraction (e.g. holdout=0.2) or a count of samples kept out of the flow")
        check_pushforward_config(cfg, source)
    elif ctx.holdout is not None:
        log.warning("holdout=%s keeps %d source samples out of the flow, but nothing uses them "
                    "(pushforward.enabled=false)", cfg.get("holdout"), ctx.holdout.n)

    ctx.source_true_y = source.y.detach().clone()
    if mode == "pseudo":
        options = cfg.get("pseudo_labels") or {}
        started = time.perf_counter()
        source, info = pseudo_label_source(
            source, ctx.target, k=_get(options, "k"), alignment=_get(options, "alignment", "hungarian"),
            cost=_get(options, "cost", "means"), n_init=int(_get(options, "n_init", 10)),
            seed=int(cfg.get("seed", 0)), min_cluster_size=int(_get(options, "min_cluster_size", 2)),
        )
        info["time_s"] = time.perf_counter() - started
        ctx.summary["pseudo_labels"] = info
        ctx.summary["classes"] = source.num_classes
        log.info("pseudo-labels: k=%d clusters aligned by %s (cluster accuracy under the idealised matching: %.4f)",
                 info["k"], info["alignment"], info["cluster_accuracy_ideal"])
    else:
        source = source.with_(meta={**source.meta, "true_y": ctx.source_true_y})
    ctx.source = source


def pushforward_report(ctx, classifier=None) -> dict:
    """Fit ``h: x_0 -> x_T`` on the flowed particles and apply it to the held-out source.

    Returns (and puts in ``ctx.summary``) ``pushforward_val_mse`` (fit error on held-out
    particles), ``pushforward_identity_val_mse`` (error of not moving), and with a
    classifier ``accuracy_pushforward`` (held-out samples mapped by ``h``) and
    ``accuracy_holdout_unmapped`` (the same samples as they are).
    """
    from omegaconf import OmegaConf

    from dsflow.oracle.evaluation import accuracy
    from dsflow.models.pushforward import fit_pushforward

    pf_cfg = ctx.cfg.get("pushforward") or {}
    options = OmegaConf.to_container(pf_cfg, resolve=True) if OmegaConf.is_config(pf_cfg) else dict(pf_cfg)
    options.pop("enabled", None)
    started = time.perf_counter()
    x0, xT = ctx.source.x.detach(), ctx.flowed.x.detach()
    pf = fit_pushforward(x0, xT, image_shape=ctx.source.image_shape, device=ctx.device,
                         seed=int(options.pop("seed", ctx.cfg.get("seed", 0))), **options)
    holdout = ctx.holdout
    mapped = pf(holdout.x.detach())
    out: dict[str, Any] = {
        "pushforward_val_mse": pf.val_mse,
        "pushforward_identity_val_mse": pf.identity_val_mse,
        "pushforward_best_restart": pf.best_restart,
        "pushforward_time_s": time.perf_counter() - started,
    }
    if classifier is not None:
        y = holdout.y.detach().cpu()
        out["accuracy_pushforward"] = accuracy(classifier, mapped, y)
        out["accuracy_holdout_unmapped"] = accuracy(classifier, holdout.x.detach(), y)
    ctx.summary.update(out)
    ctx.pushforward = pf
    if ctx.cfg.get("plot", True) and ctx.source.is_image:
        from dsflow.plotting.oracle import plot_pushforward_samples

        path = ctx.run_dir / "pushforward_samples.png"
        n = min(8, holdout.n)
        # top rows: particles and their flowed / mapped versions; the bottom row of the
        # second figure would need flowed held-out samples, which do not exist by design
        plot_pushforward_samples(x0[:n], xT[:n], pf(x0[:n]), ctx.source.image_shape, n=n, path=path)
        ctx.images["pushforward_samples"] = path
    return out


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
