"""Label-to-label distances ``W_p^p(alpha_y, beta_y')``: the kernels behind the label models.

Pure functions of class statistics.  The label models that call them (one object per
``inner``), `label_distances` and `LabelDistances` are in `dsflow.ot.label_models`; they
are still importable from here.  The kernels, by ``inner``:

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

import torch

from dsflow.ot.costs import ground_cost
from dsflow.ot.class_stats import GaussianStats, pad_by_class
from dsflow.ot.gaussian import bures_w2_factors, diagonal_bures_w2

__all__ = [
    "gaussian_label_distances",
    "exact_label_distances",
    "means_label_distances",
    "pad_by_class",
    "zero_diagonal",
]


def zero_diagonal(W: torch.Tensor) -> torch.Tensor:
    """``W`` with an exact-zero diagonal: a class against itself (self blocks)."""
    eye = torch.eye(W.shape[0], dtype=torch.bool, device=W.device)
    return W.masked_fill(eye, 0.0)


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
    return zero_diagonal(W) if same else W


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
    from dsflow.ot.sinkhorn import self_transport_values, sinkhorn_potentials, sinkhorn_value

    P = k1 * k2
    Cb = C.reshape(P, r1, r2)
    la = w1.log()[:, None, :].expand(k1, k2, r1).reshape(P, r1)
    lb = w2.log()[None, :, :].expand(k1, k2, r2).reshape(P, r2)
    C11 = ground_cost(X1, X1, p)
    C22 = ground_cost(X2, X2, p)
    # cross problems for every pair, self problems once per class
    pot = sinkhorn_potentials(Cb, la, lb, eps=entreg, scaling=scaling, tol=tol, max_iter=max_iter)
    cross = sinkhorn_value(Cb, la, lb, pot, debias=False).reshape(k1, k2)
    s1 = self_transport_values(C11, w1, entreg, scaling, tol, max_iter)
    s2 = self_transport_values(C22, w2, entreg, scaling, tol, max_iter)
    W = (cross - 0.5 * s1[:, None] - 0.5 * s2[None, :]).clamp(min=0)
    return zero_diagonal(W) if same else W


_MOVED = {"INNER_CHOICES", "LabelDistances", "label_distances"}


def __getattr__(name: str):
    # moved to `dsflow.ot.label_models` (which imports this module: hence lazily)
    if name in _MOVED:
        from dsflow.ot import label_models

        return getattr(label_models, name)
    raise AttributeError(f"module 'dsflow.ot.labels' has no attribute {name!r}")
