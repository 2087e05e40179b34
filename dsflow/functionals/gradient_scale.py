"""``scale_gradient(x, factor)``: the identity forward, the gradient multiplied per row backward.

A weighted sum of a WoW term (particle ``i`` of mass ``m_i``, velocity ``grad_i / m_i``) and a
particle average (mass ``1/n``, velocity ``n grad_i``) has no single division that turns its
gradient into the sum of the terms' velocities; feeding the particle-average terms
``scale_gradient(x, n m_i)`` makes their gradient ``n m_i grad_i``, which the engine's division
by ``m_i`` turns back into ``n grad_i`` -- one backward pass, no second evaluation.
"""

from __future__ import annotations

import torch


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor):
        ctx.save_for_backward(factor)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        (factor,) = ctx.saved_tensors
        return g * factor.reshape((-1,) + (1,) * (g.ndim - 1)), None


def scale_gradient(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged; ``d/dx`` of anything computed from the result is multiplied by
    ``factor[i]`` on row ``i`` (``factor``: ``(n,)``, no gradient)."""
    if factor.ndim != 1 or factor.shape[0] != x.shape[0]:
        raise ValueError(f"scale_gradient: factor must be ({x.shape[0]},), got {tuple(factor.shape)}")
    return _ScaleGradient.apply(x, factor.detach())


__all__ = ["scale_gradient"]
