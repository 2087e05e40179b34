"""Class correspondence between label sets (paper section 6.4).

A flow may start from a dataset with ``k`` classes (the *source*, whose labels we want
to predict) and move towards the oracle's domain with ``k'`` classes (the *target*, the
oracle's label space).  With the ``k x k'`` label-to-label distance matrix ``W`` of the
OTDD (``dsflow.otdd(source, target, return_label_distances=True).label_distances``, or
any cost you supply) we solve the exact OT problem between the two class histograms

    pi* = argmin_{pi in Pi(a, b)} <pi, W>,   a = source class weights, b = target's,

and append ``pi*`` as a final linear layer on the oracle's class probabilities.  The
layer must map target probabilities (``k'``) to source probabilities (``k``), so it uses
``T = pi*^T`` *row-normalised*: ``T[j, i] = pi*[i, j] / sum_i pi*[i, j]`` is the
probability that target class ``j`` stands for source class ``i``; each row of ``T`` sums
to one, so ``p_source = p_target @ T`` is again a probability vector.  A target class
with zero mass in ``b`` gets the row of its nearest source class (smallest ``W[:, j]``).
"""

from __future__ import annotations

import torch
from torch import nn

from dsflow.data.container import LabeledData


def _hist(weights, k: int, what: str):
    if weights is None:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu().flatten()
    if w.numel() != k or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"{what} weights must be {k} non-negative numbers with a positive sum, got {w.tolist()}")
    return w / w.sum()


class ClassCorrespondence(nn.Module):
    """Linear map from target-class probabilities (``k'``) to source-class probabilities (``k``).

    Buffers: ``coupling`` (``k x k'``, the OT plan), ``transfer`` (``k' x k``, row-stochastic),
    ``source_classes`` and ``target_classes`` (label values), ``label_distances``.
    """

    def __init__(self, coupling, label_distances, source_classes, target_classes):
        super().__init__()
        coupling = torch.as_tensor(coupling, dtype=torch.float64)
        dist = torch.as_tensor(label_distances, dtype=torch.float64)
        col_mass = coupling.sum(0)  # mass of each target class
        transfer = (coupling / col_mass.clamp_min(1e-300)).T.clone()
        empty = col_mass <= 1e-12
        if bool(empty.any()):
            nearest = torch.nn.functional.one_hot(dist.argmin(0), coupling.shape[0]).double()
            transfer[empty] = nearest[empty]
        self.register_buffer("coupling", coupling.float())
        self.register_buffer("transfer", transfer.float())
        self.register_buffer("label_distances", dist.float())
        self.register_buffer("source_classes", torch.as_tensor(source_classes, dtype=torch.long))
        self.register_buffer("target_classes", torch.as_tensor(target_classes, dtype=torch.long))

    def forward(self, target_proba):
        """Source-class probabilities ``target_proba @ transfer``."""
        return target_proba @ self.transfer.to(target_proba)

    def class_map(self) -> dict[int, int]:
        """Most likely source class value for every target class value."""
        best = self.transfer.argmax(1)
        return {int(t): int(self.source_classes[b]) for t, b in zip(self.target_classes.tolist(), best.tolist())}


def class_correspondence(label_distances, *, source_classes=None, target_classes=None, source_weights=None,
                         target_weights=None) -> ClassCorrespondence:
    """Solve exact OT (``ot.emd``) between class histograms under ``label_distances`` (k x k').

    ``source_weights``/``target_weights`` default to uniform; pass class frequencies for
    the paper's class-probability histograms (`correspondence_from_data` does).
    """
    import ot

    W = torch.as_tensor(label_distances, dtype=torch.float64).detach().cpu()
    if W.ndim != 2 or 0 in W.shape:
        raise ValueError(f"label_distances must be a non-empty k x k' matrix, got shape {tuple(W.shape)}")
    if not bool(torch.isfinite(W).all()):
        raise ValueError("label_distances contains NaN or inf")
    k, kp = W.shape
    sc = torch.arange(k) if source_classes is None else torch.as_tensor(source_classes).long().flatten()
    tc = torch.arange(kp) if target_classes is None else torch.as_tensor(target_classes).long().flatten()
    if sc.numel() != k or tc.numel() != kp:
        raise ValueError(f"label_distances is {k} x {kp} but got {sc.numel()} source and {tc.numel()} target classes")
    a, b = _hist(source_weights, k, "source"), _hist(target_weights, kp, "target")
    coupling = torch.as_tensor(ot.emd(a.numpy(), b.numpy(), W.numpy()))
    return ClassCorrespondence(coupling, W, sc, tc)


def correspondence_from_data(source: LabeledData, target: LabeledData, *, label_distances=None,
                             **otdd_options) -> ClassCorrespondence:
    """Correspondence from class frequencies and the OTDD's label-to-label distances.

    ``label_distances`` (k x k', rows = ``source.classes``, columns = ``target.classes``)
    defaults to the OTDD's label-to-label distances, `otdd_label_distances` (keyword
    options such as ``inner="gaussian"|"exact"|"means"`` go to it).
    """
    if label_distances is None:
        label_distances = otdd_label_distances(source, target, **otdd_options)
    W = torch.as_tensor(label_distances).detach().cpu()
    if tuple(W.shape) != (source.num_classes, target.num_classes):
        raise ValueError(
            f"label_distances has shape {tuple(W.shape)} but source has {source.num_classes} classes and target "
            f"{target.num_classes}"
        )
    return class_correspondence(W, source_classes=source.classes, target_classes=target.classes,
                                source_weights=source.class_counts(), target_weights=target.class_counts())


#: How a flowed source class is given a target class (``oracle.matching``):
#: ``otdd``: exact OT between the class histograms (class frequencies) on the OTDD's Gaussian
#: label distances (Alvarez-Melis & Fusi, section 6.4); ``w2``: exact OT between the classes with
#: uniform weights on the exact ``W_2^2`` between the empirical class distributions (the WoW
#: flows' rule: classes move as units); ``nn_vote``: each source class takes the target class most
#: of its particles' nearest target neighbours carry (1-NN vote).
MATCHINGS = ("otdd", "w2", "nn_vote")


def correspondence_by(matching: str, source: LabeledData, target: LabeledData) -> ClassCorrespondence:
    """The class correspondence of ``source`` (e.g. flowed particles) to ``target`` by ``matching``."""
    if matching == "otdd":
        return correspondence_from_data(source, target)
    if matching == "w2":
        W = otdd_label_distances(source, target, inner="exact")  # W_2^2 (p = 2) by exact OT per class pair
        return class_correspondence(W, source_classes=source.classes, target_classes=target.classes)
    if matching == "nn_vote":
        return correspondence_by_vote(source, target)
    raise ValueError(f"oracle.matching={matching!r}: choose one of {MATCHINGS}")


def nearest_target_votes(source: LabeledData, target: LabeledData, *, chunk: int = 2048):
    """``(k, k')`` counts: how many particles of each source class have their nearest target
    sample (Euclidean) in each target class; rows/columns follow the sorted class values."""
    from dsflow.ot.class_stats import class_index
    from dsflow.ot.costs import sqdist

    xs = source.x.detach().reshape(source.n, -1)
    xt = target.x.detach().reshape(target.n, -1).to(xs)
    _, ys = class_index(source.y.to(xs.device))
    _, yt = class_index(target.y.to(xs.device))
    nearest = torch.cat([sqdist(xs[i:i + chunk], xt).argmin(1) for i in range(0, xs.shape[0], chunk)])
    k, kp = source.num_classes, target.num_classes
    votes = torch.zeros(k * kp, dtype=torch.float64, device=xs.device)
    votes.index_add_(0, ys * kp + yt[nearest], torch.ones_like(ys, dtype=torch.float64))
    return votes.reshape(k, kp).cpu()


def correspondence_by_vote(source: LabeledData, target: LabeledData) -> ClassCorrespondence:
    """Each source class -> the target class of most of its particles' 1-NN (ties: the lower
    class).  A target class no source class voted for maps to the source class that gave it the
    most votes (through ``label_distances = -votes``), as `ClassCorrespondence` does for a target
    class without mass."""
    votes = nearest_target_votes(source, target)
    k, kp = votes.shape
    coupling = torch.zeros(k, kp, dtype=torch.float64)
    coupling[torch.arange(k), votes.argmax(1)] = 1.0 / k
    return ClassCorrespondence(coupling, -votes / votes.sum(1, keepdim=True).clamp_min(1), source.classes,
                               target.classes)


def otdd_label_distances(source: LabeledData, target: LabeledData, *, inner: str = "gaussian", **options):
    """The ``k x k'`` label-to-label distances ``W_p^p(alpha_y, beta_y')`` of the OTDD.

    Same matrix as ``dsflow.otdd(source, target, return_label_distances=True)
    .label_distances`` without solving the outer OT problem (`dsflow.ot.label_distances`,
    block ``st``); rows and columns follow the sorted class values.
    """
    from dsflow.ot import label_distances

    xs, xt = source.x.detach(), target.x.detach().to(source.x)
    res = label_distances(xs, source.y.to(xs.device), xt, target.y.to(xs.device), inner=inner, blocks=("st",), **options)
    return res.st.detach().cpu().double()


class ComposedClassifier(nn.Module):
    """An oracle followed by a `ClassCorrespondence`: predicts *source* label values.

    ``classes`` are the source classes; ``predict_proba`` is the oracle's probabilities
    mapped through the layer; ``forward`` returns log-probabilities (differentiable).
    """

    def __init__(self, oracle, correspondence: ClassCorrespondence):
        super().__init__()
        oc = oracle.classes.detach().cpu().long()
        tc = correspondence.target_classes.detach().cpu().long()
        if oc.numel() != tc.numel() or not bool(torch.equal(oc, tc)):
            raise ValueError(
                f"correspondence target classes {tc.tolist()} must equal the oracle's classes {oc.tolist()} "
                "(compute label distances against the oracle's training classes)"
            )
        self.oracle = oracle
        self.correspondence = correspondence

    @property
    def classes(self):
        return self.correspondence.source_classes

    def forward(self, x):
        proba = torch.softmax(self.oracle(x), 1)
        return torch.log(self.correspondence(proba).clamp_min(1e-30))

    @torch.no_grad()
    def predict_proba(self, x, batch_size: int = 1024):
        return self.correspondence(self.oracle.predict_proba(x, batch_size=batch_size))

    @torch.no_grad()
    def predict(self, x, batch_size: int = 1024):
        x = torch.as_tensor(x)
        idx = self.predict_proba(x, batch_size).argmax(1)
        return self.classes.to(idx.device)[idx].to(x.device)
