"""The outer OTDD problem solved by geomloss (``SamplesLoss(backend="tensorized")``).

dsflow's own solver (`dsflow.ot.sinkhorn`) is the default because it converges to a
tolerance and warm-starts across flow steps; this backend is the reference implementation
the paper used, kept for comparison and for users who want geomloss's exact schedule.

geomloss sees each sample as its features with the row of its class appended as one more
coordinate; a custom cost reads that coordinate back and adds the label-to-label term, so
the cost geomloss optimises is exactly dsflow's augmented cost
``feature_weight * ||x - x'||^p + label_weight * W[y, y']`` (no factor 1/2: with a custom
cost geomloss uses ``eps = blur^p``, hence ``blur = entreg^(1/p)``).
"""

from __future__ import annotations

import torch

from dsflow.ot.costs import ground_cost


def _label_table(W_st, W_ss, W_tt, debias: bool) -> torch.Tensor:
    """One ``(k + k') x (k + k')`` table over source rows ``0..k-1`` and target rows ``k..``."""
    k, kk = W_st.shape
    if debias and (W_ss is None or W_tt is None):
        raise ValueError("the debiased Sinkhorn divergence needs the source-source and target-target label distances")
    W_ss = W_ss if W_ss is not None else W_st.new_zeros(k, k)
    W_tt = W_tt if W_tt is not None else W_st.new_zeros(kk, kk)
    return torch.cat([torch.cat([W_ss, W_st], 1), torch.cat([W_st.mT, W_tt], 1)], 0)


def geomloss_augmented_ot(
    xs: torch.Tensor,
    ys_idx: torch.Tensor,
    xt: torch.Tensor,
    yt_idx: torch.Tensor,
    W_st: torch.Tensor | None,
    W_ss: torch.Tensor | None = None,
    W_tt: torch.Tensor | None = None,
    *,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    p: float = 2,
    entreg: float = 0.1,
    feature_weight: float = 1.0,
    label_weight: float = 1.0,
    debias: bool = True,
    scaling: float = 0.5,
) -> torch.Tensor:
    """Entropic OT on the augmented cost, by geomloss; a 0-d tensor, differentiable in ``xs, xt``.

    ``debias=True`` is the Sinkhorn divergence ``OT(a,b) - OT(a,a)/2 - OT(b,b)/2`` (needs
    ``W_ss`` and ``W_tt``); ``ys_idx`` / ``yt_idx`` are class rows of ``W_st``.  ``W_st=None``
    is feature-only OT.  ``scaling`` is geomloss's epsilon-scaling factor (closer to 1: more
    iterations, closer to convergence).
    """
    from geomloss import SamplesLoss

    if entreg <= 0:
        raise ValueError(f"entreg must be > 0 for the entropic outer problem, got {entreg}")
    n, m = xs.shape[0], xt.shape[0]
    if W_st is None:  # feature-only OT: one dummy class on each side
        W_st = xs.new_zeros(1, 1)
        W_ss = W_tt = xs.new_zeros(1, 1) if debias else None
        ys_idx, yt_idx = ys_idx.new_zeros(n), yt_idx.new_zeros(m)
    k = W_st.shape[0]
    table = _label_table(W_st, W_ss, W_tt, debias).to(xs)

    def cost(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:  # (B, N, d+1), (B, M, d+1)
        lx, ly = X[..., -1].long(), Y[..., -1].long()
        C = ground_cost(X[0, :, :-1], Y[0, :, :-1], p)[None]
        if feature_weight != 1.0:
            C = feature_weight * C
        if label_weight != 0.0:
            C = C + label_weight * table[lx[0][:, None], ly[0][None, :]][None]
        return C

    X = torch.cat([xs, ys_idx.to(xs)[:, None]], 1)
    Y = torch.cat([xt, (yt_idx + k).to(xt)[:, None]], 1)
    with torch.no_grad():  # an upper bound of sqrt(max cost): where epsilon-scaling starts
        span = torch.cat([xs, xt]).detach()
        diam2 = feature_weight * float((span.amax(0) - span.amin(0)).norm()) ** p + label_weight * float(table.max())
    loss = SamplesLoss(
        "sinkhorn", p=p, blur=entreg ** (1.0 / p), scaling=scaling, debias=debias, cost=cost,
        diameter=max(diam2, entreg) ** (1.0 / p), backend="tensorized",
    )
    a = torch.full((n,), 1.0 / n, dtype=xs.dtype, device=xs.device) if a is None else a
    b = torch.full((m,), 1.0 / m, dtype=xt.dtype, device=xt.device) if b is None else b
    return loss(a, X, b, Y)
