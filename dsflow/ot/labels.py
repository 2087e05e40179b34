"""Label-to-label distances ``W_p^p(alpha_y, beta_y')`` between class-conditional distributions.

``inner`` selects the label model:

* ``"exact"``: W_p^p between the class-conditional empirical samples.  ``exact_solver="emd"``
  solves each class pair with POT's network simplex (differentiable through POT's torch
  backend; the loop is over class pairs only); ``"sinkhorn"`` solves all pairs in one padded
  batch with the log-domain solver (debiased Sinkhorn divergence at ``inner_entreg``).
* ``"gaussian"``: closed-form Bures W2^2 between Gaussian fits (``p`` must be 2), batched
  over all pairs, low-rank or full route (see `dsflow.ot.gaussian`).
* ``"means"``: ``||mu_y - mu_y'||^2``.
* ``"none"``: zeros (feature-only OT).

Diagonals of self blocks (a class against itself) are exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsflow.ot.costs import ground_cost
from dsflow.ot.gaussian import GaussianStats, bures_w2_factors, class_gaussians, class_index, diagonal_bures_w2

__all__ = [
    "INNER_CHOICES",
    "LabelDistances",
    "label_distances",
    "gaussian_label_distances",
    "exact_label_distances",
    "means_label_distances",
    "pad_by_class",
]

INNER_CHOICES = ("exact", "gaussian", "means", "none")


@dataclass
class LabelDistances:
    """``st`` (k_s x k_t) and, when requested, ``ss`` (k_s x k_s) and ``tt`` (k_t x k_t)."""

    st: torch.Tensor
    ss: torch.Tensor | None
    tt: torch.Tensor | None
    source_classes: torch.Tensor
    target_classes: torch.Tensor


def _zero_diag(W: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(W.shape[0], dtype=torch.bool, device=W.device)
    return W.masked_fill(eye, 0.0)


def pad_by_class(x: torch.Tensor, idx: torch.Tensor, k: int, w: torch.Tensor | None = None):
    """Samples grouped by class: ``(k, r, d)`` padded features and ``(k, r)`` within-class weights.

    Weights are the sample weights renormalised per class (uniform when ``w`` is None);
    padding has weight 0.
    """
    n, d = x.shape
    counts = torch.bincount(idx.cpu(), minlength=k)
    order = torch.argsort(idx.cpu(), stable=True)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.empty(n, dtype=torch.long)
    pos[order] = torch.arange(n) - starts[idx.cpu()[order]]
    pos = pos.to(x.device)
    r = int(counts.max())
    X = torch.zeros(k, r, d, dtype=x.dtype, device=x.device).index_put((idx, pos), x)
    if w is None:
        w = torch.ones(n, dtype=x.dtype, device=x.device)
    W = torch.zeros(k, r, dtype=x.dtype, device=x.device).index_put((idx, pos), w.to(x.dtype).detach())
    W = W / W.sum(1, keepdim=True)
    return X, W


def means_label_distances(m1: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
    """``||mu_i - mu_j||^2`` for all pairs."""
    return ((m1[:, None, :] - m2[None, :, :]) ** 2).sum(-1)


def gaussian_label_distances(
    s1: GaussianStats | tuple,
    s2: GaussianStats | tuple,
    *,
    method: str = "auto",
    diagonal: bool = False,
    ridge: float = 0.0,
    same: bool = False,
) -> torch.Tensor:
    """Bures W2^2 between all pairs of class Gaussians (``(means, factors)`` or `GaussianStats`)."""
    m1, F1 = (s1.means, s1.factors) if isinstance(s1, GaussianStats) else s1
    m2, F2 = (s2.means, s2.factors) if isinstance(s2, GaussianStats) else s2
    if diagonal:
        W = diagonal_bures_w2(m1, F1, m2, F2, pairwise=True, ridge=ridge)
    elif same and m2 is m1 and F2 is F1:
        # self block: the i < j pairs only
        W = bures_w2_factors(m1, F1, pairwise=True, method=method, ridge=ridge)
    else:
        W = bures_w2_factors(m1, F1, m2, F2, pairwise=True, method=method, ridge=ridge)
    return _zero_diag(W) if same else W


def exact_label_distances(
    X1: torch.Tensor,
    w1: torch.Tensor,
    X2: torch.Tensor,
    w2: torch.Tensor,
    *,
    p: float = 2,
    solver: str = "emd",
    entreg: float = 0.1,
    scaling: float = 0.5,
    tol: float = 1e-4,
    max_iter: int = 5000,
    same: bool = False,
) -> torch.Tensor:
    """W_p^p between padded class samples ``X (k, r, d)`` with weights ``w (k, r)``, all pairs.

    The ``(k1, k2, r1, r2)`` pair costs come from one batched distance computation.
    """
    k1, r1, d = X1.shape
    k2, r2, _ = X2.shape
    C = ground_cost(X1.reshape(k1 * r1, d), X2.reshape(k2 * r2, d), p).reshape(k1, r1, k2, r2).permute(0, 2, 1, 3)
    if solver == "emd":
        import ot

        W = torch.zeros(k1, k2, dtype=X1.dtype, device=X1.device)
        n1 = (w1 > 0).sum(1).tolist()
        n2 = (w2 > 0).sum(1).tolist()
        vals = []
        for i in range(k1):  # class pairs: a C network simplex each, no batched exact solver exists
            row = []
            for j in range(k2):
                if same and j < i:
                    row.append(None)
                    continue
                if same and i == j:
                    row.append(torch.zeros((), dtype=X1.dtype, device=X1.device))
                    continue
                M = C[i, j, : n1[i], : n2[j]]
                row.append(ot.emd2(w1[i, : n1[i]].contiguous(), w2[j, : n2[j]].contiguous(), M, numItermax=1_000_000))
            vals.append(row)
        if same:
            for i in range(k1):
                for j in range(i):
                    vals[i][j] = vals[j][i]
        W = torch.stack([torch.stack([v.to(X1.dtype) for v in row]) for row in vals])
        return W
    if solver != "sinkhorn":
        raise ValueError(f"exact_solver must be 'emd' or 'sinkhorn', got {solver!r}")
    from dsflow.ot.sinkhorn import sinkhorn_potentials, sinkhorn_value

    P = k1 * k2
    Cb = C.reshape(P, r1, r2)
    la = w1.log()[:, None, :].expand(k1, k2, r1).reshape(P, r1)
    lb = w2.log()[None, :, :].expand(k1, k2, r2).reshape(P, r2)
    C11 = ground_cost(X1, X1, p)
    C22 = ground_cost(X2, X2, p)
    # cross problems for every pair, self problems once per class
    pot = sinkhorn_potentials(Cb, la, lb, eps=entreg, scaling=scaling, tol=tol, max_iter=max_iter)
    cross = sinkhorn_value(Cb, la, lb, pot, debias=False).reshape(k1, k2)
    s1 = _self_values(C11, w1, entreg, scaling, tol, max_iter)
    s2 = _self_values(C22, w2, entreg, scaling, tol, max_iter)
    W = (cross - 0.5 * s1[:, None] - 0.5 * s2[None, :]).clamp(min=0)
    return _zero_diag(W) if same else W


def _self_values(C, w, eps, scaling, tol, max_iter):
    from dsflow.ot.sinkhorn import _half_grad, sinkhorn_potentials, softmin

    lw = w.log()
    pot = sinkhorn_potentials(C, lw, lw, eps=eps, C_xx=C, scaling=scaling, tol=tol, max_iter=max_iter)
    # OT(w, w) = 2 <w, f>; d OT / d C is the plan, so the doubled value carries half gradients
    f = _half_grad(softmin(eps, C, lw + pot.f_self / eps))
    return 2.0 * (w * torch.where(w > 0, f, torch.zeros_like(f))).sum(-1)


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
) -> LabelDistances:
    """Label-to-label distance blocks between two labeled samples.

    ``blocks`` lists what to compute among ``"st"``, ``"ss"``, ``"tt"`` (the debiased
    outer problem needs all three).  Label values may be any integers; rows/columns
    follow the sorted class values returned in the result.
    """
    if inner not in INNER_CHOICES:
        raise ValueError(f"inner must be one of {INNER_CHOICES}, got {inner!r}")
    cs, idx_s = class_index(ys)
    ct, idx_t = class_index(yt)
    ks, kt = cs.numel(), ct.numel()
    dev, dt = xs.device, xs.dtype
    out = {"st": None, "ss": None, "tt": None}
    if inner == "none":
        for b, shape in (("st", (ks, kt)), ("ss", (ks, ks)), ("tt", (kt, kt))):
            if b in blocks:
                out[b] = torch.zeros(shape, dtype=dt, device=dev)
    elif inner in ("gaussian", "means"):
        if inner == "gaussian" and p != 2:
            raise ValueError("inner='gaussian' is the closed-form W2: use p=2 (or inner='exact')")
        gs = class_gaussians(xs, ys, cs, allow_singletons=allow_singletons or inner == "means")
        gt = class_gaussians(xt, yt, ct, allow_singletons=allow_singletons or inner == "means")
        pairs = {"st": (gs, gt, False), "ss": (gs, gs, True), "tt": (gt, gt, True)}
        for b in blocks:
            s1, s2, same = pairs[b]
            if inner == "means":
                W = means_label_distances(s1.means, s2.means)
                out[b] = _zero_diag(W) if same else W
            else:
                out[b] = gaussian_label_distances(s1, s2, method=gaussian_method, diagonal=diagonal, ridge=ridge, same=same)
    else:
        Xs, Ws = pad_by_class(xs, idx_s, ks, ws)
        Xt, Wt = pad_by_class(xt, idx_t, kt, wt)
        pairs = {"st": (Xs, Ws, Xt, Wt, False), "ss": (Xs, Ws, Xs, Ws, True), "tt": (Xt, Wt, Xt, Wt, True)}
        for b in blocks:
            X1, w1, X2, w2, same = pairs[b]
            out[b] = exact_label_distances(X1, w1, X2, w2, p=p, solver=exact_solver, entreg=inner_entreg, same=same)
    return LabelDistances(st=out["st"], ss=out["ss"], tt=out["tt"], source_classes=cs, target_classes=ct)
