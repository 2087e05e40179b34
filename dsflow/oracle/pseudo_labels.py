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
def _class_stats(x, y, classes):
    """Means ``(k, d)`` and biased covariances ``(k, d, d)`` (float64), one per class."""
    x = torch.as_tensor(x).detach().cpu().double()
    y = torch.as_tensor(y).detach().cpu().long()
    idx = torch.searchsorted(classes, y)
    k, d = classes.numel(), x.shape[1]
    counts = torch.bincount(idx, minlength=k).double()
    if bool((counts == 0).any()):
        raise ValueError("every class needs at least one sample")
    means = torch.zeros(k, d, dtype=torch.float64).index_add_(0, idx, x) / counts[:, None]
    centred = x - means[idx]
    covs = torch.empty(k, d, d, dtype=torch.float64)
    for j in range(k):  # one (d x d) product per class; an (n, d, d) outer product would not fit
        cj = centred[idx == j]
        covs[j] = cj.T @ cj / counts[j]
    return means, covs


def _sqrtm_psd(S):
    vals, vecs = torch.linalg.eigh(S)
    return (vecs * vals.clamp_min(0).sqrt()[..., None, :]) @ vecs.mT


def gaussian_w2_costs(x_source, y_source, x_target, y_target):
    """Squared 2-Wasserstein (Bures) distances between class-conditional Gaussians (k x k')."""
    sc, tc = torch.unique(torch.as_tensor(y_source).cpu()), torch.unique(torch.as_tensor(y_target).cpu())
    m1, S1 = _class_stats(x_source, y_source, sc)
    m2, S2 = _class_stats(x_target, y_target, tc)
    if m1.shape[1] ** 2 * len(sc) * len(tc) > 100_000_000:
        raise ValueError("gaussian_w2_costs: too many classes x dimensions for exact Bures; use cost='means' or 'otdd'")
    R1 = _sqrtm_psd(S1)  # (k, d, d)
    cross = R1[:, None] @ S2[None] @ R1[:, None]  # (k, k', d, d)
    tr_cross = torch.linalg.eigvalsh(cross).clamp_min(0).sqrt().sum(-1)
    tr1 = torch.diagonal(S1, dim1=-2, dim2=-1).sum(-1)
    tr2 = torch.diagonal(S2, dim1=-2, dim2=-1).sum(-1)
    mean_term = torch.cdist(m1, m2) ** 2
    return (mean_term + tr1[:, None] + tr2[None, :] - 2 * tr_cross).clamp_min(0)


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
    if cost == "means":
        m1, _ = _class_stats_means(x_source, y_source, sc)
        m2, _ = _class_stats_means(target.x, target.y, target.classes)
        return torch.cdist(m1, m2) ** 2
    if cost == "gaussian":
        return gaussian_w2_costs(x_source, y_source, target.x, target.y)
    if cost == "otdd":
        from dsflow.oracle.correspondence import otdd_label_distances

        src = LabeledData(x=torch.as_tensor(x_source).detach().cpu().float(), y=y_source, name="pseudo-labelled")
        return otdd_label_distances(src, target.detach().to("cpu"), **otdd_options)
    raise ValueError(f"unknown cost {cost!r}; use 'means', 'gaussian', 'otdd' or a k x k' matrix")


def _class_stats_means(x, y, classes):
    x = torch.as_tensor(x).detach().cpu().double()
    idx = torch.searchsorted(classes, torch.as_tensor(y).cpu().long())
    counts = torch.bincount(idx, minlength=classes.numel()).double()
    return torch.zeros(classes.numel(), x.shape[1], dtype=torch.float64).index_add_(0, idx, x) / counts[:, None], counts


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
    clusters = torch.as_tensor(clusters).detach().cpu().long()
    cl = torch.unique(clusters)
    C = label_costs(x, clusters, target, cost, **otdd_options)
    counts = torch.bincount(torch.searchsorted(cl, clusters), minlength=cl.numel()).double()
    col = assign(C, method=method, row_weights=counts.numpy(), col_weights=target.class_counts().double().numpy())
    tc = target.classes
    mapping = {int(c): int(tc[j]) for c, j in zip(cl.tolist(), col.tolist())}
    lookup = tc[col]
    labels = lookup[torch.searchsorted(cl, clusters)]
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
