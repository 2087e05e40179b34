"""Ground costs between feature vectors: ``||x - x'||^p`` (squared Euclidean for p=2)."""

from __future__ import annotations

import torch

__all__ = ["sqdist", "ground_cost"]


def sqdist(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(..., n, m)`` by the GEMM expansion, clamped at 0.

    Works for ``(n, d), (m, d)`` and batched ``(B, n, d), (B, m, d)``.  The expansion
    ``|x|^2 + |x'|^2 - 2 x.x'`` is one matrix product (fast) and its gradient is exact
    algebra (no square root), so coincident points are harmless.
    """
    if x1.shape[-1] != x2.shape[-1]:
        raise ValueError(f"feature dimensions differ: {x1.shape[-1]} vs {x2.shape[-1]}")
    n1 = (x1 * x1).sum(-1)
    n2 = (x2 * x2).sum(-1)
    return (n1[..., :, None] + n2[..., None, :] - 2.0 * (x1 @ x2.mT)).clamp(min=0)


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
