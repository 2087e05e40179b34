"""Online (chunked) outer Sinkhorn: the augmented cost is never held as an ``n x m`` matrix.

The tensorized solver (`dsflow.ot.sinkhorn`) keeps ``C_xy``, ``C_xx`` (and its kernels) in
memory: ``n = m = 60 000`` in float32 needs ~14 GiB *per matrix*.  Here the cost is described
by its factors (the features ``x1, x2`` and the ``(k x k')`` label-distance table ``W`` indexed
by class rows) and rebuilt by blocks of ``rows`` rows whenever a pass needs it, as KeOps'
"online" mode does (KeOps is not a dependency):

* a c-transform ``f_i = -eps log sum_j exp(h_j - C_ij/eps)`` is one pass over row blocks
  (each block ``(rows, m)`` is one GEMM, an index gather of the label table, and a
  log-sum-exp), so memory is ``O(rows * m + (n + m) d)``;
* the Sinkhorn iterations are the log-domain ones (no kernel can be stored, so the tensorized
  scaling-domain trick does not apply), with the same epsilon-scaling schedule, warm start,
  over-relaxation, stopping rule and symmetric self-problem update as the tensorized path, so
  both converge to the same potentials (to the tolerance);
* the value is rebuilt from the detached potentials by one differentiable c-transform
  (envelope theorem, as in the tensorized path) whose backward is chunked too
  (`_OnlineSoftminValue`): it recomputes each block under autograd, forms the block of the
  plan ``P_ij = exp(h_j - C_ij/eps - lse_i)`` and back-propagates ``a_i P_ij`` into ``x1``,
  ``x2`` and ``W`` -- one block at a time.

The price is time: every pass recomputes the ``rows x m x d`` products (a tensorized
iteration is a matrix-vector product on a stored kernel).  `choose_cost_backend` therefore
keeps the tensorized path whenever its matrices fit a memory budget (``cost_backend="auto"``).
"""

from __future__ import annotations

import math
import os

import torch
from torch.autograd.function import once_differentiable

from dsflow.ot.costs import ground_cost
from dsflow.ot.sinkhorn import (
    _EXP_FLOOR,
    SinkhornPotentials,
    _half_grad,
    _logsumexp_last,
    epsilon_schedule,
)

__all__ = ["COST_BACKENDS", "BlockCost", "choose_cost_backend", "tensorized_bytes", "default_memory_budget",
           "online_potentials", "online_value", "online_self_potential", "default_rows"]

COST_BACKENDS = ("auto", "tensorized", "online")

#: elements per cost block when ``chunk_size`` is not given: 2^24 float32 = 64 MiB per block
#: (a few block-sized temporaries live at once); 8x more on CUDA, where larger GEMMs pay
_BLOCK_ELEMS_CPU = 1 << 24
_BLOCK_ELEMS_CUDA = 1 << 27


def _rows(cost: "BlockCost", chunk: int | None, device) -> int:
    return int(min(chunk, cost.n)) if chunk else default_rows(cost.n, cost.m, device)


def default_rows(n: int, m: int, device) -> int:
    """Rows per block so that a ``(rows, m)`` block holds about `_BLOCK_ELEMS_*` entries."""
    elems = _BLOCK_ELEMS_CUDA if torch.device(device).type == "cuda" else _BLOCK_ELEMS_CPU
    return int(max(1, min(n, elems // max(m, 1))))


class BlockCost:
    """``C_ij = fw * ||x1_i - x2_j||^p + lw * W[idx1_i, idx2_j]``, evaluated by row blocks.

    ``same=True`` marks a self cost (``x1 is x2``): its feature part has an exactly zero
    diagonal, written, as `dsflow.ot.costs.sqdist` does for the tensorized self cost (so the
    two paths see the same matrix up to the GEMM's rounding).
    """

    def __init__(self, x1, idx1, x2, idx2, W, *, p=2.0, feature_weight=1.0, label_weight=1.0, same=False):
        if x1.shape[-1] != x2.shape[-1]:
            raise ValueError(f"feature dimensions differ: {x1.shape[-1]} vs {x2.shape[-1]}")
        self.x1, self.idx1, self.x2, self.idx2 = x1, idx1, x2, idx2
        self.W = W if (W is not None and label_weight != 0.0) else None
        self.p, self.fw, self.lw, self.same = float(p), float(feature_weight), float(label_weight), bool(same)

    @property
    def n(self) -> int:
        return self.x1.shape[0]

    @property
    def m(self) -> int:
        return self.x2.shape[0]

    @property
    def T(self) -> "BlockCost":
        """The transposed cost ``C^T`` (a self cost is symmetric: itself)."""
        if self.same:
            return self
        return BlockCost(self.x2, self.idx2, self.x1, self.idx1, None if self.W is None else self.W.mT,
                         p=self.p, feature_weight=self.fw, label_weight=self.lw)

    def block(self, r0: int, r1: int, x1b=None, x2=None, W=None) -> torch.Tensor:
        """Rows ``r0:r1`` of the cost, ``(r1 - r0, m)``; differentiable in the tensors given
        (``x1b`` = rows ``r0:r1`` of ``x1``), defaults are the stored ones."""
        x1b = self.x1[r0:r1] if x1b is None else x1b
        x2 = self.x2 if x2 is None else x2
        W = self.W if W is None else W
        C = ground_cost(x1b, x2, self.p)  # a fresh tensor: in-place updates are safe
        if self.same:
            C.diagonal(offset=r0).zero_()  # entries (i, r0 + i): a point's cost to itself
        if self.fw != 1.0:
            C.mul_(self.fw)
        if W is not None:
            lab = W.index_select(0, self.idx1[r0:r1]).index_select(1, self.idx2)
            C = C.add_(lab, alpha=self.lw) if lab.dtype == C.dtype else C + self.lw * lab
        return C

    def bound(self) -> float:
        """An upper bound of ``max C`` (the epsilon-scaling start), in O((n + m) d).

        ``||x - x'|| <= diagonal of the joint bounding box``; no pass over the blocks.  It can
        exceed the tensorized path's exact ``max C``: the schedule then starts one or two levels
        higher, which changes the iterates, not the fixed point."""
        with torch.no_grad():
            lo = torch.minimum(self.x1.amin(0), self.x2.amin(0))
            hi = torch.maximum(self.x1.amax(0), self.x2.amax(0))
            diam = float((hi - lo).double().norm())
            b = self.fw * diam ** self.p
            if self.W is not None:
                b += self.lw * float(self.W.detach().amax())
        return b

    def finite(self) -> bool:
        ok = bool(torch.isfinite(self.x1).all()) and bool(torch.isfinite(self.x2).all())
        if self.W is not None:
            ok = ok and bool(torch.isfinite(self.W).all())
        return ok and math.isfinite(self.bound())


@torch.no_grad()
def _ctransform(cost: BlockCost, h: torch.Tensor, eps: float, rows: int) -> torch.Tensor:
    """``f_i = -eps log sum_j exp(h_j - C_ij/eps)`` for ``h`` of shape ``(m,)``, by row blocks."""
    n = cost.n
    out = torch.empty(n, dtype=h.dtype, device=h.device)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        z = cost.block(r0, r1).mul_(-1.0 / eps).add_(h[None, :])
        out[r0:r1] = _logsumexp_last(z, inplace=True).mul_(-eps)
    return out


def _masked_err(new, old, log_w) -> float:
    d = torch.where(log_w > -float("inf"), new - old, torch.zeros_like(new))
    return float(d.abs().amax())


@torch.no_grad()
def _solve_self_online(cost: BlockCost, log_w, eps_list, tol, max_iter, init, rows):
    """Symmetric ``OT_eps(w, w; C)``: the averaged fixed point of `dsflow.ot.sinkhorn._solve_self`."""
    if init is None:
        f = _ctransform(cost, log_w, eps_list[0], rows)
        levels = eps_list
    else:
        f = init.clone()
        levels = eps_list[-1:]
    for e in levels[:-1]:
        f = 0.5 * (f + _ctransform(cost, log_w + f / e, e, rows))
    e = levels[-1]
    it, err = 0, float("inf")
    while it < max_iter:
        f_new = 0.5 * (f + _ctransform(cost, log_w + f / e, e, rows))
        err = float((f_new - f).abs().amax()) * 2.0 / e
        f = f_new
        it += 1
        if err < tol or not math.isfinite(err):
            break
    return f, it, err


def _nan(like):
    return torch.full_like(like, float("nan"))


@torch.no_grad()
def online_potentials(
    cxy: BlockCost,
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    *,
    eps: float,
    cxx: BlockCost | None = None,
    cyy: BlockCost | None = None,
    scaling: float = 0.5,
    tol: float = 1e-3,
    max_iter: int = 2000,
    init: SinkhornPotentials | None = None,
    g_self_fixed: torch.Tensor | None = None,
    overrelax: float = 1.8,
    chunk_size: int | None = None,
) -> SinkhornPotentials:
    """`dsflow.ot.sinkhorn.sinkhorn_potentials` for block costs; 1-D log-weights ``(n,)``, ``(m,)``.

    Returns potentials shaped ``(1, n)`` / ``(1, m)`` like the tensorized path, so warm starts
    and checkpoints carry over between the two back-ends.  ``chunk_size``: rows per cost block
    (``None``: about 2^24 entries per block on CPU, 2^27 on CUDA).
    """
    if eps <= 0:
        raise ValueError(f"sinkhorn: eps (entreg) must be > 0, got {eps}")
    if not 1.0 <= overrelax < 2.0:
        raise ValueError(f"sinkhorn: overrelax must be in [1, 2), got {overrelax}")
    n, m = cxy.n, cxy.m
    dev = log_a.device
    rows = _rows(cxy, chunk_size, dev)
    rows_t = _rows(cxy.T, chunk_size, dev)
    if not cxy.finite() or (cyy is not None and not cyy.finite()):
        out = SinkhornPotentials(f=_nan(log_a)[None], g=_nan(log_b)[None], converged=False, error=float("nan"),
                                 eps=eps, info={"non_finite_cost": True, "cost_backend": "online"})
        if cxx is not None:
            out.f_self = _nan(log_a)[None]
        if g_self_fixed is not None:
            out.g_self = g_self_fixed
        elif cyy is not None:
            out.g_self = _nan(log_b)[None]
        return out
    eps0 = cxy.bound()
    sched = epsilon_schedule(max(eps0, eps), eps, scaling)
    ct = cxy.T
    warm = (init is not None and init.f is not None and tuple(init.f.shape) == (1, n) and tuple(init.g.shape) == (1, m)
            and init.f.dtype == log_a.dtype and init.f.device == log_a.device)
    if warm:
        f, g = init.f[0].clone(), init.g[0].clone()
        f1 = _ctransform(cxy, log_b + g / eps, eps, rows)
        delta = _masked_err(f1, f, log_a)
        levels = epsilon_schedule(min(max(eps0, eps), max(delta, eps)), eps, scaling) if delta > eps else sched[-1:]
    else:
        e0 = sched[0]
        g = _ctransform(ct, log_a, e0, rows_t)
        f = _ctransform(cxy, log_b, e0, rows)
        levels = sched
    steps = 0
    for e in levels[:-1]:  # one alternating update per level, as the tensorized path
        f = _ctransform(cxy, log_b + g / e, e, rows)
        g = _ctransform(ct, log_a + f / e, e, rows_t)
        steps += 1
    e = levels[-1]
    omega = float(overrelax)
    it, err, best = 0, float("inf"), float("inf")
    while it < max_iter:
        fT = _ctransform(cxy, log_b + g / e, e, rows)
        err = _masked_err(fT, f, log_a) / e  # log row-marginal error of the current (f, g)
        if not math.isfinite(err):
            break
        best = min(best, err)
        if omega != 1.0 and err > 10.0 * best:  # over-relaxation misbehaving: plain Sinkhorn
            omega = 1.0
        f_new = fT if omega == 1.0 else f + omega * (fT - f)
        gT = _ctransform(ct, log_a + f_new / e, e, rows_t)
        g = gT if omega == 1.0 else g + omega * (gT - g)
        f = f_new
        it += 1
        if err < tol:
            break
    out = SinkhornPotentials(f=f[None], g=g[None], iterations=it, schedule_steps=steps, converged=err < tol,
                             error=err, eps=eps, info={"cost_backend": "online", "chunk_rows": rows})
    if cxx is not None:
        init_f = init.f_self[0] if (warm and init.f_self is not None and tuple(init.f_self.shape) == (1, n)) else None
        fs, itx, errx = _solve_self_online(cxx, log_a, sched, tol, max_iter, init_f, _rows(cxx, chunk_size, dev))
        out.f_self = fs[None]
        out.info["self_x_iterations"] = itx
        out.converged = out.converged and errx < tol
    if g_self_fixed is not None:
        out.g_self = g_self_fixed
    elif cyy is not None:
        init_g = init.g_self[0] if (warm and init.g_self is not None and tuple(init.g_self.shape) == (1, m)) else None
        gs, ity, erry = _solve_self_online(cyy, log_b, sched, tol, max_iter, init_g, _rows(cyy, chunk_size, dev))
        out.g_self = gs[None]
        out.info["self_y_iterations"] = ity
        out.converged = out.converged and erry < tol
    return out


class _OnlineSoftminValue(torch.autograd.Function):
    """``v = sum_i w_i f_i`` with ``f_i = -eps log sum_j exp(h_j - C_ij/eps)``, ``C`` a `BlockCost`.

    ``h`` (the detached potential term) and ``w`` carry no gradient (envelope theorem).  The
    forward saves only the row log-normalisers ``lse`` ``(n,)``; the backward rebuilds each
    block of ``C`` under autograd and back-propagates ``grad * w_i * P_ij`` (``P`` the
    row-softmax, floored at ``e^-80`` and shifted to exact zeros as in
    `dsflow.ot.sinkhorn._Softmin`) into ``x1``, ``x2`` and ``W``, so no ``n x m`` tensor
    exists in either direction.  For a self cost ``x1`` and ``x2`` are the same tensor and
    autograd adds the two gradients.
    """

    @staticmethod
    def forward(ctx, x1, x2, W, cost, h, w, eps, rows):
        n = cost.n
        lse = torch.empty(n, dtype=h.dtype, device=h.device)
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            z = cost.block(r0, r1).mul_(-1.0 / eps).add_(h[None, :])
            lse[r0:r1] = _logsumexp_last(z, inplace=True)
        f = -eps * lse
        ctx.save_for_backward(h, w, lse)
        ctx.cost, ctx.eps, ctx.rows = cost, eps, rows
        return (w * torch.where(w > 0, f, torch.zeros_like(f))).sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        h, w, lse = ctx.saved_tensors
        cost, e, rows = ctx.cost, ctx.eps, ctx.rows
        need_x1, need_x2, need_W = ctx.needs_input_grad[:3]
        need_W = need_W and cost.W is not None
        gx1 = torch.zeros_like(cost.x1) if need_x1 else None
        gx2 = torch.zeros_like(cost.x2) if need_x2 else None
        gW = torch.zeros_like(cost.W) if need_W else None
        if not (need_x1 or need_x2 or need_W):
            return None, None, None, None, None, None, None, None
        x2l = cost.x2.detach().requires_grad_(need_x2)
        Wl = cost.W.detach().requires_grad_(need_W) if cost.W is not None else None
        wg = torch.where(w > 0, w, torch.zeros_like(w)) * grad
        n = cost.n
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            x1b = cost.x1[r0:r1].detach().requires_grad_(need_x1)
            with torch.enable_grad():
                Cb = cost.block(r0, r1, x1b=x1b, x2=x2l, W=Wl)
            with torch.no_grad():
                P = torch.add(h[None, :], Cb.detach(), alpha=-1.0 / e).sub_(lse[r0:r1, None])
                P.clamp_(min=_EXP_FLOOR).exp_().sub_(math.exp(_EXP_FLOOR)).mul_(wg[r0:r1, None])
            inputs = [t for t, need in ((x1b, need_x1), (x2l, need_x2), (Wl, need_W)) if need]
            grads = list(torch.autograd.grad(Cb, inputs, P, allow_unused=True))
            if need_x1:
                g = grads.pop(0)
                if g is not None:
                    gx1[r0:r1] += g
            if need_x2:
                g = grads.pop(0)
                if g is not None:
                    gx2 += g
            if need_W:
                g = grads.pop(0)
                if g is not None:
                    gW += g
        return gx1, gx2, gW, None, None, None, None, None


def _softmin_value(cost: BlockCost, h, w, eps, rows) -> torch.Tensor:
    """``<w, c-transform of h>`` (0-d), differentiable in the cost's tensors (chunked backward)."""
    W = cost.W if cost.W is not None else torch.zeros(0, dtype=h.dtype, device=h.device)
    return _OnlineSoftminValue.apply(cost.x1, cost.x2, W, cost, h.detach(), w.detach(), float(eps), int(rows))


def _wsum(log_w, v):
    w = log_w.exp()
    return (w * torch.where(w > 0, v, torch.zeros_like(v))).sum()


def online_value(
    cxy: BlockCost,
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    pot: SinkhornPotentials,
    *,
    cxx: BlockCost | None = None,
    cyy: BlockCost | None = None,
    debias: bool = True,
    self_y_value: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """0-d value from converged potentials: `dsflow.ot.sinkhorn.sinkhorn_value` for block costs.

    Same formula: ``<a, f(C_xy, g)> + <b, g>`` minus the self terms ``<a, f_aa>`` (half gradient)
    and ``<b, g_bb>`` (or ``self_y_value``).
    """
    e = pot.eps
    dev = log_a.device
    a = log_a.exp()
    value = _softmin_value(cxy, log_b + pot.g[0] / e, a, e, _rows(cxy, chunk_size, dev)) + _wsum(log_b, pot.g[0])
    if not debias:
        return value
    if pot.f_self is None or cxx is None:
        raise ValueError("online_value: debias needs the source self cost and its potential")
    f_aa = _softmin_value(cxx, log_a + pot.f_self[0] / e, a, e, _rows(cxx, chunk_size, dev))
    value = value - _half_grad(f_aa)
    if self_y_value is not None:
        return value - self_y_value.reshape(())
    if cyy is None or pot.g_self is None:
        raise ValueError("online_value: debias needs the target self cost (or self_y_value) and its potential")
    g_bb = _softmin_value(cyy, log_b + pot.g_self[0] / e, log_b.exp(), e, _rows(cyy, chunk_size, dev))
    return value - _half_grad(g_bb)


@torch.no_grad()
def online_self_potential(cost: BlockCost, log_w, *, eps, scaling=0.5, tol=1e-3, max_iter=2000, chunk_size=None):
    """`dsflow.ot.sinkhorn.self_potential` for a block cost: ``(g (1, m), half_value (1,), iterations)``."""
    rows = _rows(cost, chunk_size, log_w.device)
    sched = epsilon_schedule(max(cost.bound(), eps), eps, scaling)
    g, it, _ = _solve_self_online(cost, log_w, sched, tol, max_iter, None, rows)
    f = _ctransform(cost, log_w + g / eps, eps, rows)
    half = _wsum(log_w, f)
    return g[None], half.reshape(1), it


# ---------------------------------------------------------------------------- choosing
def tensorized_bytes(n: int, m: int, itemsize: int, *, self_x: bool, self_y: bool) -> int:
    """Approximate peak bytes of the tensorized outer solve.

    Counted: ``C_xy``, the scaling-domain kernel and the c-transform scratch (3 ``n x m``);
    with the debiased divergence ``C_xx`` and its scratch plus the self cost's backward
    (``G + G^T``) (3 ``n x n``), and, when the target self problem is not cached, 2 ``m x m``.
    Measured against this estimate in docs/benchmarks.md."""
    total = 3 * n * m
    if self_x:
        total += 3 * n * n
    if self_y:
        total += 2 * m * m
    return int(total * itemsize)


def default_memory_budget(device) -> int:
    """Half of what is free now: CUDA ``mem_get_info``, CPU ``MemAvailable`` (/proc/meminfo);
    8 GiB where neither can be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 2)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    if hasattr(os, "sysconf"):
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
        except (ValueError, OSError):
            pass
    return 8 << 30


def choose_cost_backend(mode: str, n: int, m: int, dtype, device, *, self_x: bool, self_y: bool,
                        memory_budget_gb: float | None = None) -> str:
    """``"tensorized"`` or ``"online"`` for ``mode`` in `COST_BACKENDS` (``auto``: tensorized when
    `tensorized_bytes` fits ``memory_budget_gb``, or `default_memory_budget` when ``None``)."""
    if mode not in COST_BACKENDS:
        raise ValueError(f"cost_backend must be one of {COST_BACKENDS}, got {mode!r}")
    if mode != "auto":
        return mode
    itemsize = torch.empty((), dtype=dtype).element_size()
    need = tensorized_bytes(n, m, itemsize, self_x=self_x, self_y=self_y)
    budget = default_memory_budget(device) if memory_budget_gb is None else float(memory_budget_gb) * (1 << 30)
    return "tensorized" if need <= budget else "online"
