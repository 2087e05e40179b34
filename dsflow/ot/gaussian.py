"""Gaussian label model: the Bures-Wasserstein distance between class Gaussians.

The class statistics themselves (`class_gaussians`, `GaussianStats`) are in
`dsflow.ot.class_stats`.  Each class ``c`` is summarised by ``N(mu_c, Sigma_c)`` with
``Sigma_c = F_c F_c^T``.  From samples, ``F_c = (X_c - mu_c)^T / sqrt(n_c - 1)`` (``d x n_c``), so the covariance is
never formed.  The squared 2-Wasserstein (Bures) distance is

    W2^2 = ||mu_1 - mu_2||^2 + tr S_1 + tr S_2 - 2 tr((S_1^{1/2} S_2 S_1^{1/2})^{1/2})

and the last trace equals the nuclear norm ``||F_1^T F_2||_*`` (same singular values as
``S_1^{1/2} S_2^{1/2}``).  Two exact routes compute it:

* ``lowrank``: singular values of the ``n_1 x n_2`` matrix ``F_1^T F_2`` via the eigenvalues
  of its small Gram matrix.  Never forms a ``d x d`` matrix; fast when ``n_c < d`` (images).
* ``full``: per class a ``d x d`` eigendecomposition ``S = P D P^T`` gives a square factor
  ``L = P D^{1/2}``; then the same nuclear norm on ``L_1^T L_2`` (``d x d``).  Fast when
  ``n_c > d`` (low-dimensional data, ridge-shrunk covariances).

Gradients are written by hand (`_PairNuclear`): ``d||C||_* / dC = U V^T`` restricted to the
numerically non-zero singular values.  The forward pass needs eigenvalues only; eigenvectors
are computed in the backward pass, and only for class pairs that receive a non-negligible
gradient (in OTDD: pairs of classes that exchange transport mass).  Self blocks
(source-source, target-target) solve only the pairs ``i < j``.  This never divides by a difference of eigenvalues
nor by a vanishing singular value, so gradients w.r.t. samples and factors are finite on
singular covariances (constant pixels) by construction; ``||U V^T||_2 <= 1`` bounds them.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

# class statistics live in `dsflow.ot.class_stats`; re-exported here, where they were first
from dsflow.ot.class_stats import GaussianStats, class_gaussians, class_index

__all__ = [
    "GaussianStats",
    "SingletonClassError",
    "check_class_sizes",
    "class_gaussians",
    "class_index",
    "bures_w2",
    "bures_w2_factors",
    "diagonal_bures_w2",
    "choose_bures_method",
    "psd_sqrt_factor",
]


class SingletonClassError(ValueError):
    """A class with a single sample where the Gaussian label model needs a covariance.

    Names the side (``role``: ``source``/``target``), the dataset and the classes; ``fix`` is
    the setting that accepts them as point masses, in the caller's terms (a keyword argument
    in the library, a config override on the command line: `with_fix`).
    """

    def __init__(self, role: str, dataset: str, classes: list, names: list, fix: str = "allow_singletons=True"):
        self.role, self.dataset, self.classes, self.names, self.fix = role, dataset, list(classes), list(names), fix
        listed = ", ".join(str(c) if str(n) == str(c) else f"{c} ({n})" for c, n in zip(self.classes, self.names))
        plural = "es" if len(self.classes) > 1 else ""
        super().__init__(
            f"{role} dataset {dataset!r}: class{plural} {listed} ha{'ve' if plural else 's'} a "
            "single sample, so the Gaussian label model (inner=gaussian) cannot estimate a covariance; "
            f"treat {'them as point masses' if plural else 'it as a point mass'} with {fix}, or drop "
            f"{'them' if plural else 'it'} from the data ({role}.classes=[...]), or use inner=means or inner=exact"
        )

    def with_fix(self, fix: str) -> "SingletonClassError":
        return SingletonClassError(self.role, self.dataset, self.classes, self.names, fix)


def check_class_sizes(data, role: str, fix: str = "allow_singletons=True") -> None:
    """Raise `SingletonClassError` when a class of ``data`` (a `LabeledData`) has one sample."""
    import torch

    classes, counts = torch.unique(data.y.detach().cpu(), sorted=True, return_counts=True)
    single = classes[counts < 2].tolist()
    if single:
        raise SingletonClassError(role, data.name, single, [data.class_name(c) for c in single], fix)


def psd_sqrt_factor(S: torch.Tensor) -> torch.Tensor:
    """Symmetric square root ``S^{1/2}`` of PSD matrices (batched) by ``eigh``.

    Differentiable through ``torch.linalg.eigh``: gradients w.r.t. ``S`` are infinite at
    singular ``S`` (the square root is not differentiable at 0); use factors instead.
    """
    evals, evecs = torch.linalg.eigh(S)
    return (evecs * evals.clamp(min=0).sqrt()[..., None, :]) @ evecs.mT


# ---------------------------------------------------------------------------------------
# nuclear norm of F1^T F2 with a hand-written, singularity-free backward


def _sigma_rtol(dtype: torch.dtype, r: int, eig_dtype: torch.dtype | None = None) -> float:
    """Relative noise floor of singular values: input rounding, and (when the singular
    values come from a Gram eigh in ``eig_dtype``) its sqrt(eps) resolution.  Directions
    below it carry no information; dropping them is a valid subgradient of the nuclear norm."""
    tol = 10.0 * torch.finfo(dtype).eps * math.sqrt(max(r, 1))
    if eig_dtype is not None:
        tol = max(tol, math.sqrt(10.0 * max(r, 1) * torch.finfo(eig_dtype).eps))
    return tol


def _gram_side(C: torch.Tensor, eig_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(Cw, G, left)``: ``C`` in ``eig_dtype`` and its Gram matrix on the smaller side."""
    Cw = C.to(eig_dtype)
    left = Cw.shape[-2] <= Cw.shape[-1]
    G = Cw @ Cw.mT if left else Cw.mT @ Cw
    return Cw, G, left


def _nuclear_values(C: torch.Tensor, eig_dtype: torch.dtype) -> torch.Tensor:
    """Nuclear norms of a batch ``C (P, r1, r2)``: eigenvalues only (no eigenvectors).

    The Gram matrix squares the condition number, so it is formed and solved in
    ``eig_dtype`` (float64 for float32 input): singular values are then resolved to
    ``sqrt(eps64) ~ 1e-8`` of the largest, below the float32 rounding of ``C`` itself.
    """
    _, G, _ = _gram_side(C, eig_dtype)
    return torch.linalg.eigvalsh(G).clamp(min=0).sqrt().sum(-1).to(C.dtype)


def _polar_factors(C: torch.Tensor, in_dtype: torch.dtype, eig_dtype: torch.dtype) -> torch.Tensor:
    """``U V^T`` of ``C = U S V^T`` (batch ``(P, r1, r2)``), restricted to the numerically
    non-zero singular values: the subgradient of the nuclear norm used by the backward."""
    Cw, G, left = _gram_side(C, eig_dtype)
    # one batched call: splitting the batch over Python threads looked 2x faster alone but
    # slowed later torch calls up to 10x on 2 cores (competing OpenMP teams)
    lam, V = torch.linalg.eigh(G)
    sigma = lam.clamp(min=0).sqrt()
    smax = sigma.amax(-1, keepdim=True)
    keep = sigma > _sigma_rtol(in_dtype, max(C.shape[-2], C.shape[-1]), eig_dtype) * smax
    inv = torch.where(keep, 1.0 / sigma.clamp(min=torch.finfo(eig_dtype).tiny), torch.zeros_like(sigma))
    # left:  C = U S V^T with G = U S^2 U^T -> U V^T = U S^-1 U^T C
    # right: G = V S^2 V^T               -> U V^T = C V S^-1 V^T
    if left:
        uv = (V * inv[..., None, :]) @ (V.mT @ Cw)
    else:
        uv = (Cw @ V) * inv[..., None, :] @ V.mT
    return uv.to(C.dtype)


def _square_factors(F: torch.Tensor, eig_dtype: torch.dtype):
    """``(L, Z)`` with ``L = P D^{1/2}`` (d x d) and ``Z = D^{-1/2} P^T F`` (masked rows).

    ``F = L Z`` on the numerical range of ``S = F F^T`` and ``Z`` has orthonormal rows there,
    so ``F1^T F2 = Z1^T (L1^T L2) Z2`` has the singular values of ``L1^T L2``.
    """
    Fw = F.to(eig_dtype)
    D, P = torch.linalg.eigh(Fw @ Fw.mT)
    D = D.clamp(min=0)
    keep = D > (_sigma_rtol(F.dtype, max(F.shape[-1], F.shape[-2]), eig_dtype) ** 2) * D.amax(-1, keepdim=True)
    # eigenvalues at the noise floor are dropped from L too: their square roots (~1e-8 of
    # the scale) would otherwise add non-smooth noise to the value
    L = P * torch.where(keep, D.sqrt(), torch.zeros_like(D))[..., None, :]
    inv = torch.where(keep, D.clamp(min=torch.finfo(eig_dtype).tiny).rsqrt(), torch.zeros_like(D))
    Z = inv[..., :, None] * (P.mT @ Fw)
    return L.to(F.dtype), Z.to(F.dtype)


def _pair_products(A: torch.Tensor, B: torch.Tensor, pairwise: bool) -> torch.Tensor:
    """``A_i^T B_j`` for all pairs ``(k1, k2, r1, r2)`` (one GEMM) or elementwise ``(k, r1, r2)``."""
    if not pairwise:
        return A.mT @ B
    k1, d, r1 = A.shape
    k2, _, r2 = B.shape
    prod = A.mT.reshape(k1 * r1, d) @ B.permute(1, 0, 2).reshape(d, k2 * r2)
    return prod.reshape(k1, r1, k2, r2).permute(0, 2, 1, 3)


#: memory bound of every batched intermediate (elements): gathered factors, pair products,
#: float64 Gram matrices.  2^25 elements = 128 MiB in float32, 256 MiB in float64.
_CHUNK_ELEMENTS = 1 << 25
#: the forward keeps the pair products for the backward up to this many elements
_SAVE_PRODUCTS_ELEMENTS = 1 << 25


def _dense_pairs(n_pairs: int, k1: int, r1: int, k2: int, r2: int) -> bool:
    """Whether one GEMM over all ``k1 x k2`` pairs beats per-pair products: at least half
    of the pairs are wanted, and the full product fits the memory bound."""
    return 2 * n_pairs >= k1 * k2 and k1 * r1 * k2 * r2 <= 2 * _CHUNK_ELEMENTS


def _pair_chunks(idx: torch.Tensor, per_pair: int):
    """Split a list of pair positions so that each chunk holds at most ``_CHUNK_ELEMENTS``."""
    return idx.split(max(1, _CHUNK_ELEMENTS // max(per_pair, 1)))


def _products_in_chunks(L1, L2, I, J):
    """Yield ``(positions, L1[I_p]^T L2[J_p])`` over chunks of the pair list."""
    k1, d, r1 = L1.shape
    k2, _, r2 = L2.shape
    pos = torch.arange(I.numel(), device=I.device)
    if _dense_pairs(I.numel(), k1, r1, k2, r2):
        full = _pair_products(L1, L2, True)
        for s in _pair_chunks(pos, r1 * r2):
            yield s, full[I[s], J[s]]
        return
    for s in _pair_chunks(pos, d * (r1 + r2) + r1 * r2):
        yield s, L1[I[s]].mT @ L2[J[s]]


class _PairNuclear(torch.autograd.Function):
    """``N_p = ||F1[I_p]^T F2[J_p]||_*`` for a list of distinct class pairs ``p``.

    Forward: eigenvalues only.  Backward: ``dN/dF1 = F2 (UV^T)^T``, ``dN/dF2 = F1 UV^T``,
    with the eigenvectors computed *only for pairs whose incoming gradient is not
    negligible*.  In OTDD the gradient of a label distance ``W_ij`` is the transport mass
    between classes ``i`` and ``j``; mismatched classes carry ``exp(-Delta/eps)`` of it,
    which underflows, so most pairs are skipped.  A pair is skipped when its weight is at
    most one rounding unit (``finfo(dtype).eps``) of the largest weight on both of its
    classes: its term is then below the floating-point resolution of those classes'
    gradients.  Exactly zero weights are always skipped.  Every intermediate is computed
    in chunks of pairs bounded by ``_CHUNK_ELEMENTS`` (CIFAR-sized full-route problems
    have 3072 x 3072 matrices per pair).
    """

    @staticmethod
    def forward(ctx, F1, F2, I, J, method: str, eig_dtype):
        if method == "full":
            L1, Z1 = _square_factors(F1, eig_dtype)
            L2, Z2 = (L1, Z1) if F2 is F1 else _square_factors(F2, eig_dtype)
        else:
            L1, Z1, L2, Z2 = F1, None, F2, None
        need = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        keep_C = need and I.numel() * L1.shape[2] * L2.shape[2] <= _SAVE_PRODUCTS_ELEMENTS
        values = torch.empty(I.numel(), dtype=F1.dtype, device=F1.device)
        kept = []
        for s, C in _products_in_chunks(L1, L2, I, J):
            values[s] = _nuclear_values(C, eig_dtype)
            if keep_C:
                kept.append(C)
        if need:
            empty = torch.empty(0)
            ctx.save_for_backward(L1, L2, I, J, empty if Z1 is None else Z1, empty if Z2 is None else Z2,
                                  torch.cat(kept) if keep_C else empty)
            ctx.keep_C = keep_C
            ctx.full = method == "full"
            ctx.eig_dtype = eig_dtype
            ctx.in_dtype = F1.dtype
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        L1, L2, I, J, Z1, Z2, C = ctx.saved_tensors
        need1, need2 = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        k1, d, r1 = L1.shape
        k2, _, r2 = L2.shape
        mag = grad.abs()
        finite = torch.isfinite(mag)
        # largest finite weight touching each class, on each side of the pairs
        fmag = torch.where(finite, mag, torch.zeros_like(mag))
        m1 = torch.zeros(k1, dtype=mag.dtype, device=mag.device).scatter_reduce(0, I, fmag, "amax")
        m2 = torch.zeros(k2, dtype=mag.dtype, device=mag.device).scatter_reduce(0, J, fmag, "amax")
        floor = torch.finfo(grad.dtype).eps * torch.minimum(m1[I], m2[J])
        # non-finite weights are kept, so that NaN/inf propagate as with autograd
        sel = torch.nonzero(~finite | ((mag > floor) & (mag > 0))).flatten()
        g1 = torch.zeros_like(L1) if need1 else None
        g2 = torch.zeros_like(L2) if need2 else None

        def weighted_polar(s, Cs):
            return grad[s, None, None].to(Cs.dtype) * _polar_factors(Cs, ctx.in_dtype, ctx.eig_dtype)

        if _dense_pairs(sel.numel(), k1, r1, k2, r2):
            # dense: the weighted polar factors in one (k1 r1, k2 r2) matrix, then one GEMM per side
            Wm = torch.zeros(k1, k2, r1, r2, dtype=L1.dtype, device=L1.device)
            for s in _pair_chunks(sel, r1 * r2):
                Cs = C[s] if ctx.keep_C else L1[I[s]].mT @ L2[J[s]]
                Wm[I[s], J[s]] = weighted_polar(s, Cs)
            Wm = Wm.permute(0, 2, 1, 3).reshape(k1 * r1, k2 * r2)  # rows (i, a), cols (j, b)
            if need1:
                g1 = (Wm @ L2.mT.reshape(k2 * r2, d)).reshape(k1, r1, d).mT
            if need2:
                g2 = (Wm.mT @ L1.mT.reshape(k1 * r1, d)).reshape(k2, r2, d).mT
        elif sel.numel():
            # sparse: gathered factors of the selected pairs
            for s in _pair_chunks(sel, d * (r1 + r2) + r1 * r2):
                A, B = L1[I[s]], L2[J[s]]
                w = weighted_polar(s, C[s] if ctx.keep_C else A.mT @ B)
                if need1:
                    g1.index_add_(0, I[s], B @ w.mT)
                if need2:
                    g2.index_add_(0, J[s], A @ w)
        if ctx.full:
            g1 = g1 @ Z1 if need1 else None
            g2 = g2 @ Z2 if need2 else None
        return g1, g2, None, None, None, None


def choose_bures_method(
    d: int, r1: int, r2: int, k1: int = 1, k2: int = 1, pairwise: bool = True, *, classes: int | None = None
) -> str:
    """``"lowrank"`` or ``"full"``: the route with the smaller flop estimate.

    lowrank: per pair a ``r1 x r2`` product over ``d``, its Gram matrix and a ``min(r)^3``
    eigenvalue problem; full: per class (``classes``, default ``k1 + k2``) a ``d x d``
    eigendecomposition with vectors, per pair ``d x d`` products and eigenvalues.
    Symmetric eigensolvers cost ~9 n^3 flops with vectors and ~4 n^3 without, products 2 n^3.
    """
    pairs = k1 * k2 if pairwise else max(k1, k2)
    classes = k1 + k2 if classes is None else classes
    rmin = min(r1, r2)
    lowrank = pairs * (2.0 * r1 * r2 * d + 2.0 * r1 * r2 * rmin + 4.0 * rmin**3)
    full = classes * (2.0 * d * d * max(r1, r2) + 9.0 * d**3) + pairs * (4.0 * d**3 + 4.0 * d**3)
    return "lowrank" if lowrank <= full else "full"


def _eig_dtype_for(dtype: torch.dtype, eig_dtype):
    if eig_dtype is not None:
        return eig_dtype
    # float32 Gram matrices square the condition number: solve the small problems in float64
    return torch.float64 if dtype in (torch.float32, torch.float16, torch.bfloat16) else dtype


def cross_nuclear(F1, F2=None, *, pairwise: bool = True, method: str = "auto", eig_dtype=None) -> torch.Tensor:
    """``tr((S1^{1/2} S2 S1^{1/2})^{1/2}) = ||F1^T F2||_*`` for factor batches.

    ``F1 (k1, d, r1)``, ``F2 (k2, d, r2)``; ``pairwise=True`` gives ``(k1, k2)``, otherwise
    ``k1 == k2`` and the result is ``(k1,)``.  ``F2=None`` means ``F2 = F1`` (a
    self block): only the pairs ``i < j`` are solved, the diagonal is ``tr S_i`` exactly
    and the matrix is symmetric.
    """
    same = F2 is None
    if same:
        F2 = F1
    if F1.ndim != 3 or F2.ndim != 3 or F1.shape[1] != F2.shape[1]:
        raise ValueError(f"factors must be (k, d, r) with equal d, got {tuple(F1.shape)} and {tuple(F2.shape)}")
    if not pairwise and F1.shape[0] != F2.shape[0]:
        raise ValueError("elementwise Bures distance needs batches of equal size; use pairwise=True")
    k1, k2 = F1.shape[0], F2.shape[0]
    if method == "auto":
        pairs = k1 * (k1 - 1) // 2 if (same and pairwise) else (k1 * k2 if pairwise else k1)
        method = choose_bures_method(F1.shape[1], F1.shape[2], F2.shape[2], 1, max(pairs, 1), True, classes=k1 + (0 if same else k2))
    if method not in ("lowrank", "full"):
        raise ValueError(f"method must be 'auto', 'lowrank' or 'full', got {method!r}")
    F2 = F2.to(F1.dtype)
    ew = _eig_dtype_for(F1.dtype, eig_dtype)
    dev = F1.device
    if not pairwise:
        I = J = torch.arange(k1, device=dev)
        if same:
            return (F1**2).sum((1, 2))
        return _PairNuclear.apply(F1, F2, I, J, method, ew)
    if same:
        I, J = torch.triu_indices(k1, k1, offset=1, device=dev)
        diag = (F1**2).sum((1, 2))  # ||F_i^T F_i||_* = tr(F_i^T F_i): exact, no eigenproblem
        if I.numel() == 0:
            return torch.diag(diag)
        vals = _PairNuclear.apply(F1, F1, I, J, method, ew)
        upper = torch.zeros(k1, k1, dtype=vals.dtype, device=dev).index_put((I, J), vals)
        return upper + upper.mT + torch.diag(diag)
    I = torch.arange(k1, device=dev).repeat_interleave(k2)
    J = torch.arange(k2, device=dev).repeat(k1)
    return _PairNuclear.apply(F1, F2, I, J, method, ew).reshape(k1, k2)


def _mean_sqdist(m1, m2, pairwise: bool):
    if pairwise:
        # explicit differences: exact (no cancellation) and fine for k1*k2*d sizes
        return ((m1[:, None, :] - m2[None, :, :]) ** 2).sum(-1)
    return ((m1 - m2) ** 2).sum(-1)


def bures_w2_factors(
    m1: torch.Tensor,
    F1: torch.Tensor,
    m2: torch.Tensor | None = None,
    F2: torch.Tensor | None = None,
    *,
    pairwise: bool = True,
    method: str = "auto",
    ridge: float = 0.0,
    eig_dtype=None,
) -> torch.Tensor:
    """Squared Bures-Wasserstein distance between ``N(m1, F1 F1^T)`` and ``N(m2, F2 F2^T)``.

    Shapes ``m (k, d)``, ``F (k, d, r)``.  ``pairwise=True`` returns the ``(k1, k2)`` matrix
    of all pairs; otherwise elementwise ``(k,)``.  Leaving out ``m2, F2`` gives the self
    block (all pairs of the first batch): symmetric, zero diagonal, half the work.
    ``method``: ``"auto"`` (by flop estimate), ``"lowrank"`` or ``"full"`` (same value).
    ``ridge > 0`` shrinks every covariance to ``Sigma + ridge * I`` (factor
    ``[F, sqrt(ridge) I]``, which makes the full route the natural one).  Differentiable in
    means and factors with finite gradients even for singular covariances.  Result clamped
    at 0 (round-off).
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    same = F2 is None
    if same != (m2 is None):
        raise ValueError("bures_w2_factors: pass both m2 and F2, or neither (self block)")
    if ridge > 0:
        d = F1.shape[1]
        eye = math.sqrt(ridge) * torch.eye(d, dtype=F1.dtype, device=F1.device)
        F1 = torch.cat([F1, eye.expand(F1.shape[0], d, d)], dim=2)
        if not same:
            F2 = torch.cat([F2, eye.to(F2.dtype).expand(F2.shape[0], d, d)], dim=2)
    nuc = cross_nuclear(F1, F2, pairwise=pairwise, method=method, eig_dtype=eig_dtype)
    tr1 = (F1**2).sum((1, 2))
    if same:
        m2, tr2 = m1, tr1
    else:
        tr2 = (F2**2).sum((1, 2))
    traces = tr1[:, None] + tr2[None, :] if pairwise else tr1 + tr2
    W = (_mean_sqdist(m1, m2, pairwise) + traces - 2.0 * nuc).clamp(min=0)
    if same:
        # a Gaussian is at distance 0 from itself: exact zeros, not round-off
        W = W.masked_fill(torch.eye(W.shape[0], dtype=torch.bool, device=W.device), 0.0) if pairwise else torch.zeros_like(W)
    return W


def bures_w2(m1, S1, m2, S2, *, pairwise: bool = False, eig_dtype=None) -> torch.Tensor:
    """Squared Bures-Wasserstein distance between ``N(m1, S1)`` and ``N(m2, S2)`` (matrices).

    Batched: ``m (k, d)``, ``S (k, d, d)``; elementwise by default, all pairs with
    ``pairwise=True``.  Uses ``d x d`` eigendecompositions; gradients w.r.t. ``S`` go through
    ``eigh`` and are infinite at singular ``S`` (prefer `bures_w2_factors` for flows).
    """
    if S1.ndim == 2:
        m1, S1 = m1[None], S1[None]
    if S2.ndim == 2:
        m2, S2 = m2[None], S2[None]
    R1 = psd_sqrt_factor(S1)
    R2 = psd_sqrt_factor(S2)
    tr1 = torch.diagonal(S1, dim1=-2, dim2=-1).sum(-1)
    tr2 = torch.diagonal(S2, dim1=-2, dim2=-1).sum(-1)
    ew = _eig_dtype_for(S1.dtype, eig_dtype)
    C = _pair_products(R1, R2, pairwise)
    lam = torch.linalg.eigvalsh((C.mT @ C).to(ew))
    nuc = lam.clamp(min=0).sqrt().sum(-1).to(S1.dtype)
    traces = tr1[:, None] + tr2[None, :] if pairwise else tr1 + tr2
    return (_mean_sqdist(m1, m2, pairwise) + traces - 2.0 * nuc).clamp(min=0)


def diagonal_bures_w2(m1, F1, m2, F2, *, pairwise: bool = True, ridge: float = 0.0) -> torch.Tensor:
    """Bures distance with diagonal covariances: ``||m1-m2||^2 + ||s1 - s2||^2``, ``s`` = std.

    Standard deviations are row norms of the factors (``vector_norm`` has a zero subgradient
    at 0, so constant features give finite gradients).
    """
    s1 = torch.linalg.vector_norm(F1, dim=2)
    s2 = torch.linalg.vector_norm(F2, dim=2)
    if ridge > 0:
        s1 = (s1**2 + ridge).sqrt()
        s2 = (s2**2 + ridge).sqrt()
    return _mean_sqdist(m1, m2, pairwise) + _mean_sqdist(s1, s2, pairwise)
