"""Label models: how a class becomes a distribution, and how far apart two classes are.

A label model is an object with one small interface, used by `dsflow.otdd`, the OTDD
functional (`dsflow.functionals.OTDD`) and the pseudo-label alignment
(`dsflow.oracle.pseudo_labels`), so that none of them branches on ``inner``:

* ``fit(x, idx, classes, weights=None) -> stats``: class statistics of a labeled sample
  whose labels were already looked up (`dsflow.ot.class_stats.class_index`: ``idx`` are
  class rows of ``classes``).  Differentiable in ``x``.
* ``from_parameters(means, factors) -> stats``: the label parameters that joint-driven
  dynamics move (rows of class or particle Gaussians); models that cannot read them raise.
* ``distances(s1, s2, *, same=False) -> (k1, k2)``: ``W_p^p`` between every class of ``s1``
  and every class of ``s2``; ``same=True`` marks a self block (``s2 is s1``), whose
  diagonal is exactly 0 and whose symmetric half may be skipped.
* ``checks_singletons``: whether a class of one sample must be refused (`check_class_sizes`).

The models (``inner``): ``exact`` (empirical W_p between class samples), ``gaussian``
(closed-form Bures W2 between Gaussian fits), ``means`` (``||mu - mu'||^2``), ``none``
(zeros: feature-only OT).  `make_label_model` builds one from the ``inner`` name and the
options of `dsflow.otdd`; `LABEL_MODELS` is the table it reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsflow.ot.class_stats import GaussianStats, class_counts, class_index, class_means, gaussians_by_index, pad_by_class
from dsflow.ot.labels import exact_label_distances, gaussian_label_distances, means_label_distances, zero_diagonal

__all__ = [
    "INNER_CHOICES",
    "LABEL_MODELS",
    "ExactLabels",
    "GaussianLabels",
    "LabelDistances",
    "LabelModel",
    "MeansLabels",
    "NoLabels",
    "label_distances",
    "make_label_model",
]


class LabelModel:
    """Base class: the interface of the module docstring."""

    name = ""
    #: a class of one sample must be refused before any step (the Gaussian model's covariance)
    checks_singletons = False

    def fit(self, x: torch.Tensor, idx: torch.Tensor, classes: torch.Tensor, weights=None):
        raise NotImplementedError

    def from_parameters(self, means: torch.Tensor, factors: torch.Tensor):
        raise ValueError(
            f"OTDD: joint-driven dynamics move Gaussian label parameters; inner={self.name!r} "
            "cannot use them (set inner='gaussian')"
        )

    def distances(self, s1, s2, *, same: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"


class NoLabels(LabelModel):
    """``inner="none"``: every label distance is 0 (feature-only OT).

    The statistics are an empty ``(k, 0)`` tensor: the class count, dtype and device."""

    name = "none"

    def fit(self, x, idx, classes, weights=None):
        return x.new_zeros(classes.numel(), 0)

    def distances(self, s1, s2, *, same=False):
        return torch.zeros((s1.shape[0], s2.shape[0]), dtype=s1.dtype, device=s1.device)


class MeansLabels(LabelModel):
    """``inner="means"``: ``||mu_y - mu_y'||^2``; statistics are the ``(k, d)`` class means."""

    name = "means"

    def fit(self, x, idx, classes, weights=None):
        counts = class_counts(idx, classes.numel())
        if bool((counts == 0).any()):
            raise ValueError(f"class_gaussians: classes {classes[counts == 0].tolist()} have no samples")
        return class_means(x, idx, counts)

    def from_parameters(self, means, factors):
        return means

    def distances(self, s1, s2, *, same=False):
        W = means_label_distances(s1, s2)
        return zero_diagonal(W) if same else W


class GaussianLabels(LabelModel):
    """``inner="gaussian"``: Bures W2^2 between class Gaussians (`dsflow.ot.gaussian`).

    ``method`` (``auto``/``lowrank``/``full``), ``diagonal`` covariances, ``ridge``
    shrinkage; ``allow_singletons`` treats a class of one sample as a point mass; ``ddof``
    1 (unbiased covariances) or 0 (biased).  Sample weights do not enter the fit."""

    name = "gaussian"

    def __init__(self, *, method: str = "auto", diagonal: bool = False, ridge: float = 0.0,
                 allow_singletons: bool = False, ddof: int = 1):
        self.method, self.diagonal, self.ridge = method, bool(diagonal), float(ridge)
        self.allow_singletons, self.ddof = bool(allow_singletons), int(ddof)

    @property
    def checks_singletons(self) -> bool:
        return not self.allow_singletons

    def fit(self, x, idx, classes, weights=None) -> GaussianStats:
        return gaussians_by_index(x, idx, classes, allow_singletons=self.allow_singletons, ddof=self.ddof)

    def from_parameters(self, means, factors):
        return (means, factors)

    def distances(self, s1, s2, *, same=False):
        return gaussian_label_distances(s1, s2, method=self.method, diagonal=self.diagonal, ridge=self.ridge, same=same)


class ExactLabels(LabelModel):
    """``inner="exact"``: W_p^p between the class-conditional empirical samples.

    ``solver="emd"``: POT's network simplex per class pair; ``"sinkhorn"``: all pairs in
    one padded batch, debiased, at ``entreg``.  Statistics are the padded class samples and
    their within-class weights (`pad_by_class`)."""

    name = "exact"

    def __init__(self, *, p: float = 2, solver: str = "emd", entreg: float = 0.1):
        self.p, self.solver, self.entreg = float(p), solver, float(entreg)

    def fit(self, x, idx, classes, weights=None):
        return pad_by_class(x, idx, classes.numel(), weights)

    def distances(self, s1, s2, *, same=False):
        (X1, w1), (X2, w2) = s1, s2
        return exact_label_distances(X1, w1, X2, w2, p=self.p, solver=self.solver, entreg=self.entreg, same=same)


#: ``inner`` name -> label model class.
LABEL_MODELS: dict[str, type[LabelModel]] = {
    "exact": ExactLabels, "gaussian": GaussianLabels, "means": MeansLabels, "none": NoLabels,
}
INNER_CHOICES = tuple(LABEL_MODELS)


def make_label_model(
    inner: str = "gaussian",
    *,
    p: float = 2,
    gaussian_method: str = "auto",
    diagonal_cov: bool = False,
    cov_ridge: float = 0.0,
    exact_inner_solver: str = "emd",
    inner_entreg: float = 0.1,
    allow_singletons: bool = False,
    caller: str = "otdd",
) -> LabelModel:
    """The label model ``inner`` with the options of `dsflow.otdd` (``caller`` prefixes errors)."""
    if inner not in LABEL_MODELS:
        raise ValueError(f"{caller}: inner must be one of {INNER_CHOICES}, got {inner!r}")
    if inner == "gaussian":
        if p != 2:
            raise ValueError(f"{caller}: inner='gaussian' is the closed-form W2; use p=2 or inner='exact'")
        return GaussianLabels(method=gaussian_method, diagonal=diagonal_cov, ridge=cov_ridge,
                              allow_singletons=allow_singletons)
    if inner == "exact":
        if exact_inner_solver not in ("emd", "sinkhorn"):
            raise ValueError(f"{caller}: exact_inner_solver must be 'emd' or 'sinkhorn', got {exact_inner_solver!r}")
        return ExactLabels(p=p, solver=exact_inner_solver, entreg=inner_entreg)
    return LABEL_MODELS[inner]()


@dataclass
class LabelDistances:
    """``st`` (k_s x k_t) and, when requested, ``ss`` (k_s x k_s) and ``tt`` (k_t x k_t)."""

    st: torch.Tensor
    ss: torch.Tensor | None
    tt: torch.Tensor | None
    source_classes: torch.Tensor
    target_classes: torch.Tensor


def label_blocks(model: LabelModel, s_stats, t_stats, blocks=("st",)) -> dict:
    """``{"st", "ss", "tt"}`` -> the requested label-distance blocks (others ``None``)."""
    pairs = {"st": (s_stats, t_stats, False), "ss": (s_stats, s_stats, True), "tt": (t_stats, t_stats, True)}
    out = {"st": None, "ss": None, "tt": None}
    for b in blocks:
        s1, s2, same = pairs[b]
        out[b] = model.distances(s1, s2, same=same)
    return out


def label_distances(
    xs: torch.Tensor,
    ys: torch.Tensor,
    xt: torch.Tensor,
    yt: torch.Tensor,
    *,
    inner: str = "gaussian",
    p: float = 2,
    blocks: tuple[str, ...] = ("st",),
    ws: torch.Tensor | None = None,
    wt: torch.Tensor | None = None,
    gaussian_method: str = "auto",
    diagonal: bool = False,
    ridge: float = 0.0,
    exact_solver: str = "emd",
    inner_entreg: float = 0.1,
    allow_singletons: bool = False,
    model: LabelModel | None = None,
) -> LabelDistances:
    """Label-to-label distance blocks between two labeled samples.

    ``blocks`` lists what to compute among ``"st"``, ``"ss"``, ``"tt"`` (the debiased
    outer problem needs all three).  Label values may be any integers; rows/columns
    follow the sorted class values returned in the result.  ``model`` (a `LabelModel`)
    replaces ``inner`` and its options.
    """
    if model is None:
        model = make_label_model(inner, p=p, gaussian_method=gaussian_method, diagonal_cov=diagonal,
                                 cov_ridge=ridge, exact_inner_solver=exact_solver, inner_entreg=inner_entreg,
                                 allow_singletons=allow_singletons, caller="label_distances")
    cs, idx_s = class_index(ys)
    ct, idx_t = class_index(yt)
    out = label_blocks(model, model.fit(xs, idx_s, cs, ws), model.fit(xt, idx_t, ct, wt), blocks)
    return LabelDistances(st=out["st"], ss=out["ss"], tt=out["tt"], source_classes=cs, target_classes=ct)
