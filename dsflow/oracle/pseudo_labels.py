"""Pseudo-labels for unlabeled data (paper section 6.3, Table 1 "unsupervised").

1. `kmeans_pseudo_labels`: k-means (scikit-learn, seeded, ``n_init`` restarts) on the
   data to be flowed; cluster ids are the pseudo-labels.
2. `align_clusters`: give every cluster a class of the target/oracle *without true
   labels*, by comparing pseudo-labelled source classes with target classes through a
   label-to-label cost (class means, Gaussian/Bures, the OTDD's label distances, or a
   matrix you pass) and solving an assignment (Hungarian) or an OT problem.
3. `idealized_cluster_accuracy`: **the paper's idealised protocol** (appendix C: "we
   permute the values of the pseudo-labels ... to match them to the indices of the target
   labels so as to allow accuracy computation"): clusters are matched to the *true*
   labels by the Hungarian algorithm on the confusion matrix.  It uses true labels, so
   it is an upper bound for reporting, not an unsupervised method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dsflow.data.container import LabeledData


@dataclass
class PseudoLabels:
    labels: Any  # (n,) int64 cluster ids 0..k-1
    centers: Any  # (k, d)
    inertia: float


def kmeans_pseudo_labels(x, k: int, *, seed: int = 0, n_init: int = 10, max_iter: int = 300) -> PseudoLabels:
    """Cluster rows of ``x`` into ``k`` groups with scikit-learn's KMeans (seeded)."""
    from sklearn.cluster import KMeans

    x = x.x if isinstance(x, LabeledData) else x
    x = torch.as_tensor(x).detach()
    if x.ndim != 2:
        raise ValueError(f"kmeans_pseudo_labels: x must be (n, d), got shape {tuple(x.shape)}")
    k = int(k)
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"kmeans_pseudo_labels: k must be between 1 and n={x.shape[0]}, got {k}")
    km = KMeans(n_clusters=k, n_init=int(n_init), max_iter=int(max_iter), random_state=int(seed))
    labels = km.fit_predict(x.cpu().double().numpy())
    return PseudoLabels(
        labels=torch.as_tensor(labels, dtype=torch.long),
        centers=torch.as_tensor(km.cluster_centers_, dtype=x.dtype),
        inertia=float(km.inertia_),
    )


# ---------------------------------------------------------------------------- label-to-label costs
def _alignment_model(cost: str):
    """The label model (`dsflow.ot.label_models`) of the alignment cost ``cost``.

    The Gaussian one keeps the alignment's biased covariances (``ddof=0``) and accepts
    clusters of one sample (a point mass); the costs are computed in float64 on the CPU."""
    from dsflow.ot.label_models import GaussianLabels, MeansLabels

    return {"means": MeansLabels, "gaussian": lambda: GaussianLabels(allow_singletons=True, ddof=0)}[cost]()


def _model_costs(cost: str, x_source, y_source, x_target, y_target, target_classes=None):
    """``k x k'`` label distances of the label model ``cost`` between two labeled samples."""
    from dsflow.ot.class_stats import class_index

    model = _alignment_model(cost)
    stats = []
    for x, y, classes, what in ((x_source, y_source, None, "source"), (x_target, y_target, target_classes, "target")):
        x = torch.as_tensor(x).detach().cpu().double()
        cl, idx = class_index(torch.as_tensor(y).detach().cpu().long(), classes, what=f"{what} labels")
        stats.append(model.fit(x, idx, cl))
    return model.distances(*stats)


def gaussian_w2_costs(x_source, y_source, x_target, y_target):
    """Squared 2-Wasserstein (Bures) distances between class-conditional Gaussians (k x k').

    Biased (maximum-likelihood) covariances; the Bures distance of the Gaussian label model
    (factor route: never forms a ``d x d`` matrix per class pair)."""
    return _model_costs("gaussian", x_source, y_source, x_target, y_target)


def label_costs(x_source, y_source, target: LabeledData, cost="means", **otdd_options):
    """``k x k'`` cost between the source classes (sorted ``unique(y_source)``) and ``target.classes``.

    ``cost``: ``"means"`` (squared distance of class means), ``"gaussian"`` (Bures-W2 of
    class Gaussians), ``"otdd"`` (the OTDD's label distances, `otdd_label_distances`; extra
    keyword options go to it) or a ``k x k'`` matrix.
    """
    y_source = torch.as_tensor(y_source).detach().cpu().long()
    sc = torch.unique(y_source)
    if not isinstance(cost, str):
        W = torch.as_tensor(cost, dtype=torch.float64).detach().cpu()
        if tuple(W.shape) != (sc.numel(), target.num_classes):
            raise ValueError(f"cost matrix must be {sc.numel()} x {target.num_classes}, got {tuple(W.shape)}")
        return W
    if cost in ("means", "gaussian"):
        return _model_costs(cost, x_source, y_source, target.x, target.y, target.classes)
    if cost == "otdd":
        from dsflow.oracle.correspondence import otdd_label_distances

        src = LabeledData(x=torch.as_tensor(x_source).detach().cpu().float(), y=y_source, name="pseudo-labelled")
        return otdd_label_distances(src, target.detach().to("cpu"), **otdd_options)
    raise ValueError(f"unknown cost {cost!r}; use 'means', 'gaussian', 'otdd' or a k x k' matrix")


# ---------------------------------------------------------------------------- alignment
@dataclass
class ClusterAlignment:
    """``mapping[cluster] = class value``; ``labels`` are the aligned pseudo-labels."""

    mapping: dict[int, int]
    labels: Any
    cost: Any
    method: str
    meta: dict = field(default_factory=dict)


def assign(cost, *, method: str = "hungarian", row_weights=None, col_weights=None):
    """Column index for every row of a cost matrix.

    ``hungarian``: `scipy.optimize.linear_sum_assignment` (one-to-one; when there are more
    rows than columns the leftover rows take their cheapest column).  ``ot``: exact OT
    between ``row_weights`` and ``col_weights`` (default uniform), each row taking the
    column that receives most of its mass.
    """
    import numpy as np

    C = torch.as_tensor(cost, dtype=torch.float64).cpu().numpy()
    if method == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(C)
        out = C.argmin(1)
        out[rows] = cols
        return torch.as_tensor(out, dtype=torch.long)
    if method == "ot":
        import ot

        a = np.full(C.shape[0], 1.0 / C.shape[0]) if row_weights is None else np.asarray(row_weights, float)
        b = np.full(C.shape[1], 1.0 / C.shape[1]) if col_weights is None else np.asarray(col_weights, float)
        plan = ot.emd(a / a.sum(), b / b.sum(), C)
        return torch.as_tensor(plan.argmax(1), dtype=torch.long)
    raise ValueError(f"unknown alignment method {method!r}; use 'hungarian' or 'ot'")


def align_clusters(x, clusters, target: LabeledData, *, method: str = "hungarian", cost="means",
                   **otdd_options) -> ClusterAlignment:
    """Map cluster ids of ``x`` to ``target``'s class values without true labels.

    The pseudo-labelled source ``(x, clusters)`` and ``target`` are compared class by
    class with `label_costs` (``cost``), then `assign` (``method``) picks a target class
    per cluster.  Returns the mapping and the relabelled pseudo-labels.
    """
    from dsflow.ot.class_stats import class_counts, class_index

    clusters = torch.as_tensor(clusters).detach().cpu().long()
    cl, rows = class_index(clusters, what="clusters")
    C = label_costs(x, clusters, target, cost, **otdd_options)
    counts = class_counts(rows, cl.numel()).double()
    col = assign(C, method=method, row_weights=counts.numpy(), col_weights=target.class_counts().double().numpy())
    tc = target.classes
    mapping = {int(c): int(tc[j]) for c, j in zip(cl.tolist(), col.tolist())}
    labels = tc[col][rows]
    return ClusterAlignment(mapping=mapping, labels=labels, cost=C, method=f"{method}/{cost if isinstance(cost, str) else 'matrix'}")


def idealized_cluster_accuracy(clusters, true_labels) -> tuple[float, dict[int, int]]:
    """IDEALISED (uses true labels; the paper's appendix-C protocol).

    Hungarian matching of clusters to true labels maximising agreement on the confusion
    matrix; returns ``(accuracy of the matched pseudo-labels, mapping cluster -> label)``.
    """
    from dsflow.oracle.evaluation import confusion_matrix

    conf, tc, pc = confusion_matrix(true_labels, clusters)
    col_for_row = assign(-conf.double().T, method="hungarian")  # rows: clusters, columns: true labels
    mapping = {int(c): int(tc[j]) for c, j in zip(pc.tolist(), col_for_row.tolist())}
    matched = conf.T[torch.arange(pc.numel()), col_for_row].sum()
    # clusters beyond the number of classes share a label; count their agreement too
    return float(matched) / float(conf.sum()), mapping


def pseudo_label(data, k: int, *, seed: int = 0, n_init: int = 10, target: LabeledData | None = None,
                 method: str = "hungarian", cost="means", **otdd_options) -> LabeledData:
    """A copy of ``data`` (a `LabeledData` or features) labelled by k-means clusters.

    With ``target``, clusters are aligned to its classes (`align_clusters`), so the
    pseudo-labels take target class values; without it they are ``0..k-1``.  The true
    labels (if any) are kept in ``meta["true_y"]``, clusters in ``meta["clusters"]``.
    """
    if isinstance(data, LabeledData):
        base = data
    else:
        x = torch.as_tensor(data)
        base = LabeledData(x=x, y=torch.zeros(x.shape[0], dtype=torch.long), name="unlabeled")
    pl = kmeans_pseudo_labels(base.x, k, seed=seed, n_init=n_init)
    meta = dict(base.meta)
    meta["clusters"] = pl.labels
    if isinstance(data, LabeledData):
        meta["true_y"] = data.y.detach().cpu()
    labels = pl.labels
    if target is not None:
        al = align_clusters(base.x, pl.labels, target, method=method, cost=cost, **otdd_options)
        labels = al.labels
        meta["alignment"] = al.mapping
    names = target.class_names if target is not None else None
    return base.with_(y=labels.to(base.y.device), meta=meta, class_names=names, name=f"{base.name} (pseudo-labelled)")
