"""Ground costs between feature vectors: ``||x - x'||^p`` (squared Euclidean for p=2)."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["sqdist", "ground_cost", "full_precision_matmul"]


@contextlib.contextmanager
def full_precision_matmul(device):
    """IEEE float32 products inside the block: no TF32 (CUDA) and no autocast (any device).

    The GEMM expansion ``|x|^2 + |y|^2 - 2 x.y`` cancels: for near-duplicate points the
    result is far smaller than its terms, so the product's relative error becomes the cost's
    absolute error.  TF32 keeps 10 mantissa bits (~5e-4 relative), bf16 8 (~4e-3): on MNIST
    pixels (``|x|^2 ~ 100``) that is an error ~0.1-1 in the cost of a near-duplicate pair,
    against ``entreg`` 0.1-19.  torch's default is already IEEE (``allow_tf32=False``); this
    keeps the cost at float32 accuracy when a caller (a training script, a library) switched TF32 or
    autocast on.  ``scripts/precision_policy.py`` measures the errors.
    """
    dev = torch.device(device)
    autocast = torch.autocast(dev.type, enabled=False) if torch.is_autocast_enabled(dev.type) else contextlib.nullcontext()
    if dev.type != "cuda":
        with autocast:
            yield
        return
    flag = torch.backends.cuda.matmul
    prev = flag.allow_tf32
    flag.allow_tf32 = False
    try:
        with autocast:
            yield
    finally:
        flag.allow_tf32 = prev


class _SqDist(torch.autograd.Function):
    """``||x1_i - x2_j||^2`` by the GEMM expansion, with an analytic backward.

    For an upstream gradient ``G``: ``d/dx1 = 2 (diag(G 1) x1 - G x2)`` and
    ``d/dx2 = 2 (diag(G^T 1) x2 - G^T x1)``.  For a self cost (``x1 is x2``) the two terms
    are one GEMM with ``G + G^T``.  Autograd through the expansion kept the clamp mask and the
    broadcast sums; the analytic gradient needs no clamp mask (it vanishes where the clamp
    acts, at ``x1_i = x2_j``).

    A self cost has an exactly zero diagonal *by construction* (it is written, not computed):
    ``|x|^2 + |x|^2 - 2 x.x`` rounds differently in a GEMM kernel than in the row norms
    (FMA, blocking, AVX-512 vs AVX2), leaving ~1e-13 on the diagonal on some machines.  The
    analytic backward already gives the diagonal no gradient (``S_ii x_i - S_ii x_i = 0``),
    so zeroing it keeps forward and backward consistent.
    """

    @staticmethod
    def forward(ctx, x1, x2, same: bool):
        with full_precision_matmul(x1.device):
            return _SqDist._forward(ctx, x1, x2, same)

    @staticmethod
    def _forward(ctx, x1, x2, same: bool):
        n1 = (x1 * x1).sum(-1)
        n2 = n1 if same else (x2 * x2).sum(-1)
        C = torch.add(n1[..., :, None], n2[..., None, :])
        C = C.addmm_(x1, x2.mT, alpha=-2.0) if C.ndim == 2 else C.baddbmm_(x1, x2.mT, alpha=-2.0)
        ctx.save_for_backward(x1, x2)
        ctx.same = same
        C.clamp_(min=0)
        if same:
            C.diagonal(dim1=-2, dim2=-1).zero_()
        return C

    @staticmethod
    def backward(ctx, G):
        with full_precision_matmul(G.device):
            return _SqDist._backward(ctx, G)

    @staticmethod
    def _backward(ctx, G):
        x1, x2 = ctx.saved_tensors
        if ctx.same:
            S = G + G.mT
            return 2.0 * (S.sum(-1)[..., None] * x1 - S @ x1), None, None
        g1 = 2.0 * (G.sum(-1)[..., None] * x1 - G @ x2) if ctx.needs_input_grad[0] else None
        g2 = 2.0 * (G.sum(-2)[..., None] * x2 - G.mT @ x1) if ctx.needs_input_grad[1] else None
        return g1, g2, None


def sqdist(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(..., n, m)`` by the GEMM expansion, clamped at 0.

    Works for ``(n, d), (m, d)`` and batched ``(B, n, d), (B, m, d)``.  The expansion
    ``|x|^2 + |x'|^2 - 2 x.x'`` is one matrix product (fast); the gradient is written by hand
    (`_SqDist`: exact algebra, no square root, so coincident points are harmless; one GEMM
    for ``sqdist(x, x)``).  ``sqdist(x, x)`` (the same tensor object) has an exactly zero
    diagonal on every machine: a point's cost to itself is 0, so self problems are exact.
    """
    if x1.shape[-1] != x2.shape[-1]:
        raise ValueError(f"feature dimensions differ: {x1.shape[-1]} vs {x2.shape[-1]}")
    if x1.shape[:-2] != x2.shape[:-2] or x1.ndim not in (2, 3):
        # broadcast batches: plain autograd through the expansion (its backward products may
        # run under TF32 if the caller enabled it; the forward does not)
        n1 = (x1 * x1).sum(-1)
        n2 = (x2 * x2).sum(-1)
        with full_precision_matmul(x1.device):
            prod = x1 @ x2.mT
        C = (n1[..., :, None] + n2[..., None, :] - 2.0 * prod).clamp(min=0)
        if x1 is x2:
            eye = torch.eye(C.shape[-1], dtype=torch.bool, device=C.device)
            C = C.masked_fill(eye, 0.0)
        return C
    return _SqDist.apply(x1, x2, x1 is x2)


def ground_cost(x1: torch.Tensor, x2: torch.Tensor, p: float = 2) -> torch.Tensor:
    """``||x1_i - x2_j||^p``.  For ``p != 2`` the root uses a zero (sub)gradient at 0."""
    if p <= 0:
        raise ValueError(f"p must be > 0, got {p}")
    D2 = sqdist(x1, x2)
    if p == 2:
        return D2
    tiny = torch.finfo(D2.dtype).tiny
    pos = D2 > tiny
    root = torch.where(pos, D2.clamp(min=tiny), torch.ones_like(D2)) ** (p / 2.0)
    return torch.where(pos, root, torch.zeros_like(D2))
