"""Outer OT on the augmented cost ``feature_weight*||x-x'||^p + label_weight*W[y, y']``.

``outer``:

* ``"sinkhorn"``: debiased Sinkhorn divergence ``OT_e(a,b) - OT_e(a,a)/2 - OT_e(b,b)/2``
  (needs the ``ss`` and ``tt`` label blocks), ``e = entreg`` in the units of *our* cost.
* ``"sinkhorn_biased"``: ``OT_e(a, b)``.
* ``"exact"``: POT network simplex (``ot.emd2``), differentiable through POT's torch backend.

geomloss mapping: ``SamplesLoss("sinkhorn", p=2, blur=b)`` uses the cost ``|x-y|^2/2`` and
``eps = b^2``; with our cost ``|x-y|^2`` the same problem is ``entreg = 2 b^2`` and our value
is twice geomloss's (``OT_e(C) = 2 OT_{e/2}(C/2)``).  With a custom cost, ``blur = entreg^(1/p)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dsflow.ot.costs import ground_cost
from dsflow.ot.sinkhorn import SinkhornPotentials, sinkhorn_potentials, sinkhorn_value

__all__ = ["OUTER_CHOICES", "OuterResult", "augmented_cost", "augmented_ot"]

OUTER_CHOICES = ("sinkhorn", "sinkhorn_biased", "exact")


@dataclass
class OuterResult:
    value: torch.Tensor  # 0-d, the OT cost (p-th power of the distance)
    potentials: SinkhornPotentials | None = None
    coupling: torch.Tensor | None = None
    info: dict = field(default_factory=dict)


def augmented_cost(
    x1: torch.Tensor,
    idx1: torch.Tensor,
    x2: torch.Tensor,
    idx2: torch.Tensor,
    W: torch.Tensor | None,
    *,
    p: float = 2,
    feature_weight: float = 1.0,
    label_weight: float = 1.0,
) -> torch.Tensor:
    """``(n, m)`` cost ``feature_weight*||x1_i - x2_j||^p + label_weight*W[idx1_i, idx2_j]``.

    ``idx`` are class *rows* of ``W`` (0..k-1), not label values.  Differentiable in
    ``x1``, ``x2`` and ``W`` (the squared distance has an analytic backward, `sqdist`; the
    label term is two ``index_select``, whose backward is a vectorised ``index_add``).
    """
    C = ground_cost(x1, x2, p)  # a fresh tensor: the in-place updates below are safe
    if feature_weight != 1.0:
        C.mul_(feature_weight)
    if W is not None and label_weight != 0.0:
        labels = W.index_select(0, idx1).index_select(1, idx2)
        C = C.add_(labels, alpha=label_weight) if labels.dtype == C.dtype else C + label_weight * labels
    return C


def _uniform_or(w, n, like):
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    w = torch.as_tensor(w, dtype=like.dtype, device=like.device).reshape(-1)
    if w.numel() != n:
        raise ValueError(f"weights have {w.numel()} entries for {n} samples")
    if bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
        raise ValueError("weights must be finite and non-negative")
    s = w.sum()
    if float(s) <= 0:
        raise ValueError("weights sum to 0")
    return w / s


def augmented_ot(
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
    outer: str = "sinkhorn",
    p: float = 2,
    entreg: float = 0.1,
    feature_weight: float = 1.0,
    label_weight: float = 1.0,
    scaling: float = 0.5,
    tol: float = 1e-3,
    max_iter: int = 2000,
    init: SinkhornPotentials | None = None,
    target_self: tuple[torch.Tensor, torch.Tensor] | None = None,
    return_coupling: bool = False,
    overrelax: float = 1.8,
    cost_backend: str = "auto",
    chunk_size: int | None = None,
    memory_budget_gb: float | None = None,
) -> OuterResult:
    """OT on the augmented cost between ``(xs, ys_idx)`` and ``(xt, yt_idx)``.

    ``target_self = (g_self, value)`` supplies a cached solution of the target self problem
    (``value = <b, g_self>``, i.e. ``OT_e(b, b)/2``) so that it is not recomputed.

    ``cost_backend`` (entropic outers only): ``"tensorized"`` holds the ``n x m`` (and
    ``n x n``) costs; ``"online"`` rebuilds them by blocks of ``chunk_size`` rows in every pass
    (`dsflow.ot.online`: memory ``O(chunk_size * max(n, m))``, slower); ``"auto"`` picks
    tensorized when its matrices fit ``memory_budget_gb`` (``None``: half the free memory of
    the device).  A coupling is an ``n x m`` matrix: it needs the tensorized path.
    """
    if outer not in OUTER_CHOICES:
        raise ValueError(f"outer must be one of {OUTER_CHOICES}, got {outer!r}")
    n, m = xs.shape[0], xt.shape[0]
    a = _uniform_or(a, n, xs)
    b = _uniform_or(b, m, xs)
    kw = dict(p=p, feature_weight=feature_weight, label_weight=label_weight)
    if outer != "exact":
        from dsflow.ot.online import choose_cost_backend

        if return_coupling and cost_backend == "online":
            raise ValueError("return_coupling=True needs the n x m coupling in memory: use cost_backend='tensorized' "
                             "(or 'auto')")
        mode = "tensorized" if return_coupling else choose_cost_backend(
            cost_backend, n, m, xs.dtype, xs.device, self_x=outer == "sinkhorn",
            self_y=outer == "sinkhorn" and target_self is None, memory_budget_gb=memory_budget_gb)
        if mode == "online":
            return _augmented_ot_online(xs, ys_idx, xt, yt_idx, W_st, W_ss, W_tt, a, b, outer=outer, entreg=entreg,
                                        scaling=scaling, tol=tol, max_iter=max_iter, init=init,
                                        target_self=target_self, overrelax=overrelax, chunk_size=chunk_size, **kw)
    C_xy = augmented_cost(xs, ys_idx, xt, yt_idx, W_st, **kw)
    if outer == "exact":
        import ot

        value = ot.emd2(a, b, C_xy, numItermax=10_000_000)
        res = OuterResult(value=value)
        if return_coupling:
            res.coupling = ot.emd(a.detach(), b.detach(), C_xy.detach(), numItermax=10_000_000)
        return res
    debias = outer == "sinkhorn"
    C_xx = C_yy = None
    if debias:
        if label_weight != 0.0 and (W_ss is None or (W_tt is None and target_self is None)):
            raise ValueError("outer='sinkhorn' (debiased) needs the ss and tt label-distance blocks")
        # both arguments attached: sinkhorn_value halves the self-term gradients
        C_xx = augmented_cost(xs, ys_idx, xs, ys_idx, W_ss, **kw)
        if target_self is None:
            C_yy = augmented_cost(xt, yt_idx, xt, yt_idx, W_tt, **kw)
    log_a, log_b = a.log()[None], b.log()[None]
    pot = sinkhorn_potentials(
        C_xy[None], log_a, log_b, eps=entreg,
        C_xx=None if C_xx is None else C_xx[None], C_yy=None if C_yy is None else C_yy[None],
        scaling=scaling, tol=tol, max_iter=max_iter, init=init,
        g_self_fixed=None if target_self is None else target_self[0], overrelax=overrelax,
    )
    value = sinkhorn_value(
        C_xy[None], log_a, log_b, pot,
        C_xx=None if C_xx is None else C_xx[None], C_yy=None if C_yy is None else C_yy[None],
        debias=debias, self_y_value=None if target_self is None else target_self[1],
    )[0]
    res = OuterResult(value=value, potentials=pot)
    res.info.update(iterations=pot.iterations, schedule_steps=pot.schedule_steps, converged=pot.converged,
                    marginal_error=pot.error, cost_backend="tensorized", **pot.info)
    if return_coupling:
        with torch.no_grad():
            e = entreg
            logpi = (pot.f[0][:, None] + pot.g[0][None, :] - C_xy.detach()) / e + log_a[0][:, None] + log_b[0][None, :]
            res.coupling = logpi.exp()
    return res


def _augmented_ot_online(xs, ys_idx, xt, yt_idx, W_st, W_ss, W_tt, a, b, *, outer, entreg, scaling, tol, max_iter,
                         init, target_self, overrelax, chunk_size, p, feature_weight, label_weight) -> OuterResult:
    """`augmented_ot` with block costs (`dsflow.ot.online`): no ``n x m`` tensor is formed."""
    from dsflow.ot.online import BlockCost, online_potentials, online_value

    kw = dict(p=p, feature_weight=feature_weight, label_weight=label_weight)
    debias = outer == "sinkhorn"
    if debias and label_weight != 0.0 and (W_ss is None or (W_tt is None and target_self is None)):
        raise ValueError("outer='sinkhorn' (debiased) needs the ss and tt label-distance blocks")
    cxy = BlockCost(xs, ys_idx, xt, yt_idx, W_st, **kw)
    cxx = BlockCost(xs, ys_idx, xs, ys_idx, W_ss, same=True, **kw) if debias else None
    cyy = BlockCost(xt, yt_idx, xt, yt_idx, W_tt, same=True, **kw) if (debias and target_self is None) else None
    log_a, log_b = a.log(), b.log()
    pot = online_potentials(cxy, log_a, log_b, eps=entreg, cxx=cxx, cyy=cyy, scaling=scaling, tol=tol,
                            max_iter=max_iter, init=init, overrelax=overrelax, chunk_size=chunk_size,
                            g_self_fixed=None if target_self is None else target_self[0])
    value = online_value(cxy, log_a, log_b, pot, cxx=cxx, cyy=cyy, debias=debias,
                         self_y_value=None if target_self is None else target_self[1], chunk_size=chunk_size)
    res = OuterResult(value=value, potentials=pot)
    res.info.update(iterations=pot.iterations, schedule_steps=pot.schedule_steps, converged=pot.converged,
                    marginal_error=pot.error, **pot.info)
    return res
