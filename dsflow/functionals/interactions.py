"""Interaction energies ``W(rho) = (1/2) iint W(z - z') d rho(z) d rho(z')`` (paper section 5).

For particles with uniform weights the value is ``(1 / (2 n^2)) sum_{i,j} W(z_i - z_j)``
(all ordered pairs, diagonal included), so the gradient with respect to ``x_i`` is
``(1/n) * (1/n) sum_j grad W(x_i - x_j)`` = ``(1/n) grad (W * rho)(x_i)``: the first
variation's gradient scaled by ``1/n`` as for every dsflow functional.

Label dependence is through a class-pair weight ``c(y, y')`` (1 for different classes and
0 for equal classes by default, i.e. the paper's indicator ``1[y != y']``), so
``W(z - z') = c(y, y') * k(||x - x'||)``.

Memory: pairs are processed in row blocks so that no block holds more than
``chunk_elements`` pair values; when autograd is on and there is more than one block each
block is recomputed in the backward pass (gradient checkpointing), so memory stays
``O(chunk_elements + n d)`` whatever ``n`` is.  Squared distances use the matmul expansion
``|x|^2 + |x'|^2 - 2 x.x'`` (clamped at 0); the distance ``sqrt`` is guarded so that its
gradient at coincident points (the diagonal ``i = j`` in particular) is the finite
subgradient 0 instead of ``inf * 0 = NaN``.
"""

from __future__ import annotations

from typing import Mapping

from dsflow.state import ParticleState
from dsflow.functionals.base import Functional
from dsflow.data.common import to_plain

#: Default block budget: pair values per block (x ~5 intermediates of this size, float32).
DEFAULT_CHUNK_ELEMENTS = 1 << 22


def _safe_sqrt(r2, tiny: float = 0.0):
    """``sqrt(r2)`` with gradient 0 (not inf) where ``r2 <= tiny``."""
    import torch

    positive = r2 > tiny
    return torch.where(positive, torch.where(positive, r2, torch.ones_like(r2)).sqrt(), torch.zeros_like(r2))


def _recomputed(fn, *inputs):
    """``fn(*inputs)`` (a 0-d tensor) without keeping its intermediates for the backward
    pass: they are recomputed there (gradient checkpointing, without importing
    ``torch.utils.checkpoint``, which is slow to import)."""
    import torch

    class _Recompute(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            ctx.save_for_backward(*args)
            with torch.no_grad():
                return fn(*args)

        @staticmethod
        def backward(ctx, grad_out):
            args = ctx.saved_tensors
            wants = ctx.needs_input_grad
            with torch.enable_grad():
                detached = [a.detach().requires_grad_(w) for a, w in zip(args, wants)]
                out = fn(*detached)
                chosen = [a for a, w in zip(detached, wants) if w]
                grads = iter(torch.autograd.grad(out, chosen, grad_out, allow_unused=True))
            return tuple(next(grads) if w else None for w in wants)

    return _Recompute.apply(*inputs)


class PairwiseInteraction(Functional):
    """Base class: ``(1/(2 n^2)) sum_{i,j} c(y_i, y_j) k(x_i, x_j)``.

    Subclasses implement :meth:`kernel` on a block of squared distances.

    Parameters
    ----------
    pair_weights:
        Optional class-pair weights ``c(y, y')`` overriding the default ``1[y != y']``:
        a mapping ``{label_a: {label_b: weight}}`` (symmetrised: giving ``(a, b)`` also sets
        ``(b, a)``).  Pairs that are not listed keep the default.  Use it to weight some
        class pairs more, to switch some off (weight 0), or to act within a class
        (``{a: {a: w}}``).
    chunk_elements:
        Most pair values computed at once (see module docstring).
    """

    name = "interaction"

    def __init__(self, pair_weights: Mapping | None = None, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS):
        pw = to_plain(pair_weights) or {}
        if not isinstance(pw, Mapping):
            raise TypeError(
                "pair_weights must be a mapping {label_a: {label_b: weight}}, "
                f"got {type(pw).__name__}"
            )
        self.pair_weights: dict[tuple[int, int], float] = {}
        for a, row in pw.items():
            if not isinstance(row, Mapping):
                raise TypeError(f"pair_weights[{a}] must be a mapping {{label_b: weight}}, got {row!r}")
            for b, w in row.items():
                self.pair_weights[(int(a), int(b))] = float(w)
                self.pair_weights[(int(b), int(a))] = float(w)
        self.chunk_elements = int(chunk_elements)
        if self.chunk_elements < 1:
            raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}")

    # -- to implement ----------------------------------------------------------------
    def kernel(self, r2):  # pragma: no cover - abstract
        """``k`` evaluated on a block of squared distances ``r2 >= 0``."""
        raise NotImplementedError

    # -- machinery -------------------------------------------------------------------
    def class_weight_matrix(self, y):
        """``(class index (n,), c (k, k))`` for the label values present in ``y``."""
        import torch

        values, index = torch.unique(y, sorted=True, return_inverse=True)
        k = values.numel()
        c = 1.0 - torch.eye(k, device=y.device, dtype=torch.float64)
        if self.pair_weights:
            pos = {int(v): i for i, v in enumerate(values.tolist())}
            for (a, b), w in self.pair_weights.items():
                if a in pos and b in pos:
                    c[pos[a], pos[b]] = w
        return index, c

    def _block(self, xb, x, sqb, sq, cb):
        """Sum of ``c * k`` over one row block (differentiable in ``xb`` and ``x``)."""
        import torch

        scale = sqb[:, None] + sq[None, :]
        r2 = scale - 2.0 * (xb @ x.T)
        # The expansion loses ~eps * (|x|^2 + |x'|^2) to cancellation: below that level
        # (the diagonal i = j, coincident particles) the distance is exactly 0 with zero
        # gradient, instead of a rounding residue whose sqrt has a huge derivative.
        floor = 8.0 * torch.finfo(r2.dtype).eps * scale
        r2 = torch.where(r2 > floor, r2, torch.zeros_like(r2))
        return (cb * self.kernel(r2)).sum()

    def __call__(self, state: ParticleState):
        import torch

        x = state.x
        n = x.shape[0]
        index, c = self.class_weight_matrix(state.y)
        c = c.to(dtype=x.dtype)
        sq = x.square().sum(dim=1)
        rows = max(1, self.chunk_elements // max(n, 1))
        use_checkpoint = torch.is_grad_enabled() and x.requires_grad and rows < n
        total = x.new_zeros(())
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            # Row block of class weights c(y_i, y_j): (rows, n), gathered, never n x n.
            cb = c[index[start:stop]][:, index]
            args = (x[start:stop], x, sq[start:stop], sq, cb)
            if use_checkpoint:
                part = _recomputed(self._block, *args)
            else:
                part = self._block(*args)
            total = total + part
        return total / (2.0 * n * n)


class ClassRepulsion(PairwiseInteraction):
    """``W(z - z') = exp(-||x - x'|| / bandwidth) * 1[y != y']`` (paper section 5).

    Penalises nearby particles of different classes, pushing classes apart.  Pass
    ``pair_weights`` for user-weighted class pairs.
    """

    name = "repulsion"

    def __init__(self, bandwidth: float = 1.0, pair_weights=None, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS):
        super().__init__(pair_weights=pair_weights, chunk_elements=chunk_elements)
        self.bandwidth = float(bandwidth)
        if not self.bandwidth > 0:
            raise ValueError(f"ClassRepulsion: bandwidth must be > 0, got {bandwidth}")

    def kernel(self, r2):
        import torch

        return torch.exp(-_safe_sqrt(r2) / self.bandwidth)


class SquaredDistanceRepulsion(PairwiseInteraction):
    """``W(z - z') = -||x - x'||^2 * 1[y != y']`` (paper figure 8(c, d)).

    Unbounded below on its own: combine it with a confining term (OTDD, a ball) or stop the
    flow after a fixed number of steps.
    """

    name = "sq_repulsion"

    def kernel(self, r2):
        return -r2


__all__ = ["PairwiseInteraction", "ClassRepulsion", "SquaredDistanceRepulsion", "DEFAULT_CHUNK_ELEMENTS"]
