"""Bures-Wasserstein label model against scipy `sqrtm`, finite differences and closed forms."""

import numpy as np
import pytest
import scipy.linalg as sla
import torch

from dsflow.ot.gaussian import (
    bures_w2,
    bures_w2_factors,
    choose_bures_method,
    class_gaussians,
    diagonal_bures_w2,
)


def _scipy_bures(m1, S1, m2, S2):
    r = sla.sqrtm(S1)
    cross = sla.sqrtm(r @ S2 @ r).real
    return float(((m1 - m2) ** 2).sum() + np.trace(S1) + np.trace(S2) - 2 * np.trace(cross))


def _random_factors(k, d, r, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, d, dtype=dtype, generator=g), torch.randn(k, d, r, dtype=dtype, generator=g) / r**0.5


@pytest.mark.parametrize("method", ["lowrank", "full", "auto"])
@pytest.mark.parametrize("r1,r2", [(3, 7), (8, 8), (12, 4)])  # low rank, full rank, mixed (d = 6)
def test_bures_factors_match_scipy_sqrtm(method, r1, r2):
    m1, F1 = _random_factors(3, 6, r1, 0)
    m2, F2 = _random_factors(4, 6, r2, 1)
    W = bures_w2_factors(m1, F1, m2, F2, method=method).numpy()
    S1, S2 = (F1 @ F1.mT).numpy(), (F2 @ F2.mT).numpy()
    ref = np.array([[_scipy_bures(m1[i].numpy(), S1[i], m2[j].numpy(), S2[j]) for j in range(4)] for i in range(3)])
    # float64 Gram eigenvalues resolve singular values to ~1e-8 relative: 1e-8 on O(10) values
    np.testing.assert_allclose(W, ref, rtol=1e-8, atol=1e-8)
    # elementwise mode agrees with the diagonal of the pairwise matrix
    We = bures_w2_factors(m1, F1, m2[:3], F2[:3], pairwise=False, method=method).numpy()
    np.testing.assert_allclose(We, np.diag(ref[:, :3]), rtol=1e-8, atol=1e-8)


def test_bures_matrix_version_matches_scipy_on_spd():
    m1, F1 = _random_factors(5, 4, 9, 2)
    m2, F2 = _random_factors(5, 4, 9, 3)
    S1, S2 = F1 @ F1.mT, F2 @ F2.mT
    W = bures_w2(m1, S1, m2, S2).numpy()
    ref = [_scipy_bures(m1[i].numpy(), S1[i].numpy(), m2[i].numpy(), S2[i].numpy()) for i in range(5)]
    np.testing.assert_allclose(W, ref, rtol=1e-9, atol=1e-10)


def test_lowrank_equals_full_in_high_dimension_float32():
    # 30 samples per class in 200-d: covariances of rank <= 29
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 200, generator=g)
    y = torch.arange(120) % 4
    st = class_gaussians(x, y)
    lo = bures_w2_factors(st.means, st.factors, st.means, st.factors, method="lowrank")
    fu = bures_w2_factors(st.means, st.factors, st.means, st.factors, method="full")
    assert choose_bures_method(200, 30, 30, 4, 4) == "lowrank"
    assert choose_bures_method(2, 500, 500, 4, 4) == "full"
    scale = float(lo.abs().max())
    assert float((lo - fu).abs().max()) <= 1e-4 * scale
    # identical Gaussians: 0 up to float32 round-off of a trace of size ~scale
    assert float(lo.diagonal().abs().max()) <= 1e-5 * scale


def test_zero_for_identical_and_translation_for_shift():
    m, F = _random_factors(2, 5, 3, 4)
    W = bures_w2_factors(m, F, m + 1.5, F, pairwise=False)
    np.testing.assert_allclose(W.numpy(), 5 * 1.5**2, rtol=1e-9)
    W0 = bures_w2_factors(m, F, m, F, pairwise=False)
    assert float(W0.abs().max()) < 1e-10


@pytest.mark.parametrize("method", ["lowrank", "full"])
def test_gradients_match_finite_differences(method):
    m1, F1 = _random_factors(2, 5, 3, 5)
    m2, F2 = _random_factors(3, 5, 7, 6)
    args = tuple(t.clone().requires_grad_() for t in (m1, F1, m2, F2))
    weights = torch.randn(2, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b, c, d: (bures_w2_factors(a, b, c, d, method=method) * weights).sum(), args, eps=1e-6, atol=1e-5
    )


def test_ridge_matches_scipy_with_shrunk_covariances():
    m1, F1 = _random_factors(2, 4, 2, 7)
    m2, F2 = _random_factors(2, 4, 3, 8)
    W = bures_w2_factors(m1, F1, m2, F2, ridge=0.3).numpy()
    I = 0.3 * np.eye(4)
    ref = [[_scipy_bures(m1[i].numpy(), (F1[i] @ F1[i].T).numpy() + I, m2[j].numpy(), (F2[j] @ F2[j].T).numpy() + I)
            for j in range(2)] for i in range(2)]
    np.testing.assert_allclose(W, ref, rtol=1e-8)


def test_diagonal_covariances_closed_form():
    m1, F1 = _random_factors(2, 4, 5, 9)
    m2, F2 = _random_factors(3, 4, 5, 10)
    W = diagonal_bures_w2(m1, F1, m2, F2).numpy()
    s1 = np.sqrt((F1.numpy() ** 2).sum(-1))
    s2 = np.sqrt((F2.numpy() ** 2).sum(-1))
    ref = ((m1.numpy()[:, None] - m2.numpy()[None]) ** 2).sum(-1) + ((s1[:, None] - s2[None]) ** 2).sum(-1)
    np.testing.assert_allclose(W, ref, rtol=1e-10)
    # and it is the full Bures distance between the diagonal Gaussians
    D1 = np.stack([np.diag(s**2) for s in s1])
    D2 = np.stack([np.diag(s**2) for s in s2])
    np.testing.assert_allclose(W[0, 1], _scipy_bures(m1[0].numpy(), D1[0], m2[1].numpy(), D2[1]), rtol=1e-8)


def test_finite_gradients_on_singular_digit_covariances():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    x = torch.tensor(X / 16.0, dtype=torch.float32, requires_grad=True)
    y = torch.tensor(y)
    st = class_gaussians(x, y)
    ranks = torch.linalg.matrix_rank(st.covariances().double()).tolist()
    assert max(ranks) < 64  # constant pixels: every class covariance is singular (ranks 48-54)
    xt = x.detach().flip(1)  # a different dataset with its own singular covariances
    for method in ("lowrank", "full"):
        # lowrank on ~30 samples per class keeps the test fast; full on all 1797 digits
        sub = slice(0, 300) if method == "lowrank" else slice(None)
        s1, t1 = class_gaussians(x[sub], y[sub]), class_gaussians(xt[sub], y[sub])
        W = bures_w2_factors(s1.means, s1.factors, t1.means, t1.factors, method=method)
        (gx,) = torch.autograd.grad(W.sum(), x, retain_graph=True)
        assert torch.isfinite(W).all() and torch.isfinite(gx).all()
        assert float(gx.abs().max()) > 0


# --- self blocks and the lazy (gradient-driven) eigenvectors ---------------------------


def _svd_reference_nuclear(F1, F2):
    """Pairwise ``||F1_i^T F2_j||_*`` by autograd through ``svdvals`` (an independent route;
    differentiable here because the random test matrices have distinct singular values)."""
    C = F1.mT[:, None] @ F2[None]
    return torch.linalg.svdvals(C).sum(-1)


@pytest.mark.parametrize("method", ["lowrank", "full"])
def test_self_block_equals_pairwise_with_itself(method):
    m, F = _random_factors(5, 6, 4, 11)
    full = bures_w2_factors(m, F, m, F, method=method)
    self_block = bures_w2_factors(m, F, method=method)
    np.testing.assert_allclose(self_block.numpy(), full.numpy(), rtol=1e-9, atol=1e-9)
    # exact by construction: the self block is upper + upper^T (every term of W is symmetric in i, j
    # without rounding) and its diagonal is written as 0 (bures_w2_factors, same=True)
    assert torch.equal(self_block, self_block.mT) and float(self_block.diagonal().abs().max()) == 0.0
    # gradients: the i < j pairs count once per side, like the full matrix's two triangles
    weights = torch.randn(5, 5, dtype=torch.float64)
    weights = weights + weights.mT
    args = tuple(t.clone().requires_grad_() for t in (m, F))
    assert torch.autograd.gradcheck(lambda a, b: (bures_w2_factors(a, b, method=method) * weights).sum(), args,
                                    eps=1e-6, atol=1e-5)
    assert float(bures_w2_factors(m, F, pairwise=False).abs().max()) == 0.0  # exact: written as zeros


def test_lazy_backward_matches_svd_reference_for_sparse_and_dense_weights():
    from dsflow.ot.gaussian import cross_nuclear

    _, F1 = _random_factors(4, 7, 3, 12)
    _, F2 = _random_factors(5, 7, 4, 13)
    g = torch.Generator().manual_seed(3)
    dense = torch.randn(4, 5, dtype=torch.float64, generator=g)
    sparse = dense * (torch.rand(4, 5, generator=g) < 0.3)  # below half the pairs: gathered path
    for weights in (dense, sparse):
        a, b = F1.clone().requires_grad_(), F2.clone().requires_grad_()
        (cross_nuclear(a, b) * weights).sum().backward()
        ra, rb = F1.clone().requires_grad_(), F2.clone().requires_grad_()
        (_svd_reference_nuclear(ra, rb) * weights).sum().backward()
        np.testing.assert_allclose(a.grad.numpy(), ra.grad.numpy(), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(b.grad.numpy(), rb.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_backward_solves_eigenvectors_only_for_pairs_with_weight(monkeypatch):
    import dsflow.ot.gaussian as G

    calls = []
    real = G._polar_factors

    def spy(C, *args):
        calls.append(C.shape[0])
        return real(C, *args)

    monkeypatch.setattr(G, "_polar_factors", spy)
    _, F1 = _random_factors(6, 8, 5, 14)
    _, F2 = _random_factors(6, 8, 5, 15)
    a = F1.clone().requires_grad_()
    # OTDD-like weights: mass on matched classes, underflowed or round-off-sized elsewhere
    weights = torch.full((6, 6), 1e-30, dtype=torch.float64)
    weights.fill_diagonal_(1.0)
    weights[0, 1] = 0.0
    weights[2, 3] = 0.25
    (G.cross_nuclear(a, F2) * weights).sum().backward()
    assert sum(calls) == 7  # the 6 matched pairs and (2, 3)
    ref = F1.clone().requires_grad_()
    (_svd_reference_nuclear(ref, F2) * weights).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ref.grad.numpy(), rtol=1e-9, atol=1e-12)
    # no gradient needed: no eigenvectors at all
    calls.clear()
    G.cross_nuclear(F1, F2)
    assert calls == []


@pytest.mark.parametrize("method", ["lowrank", "full"])
@pytest.mark.parametrize("chunk", [250, 50])  # dense GEMM route in chunks / one gathered pair per chunk
def test_memory_chunking_gives_the_same_values_and_gradients(monkeypatch, method, chunk):
    import dsflow.ot.gaussian as G

    m1, F1 = _random_factors(4, 6, 5, 16)
    m2, F2 = _random_factors(3, 6, 7, 17)
    weights = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def run():
        a, b = F1.clone().requires_grad_(), F2.clone().requires_grad_()
        W = bures_w2_factors(m1, a, m2, b, method=method)
        (W * weights).sum().backward()
        return W.detach(), a.grad, b.grad

    ref = run()
    # a few pairs per chunk, and the backward without saved products
    monkeypatch.setattr(G, "_CHUNK_ELEMENTS", chunk)
    assert G._dense_pairs(12, 4, 5, 3, 7) == (chunk == 250)
    monkeypatch.setattr(G, "_SAVE_PRODUCTS_ELEMENTS", 0)
    for got, want in zip(run(), ref):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)


def test_non_finite_incoming_gradients_propagate():
    from dsflow.ot.gaussian import cross_nuclear

    _, F1 = _random_factors(2, 4, 2, 18)
    _, F2 = _random_factors(3, 4, 2, 19)
    for bad in (float("nan"), float("inf")):
        a, b = F1.clone().requires_grad_(), F2.clone().requires_grad_()
        weights = torch.ones(2, 3, dtype=torch.float64)
        weights[0, 0] = bad
        ga, gb = torch.autograd.grad(cross_nuclear(a, b), (a, b), grad_outputs=weights)
        # like autograd: class 0 of each side is poisoned, the rest stays finite and exact
        assert not torch.isfinite(ga[0]).all() and not torch.isfinite(gb[0]).all()
        assert torch.isfinite(ga[1]).all() and torch.isfinite(gb[1:]).all()


def test_self_block_label_distances_accept_equal_copies():
    from dsflow.ot.labels import gaussian_label_distances

    m, F = _random_factors(3, 5, 4, 20)
    same_object = gaussian_label_distances((m, F), (m, F), same=True)
    copies = gaussian_label_distances((m, F), (m.clone(), F.clone()), same=True)
    np.testing.assert_allclose(copies.numpy(), same_object.numpy(), rtol=1e-9, atol=1e-12)
