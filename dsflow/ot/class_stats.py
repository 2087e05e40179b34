"""Class statistics of a labeled sample: the one home of label lookups, class means and covariances.

Pure functions of tensors.  The label models (`dsflow.ot.label_models`), the flow's dynamics
(`dsflow.flow.dynamics`), the oracle's evaluation and the pseudo-label alignment all call
these, so that a class row, a class mean or a class covariance means the same thing (and is
computed the same way, to the last bit) everywhere.

* `class_index`: sorted label values and, per sample, the row of its class.
* `class_counts`, `class_means`: one bincount, one scatter (differentiable in ``x``).
* `class_covariances`: dense ``d x d`` covariances, one class at a time (a generator, so
  that a caller that needs one at a time never holds ``k`` of them).
* `class_gaussians` -> `GaussianStats`: means and centred, scaled sample factors
  (``Sigma_c = F_c F_c^T``, never formed), for the Gaussian label model.
* `positions_in_class`, `pad_by_class`: samples grouped by class, zero-padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "GaussianStats",
    "class_counts",
    "class_covariances",
    "class_gaussians",
    "class_index",
    "class_means",
    "gaussians_by_index",
    "pad_by_class",
    "positions_in_class",
]


def class_index(
    y: torch.Tensor,
    classes=None,
    *,
    what: str = "labels",
    fix: str = "pass classes=None or include every label value",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(classes, index)``: sorted label values (CPU int64) and, per sample, the row of its class.

    With ``classes`` given, every label must be one of them; the error names the labels
    that are not (``what`` says whose labels, ``fix`` what to do).  Empty ``classes`` are
    accepted only for empty ``y``.  ``index`` lives on ``y``'s device.
    """
    y_cpu = y.detach().cpu()
    if classes is None:
        classes = torch.unique(y_cpu, sorted=True)
    else:
        classes = torch.as_tensor(classes, dtype=torch.long).cpu()
        if classes.ndim != 1 or (classes.numel() == 0 and y_cpu.numel()):
            raise ValueError(f"{what}: classes must be a non-empty 1-D sequence of label values")
        if classes.numel() == 0:
            return classes, y
        if not bool((classes[1:] > classes[:-1]).all()):
            classes = torch.unique(classes, sorted=True)
    index = torch.searchsorted(classes, y_cpu).clamp_(max=max(classes.numel() - 1, 0))
    bad = classes[index] != y_cpu if classes.numel() else torch.zeros(0, dtype=torch.bool)
    if bool(bad.any()):
        missing = torch.unique(y_cpu[bad]).tolist()
        raise ValueError(f"{what}: labels {missing[:10]} are not in classes {classes.tolist()[:20]}; {fix}")
    return classes, index.to(y.device)


def class_counts(idx: torch.Tensor, k: int) -> torch.Tensor:
    """Samples per class row (CPU int64, length ``k``)."""
    return torch.bincount(idx.cpu(), minlength=k)


def class_means(x: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``(k, d)`` class means: one scatter-add divided by ``counts`` (on ``x``'s device and dtype).

    Differentiable in ``x`` (out-of-place ``index_add``).
    """
    counts_d = counts.to(device=x.device, dtype=x.dtype)
    sums = torch.zeros(counts.numel(), x.shape[1], dtype=x.dtype, device=x.device).index_add(0, idx, x)
    return sums / counts_d[:, None]


def class_covariances(x: torch.Tensor, idx: torch.Tensor, means: torch.Tensor, *, ddof: int = 1):
    """Yield ``(j, Sigma_j)``: the dense float64 ``d x d`` covariance of class row ``j``.

    ``ddof=1`` is the unbiased estimate (a single sample gives 0), ``ddof=0`` the biased one.
    Samples are centred in ``x``'s dtype, then promoted.  One class at a time: ``k`` covariances
    of image data would not fit, and callers that keep them all stack them themselves.
    """
    for j in range(means.shape[0]):  # a loop over classes (k is small), never over samples
        centred = (x[idx == j] - means[j]).double()
        m = centred.shape[0]
        yield j, centred.T @ centred / max(m - ddof, 1)


def positions_in_class(idx: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Position of every sample inside its class (stable: sample order), on ``idx``'s device."""
    idx_cpu = idx.cpu()
    n = idx_cpu.numel()
    order = torch.argsort(idx_cpu, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.empty(n, dtype=torch.long)
    pos[order] = torch.arange(n) - starts[idx_cpu[order]]
    return pos.to(idx.device)


def pad_by_class(x: torch.Tensor, idx: torch.Tensor, k: int, w: torch.Tensor | None = None):
    """Samples grouped by class: ``(k, r, d)`` padded features and ``(k, r)`` within-class weights.

    Weights are the sample weights renormalised per class (uniform when ``w`` is None);
    padding has weight 0.
    """
    n, d = x.shape
    counts = class_counts(idx, k)
    pos = positions_in_class(idx, counts).to(x.device)
    r = int(counts.max())
    X = torch.zeros(k, r, d, dtype=x.dtype, device=x.device).index_put((idx, pos), x)
    if w is None:
        w = torch.ones(n, dtype=x.dtype, device=x.device)
    W = torch.zeros(k, r, dtype=x.dtype, device=x.device).index_put((idx, pos), w.to(x.dtype).detach())
    W = W / W.sum(1, keepdim=True)
    return X, W


@dataclass
class GaussianStats:
    """Per-class Gaussians ``N(means[j], factors[j] @ factors[j].mT)``.

    ``factors`` is ``(k, d, r)``; classes with fewer than ``r`` columns are zero-padded
    (zero columns do not change ``F F^T``).  ``classes`` holds the label values (CPU int64)
    and ``counts`` the number of samples per class.
    """

    means: torch.Tensor
    factors: torch.Tensor
    classes: torch.Tensor
    counts: torch.Tensor

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    def covariances(self) -> torch.Tensor:
        """``(k, d, d)`` covariance matrices (forms ``d x d``: for tests and small ``d``)."""
        return self.factors @ self.factors.mT

    def detach(self) -> "GaussianStats":
        return GaussianStats(self.means.detach(), self.factors.detach(), self.classes, self.counts)


def gaussians_by_index(x: torch.Tensor, idx: torch.Tensor, classes: torch.Tensor, *,
                       allow_singletons: bool = False, ddof: int = 1) -> GaussianStats:
    """`class_gaussians` for samples already looked up (``idx`` rows of ``classes``).

    Vectorised: one scatter for the means, one index-put for the centred factors
    ``F_c = (X_c - mu_c)^T / sqrt(n_c - ddof)`` (``ddof=1``: unbiased covariance, the OTDD's;
    ``ddof=0``: the biased one the pseudo-label alignment has always used).
    """
    k = classes.numel()
    counts = class_counts(idx, k)
    if bool((counts == 0).any()):
        empty = classes[counts == 0].tolist()
        raise ValueError(f"class_gaussians: classes {empty} have no samples")
    if not allow_singletons and bool((counts < 2).any()):
        single = classes[counts < 2].tolist()
        raise ValueError(
            f"class_gaussians: classes {single} have a single sample, so no covariance can be "
            "estimated; drop them, use inner='means'/'exact', or pass allow_singletons=True "
            "(zero covariance)"
        )
    d = x.shape[1]
    means = class_means(x, idx, counts)
    pos = positions_in_class(idx, counts)
    counts_d = counts.to(device=x.device, dtype=x.dtype)
    scale = torch.rsqrt((counts_d - ddof).clamp(min=1.0))
    centred = (x - means[idx]) * scale[idx, None]
    r = int(counts.max())
    padded = torch.zeros(k, r, d, dtype=x.dtype, device=x.device).index_put((idx, pos), centred)
    return GaussianStats(means=means, factors=padded.mT, classes=classes, counts=counts)


def class_gaussians(
    x: torch.Tensor,
    y: torch.Tensor,
    classes=None,
    *,
    allow_singletons: bool = False,
) -> GaussianStats:
    """Fit ``N(mu_c, Sigma_c)`` to every class of ``(x, y)`` (differentiable in ``x``).

    A class with a single sample has no covariance estimate: this raises unless
    ``allow_singletons=True``, in which case its covariance is zero (a point mass).  Classes
    listed in ``classes`` but absent from ``y`` raise as well.
    """
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"class_gaussians: need x (n, d) and y (n,), got {tuple(x.shape)}, {tuple(y.shape)}")
    classes, idx = class_index(y, classes)
    return gaussians_by_index(x, idx, classes, allow_singletons=allow_singletons)
