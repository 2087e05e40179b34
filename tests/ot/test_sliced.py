"""`dsflow.ot.sliced`: sliced Wasserstein between class distributions, against POT, exact 1-D OT,
closed forms and finite differences (float64 throughout: differences are rounding, 1e-10)."""

import numpy as np
import ot
import pytest
import torch

from dsflow.ot.sliced import random_directions, sliced_wasserstein, sliced_wasserstein_classes

D64 = torch.float64


def _pot(xa, xb, theta, p, a=None):
    return ot.sliced_wasserstein_distance(xa.numpy(), xb.numpy(), a=None if a is None else a.numpy(),
                                          projections=theta.numpy().T, p=p) ** p


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("sizes", ["equal", "unequal"])
def test_class_matrix_matches_pot_with_the_same_projections(p, sizes):
    g = torch.Generator().manual_seed(0)
    n1, n2 = (30, 40) if sizes == "equal" else (31, 43)  # 3 and 4 classes of 10, or of 10-11
    x1, x2 = torch.randn(n1, 5, generator=g, dtype=D64), torch.randn(n2, 5, generator=g, dtype=D64) + 1
    y1, y2 = torch.arange(n1) % 3, torch.arange(n2) % 4
    theta = random_directions(50, 5, seed=1, dtype=D64)
    ours = sliced_wasserstein_classes(x1, y1, x2, y2, directions=theta, p=p)
    ref = np.array([[_pot(x1[y1 == i], x2[y2 == j], theta, p) for j in range(4)] for i in range(3)])
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_weighted_classes_match_pot():
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(7, 3, generator=g, dtype=D64), torch.randn(11, 3, generator=g, dtype=D64)
    w = torch.rand(7, generator=g, dtype=D64)
    theta = random_directions(20, 3, seed=2, dtype=D64)
    ours = sliced_wasserstein(x1, x2, directions=theta, weights1=w)
    assert float(ours) == pytest.approx(_pot(x1, x2, theta, 2, a=w / w.sum()), rel=1e-10)


@pytest.mark.parametrize("p", [1, 2])
def test_one_dimensional_problem_is_exact_ot(p):
    """Along one direction, unequal sizes, non-uniform weights: POT's exact emd2 on |x - y|^p."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=9), rng.normal(size=14) * 2 + 0.5
    wa, wb = rng.random(9), rng.random(14)
    ref = ot.emd2(wa / wa.sum(), wb / wb.sum(), np.abs(a[:, None] - b[None, :]) ** p)
    ours = sliced_wasserstein(torch.tensor(a[:, None]), torch.tensor(b[:, None]), directions=torch.ones(1, 1, dtype=D64),
                              weights1=torch.tensor(wa), weights2=torch.tensor(wb), p=p)
    assert float(ours) == pytest.approx(ref, rel=1e-10)


def test_shifted_copy_has_the_closed_form():
    """SW_2^2(mu, mu + v) = mean_l (theta_l . v)^2: the projections of a shifted copy are shifted."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(25, 6, generator=g, dtype=D64)
    v = torch.randn(6, generator=g, dtype=D64)
    theta = random_directions(200, 6, seed=5, dtype=D64)
    ours = sliced_wasserstein(x, x + v, directions=theta)
    assert float(ours) == pytest.approx(float(((theta @ v) ** 2).mean()), rel=1e-10)
    # and the Monte-Carlo estimate is unbiased for |v|^2 / d (4 standard errors at L = 20000)
    many = random_directions(20000, 6, seed=6, dtype=D64)
    proj = (many @ v) ** 2
    est = float(sliced_wasserstein(x, x + v, directions=many))
    assert abs(est - float(v @ v) / 6) < 4 * float(proj.std()) / np.sqrt(20000)


def test_self_matrix_is_symmetric_with_an_exact_zero_diagonal():
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(60, 4, generator=g), torch.arange(60) % 5
    m = sliced_wasserstein_classes(x, y, n_projections=30, seed=0)
    assert m.shape == (5, 5) and bool((m.diagonal() == 0).all())  # written zeros
    torch.testing.assert_close(m, m.T, rtol=0, atol=1e-6)


def test_chunks_and_quantile_grid():
    g = torch.Generator().manual_seed(8)
    x1, y1 = torch.randn(40, 3, generator=g, dtype=D64), torch.arange(40) % 4
    x2, y2 = torch.randn(37, 3, generator=g, dtype=D64), torch.arange(37) % 3
    theta = random_directions(16, 3, seed=9, dtype=D64)
    full = sliced_wasserstein_classes(x1, y1, x2, y2, directions=theta)
    tiny = sliced_wasserstein_classes(x1, y1, x2, y2, directions=theta, max_elements=50)
    torch.testing.assert_close(full, tiny, rtol=1e-12, atol=1e-14)
    # equal sizes, uniform weights: the fixed grid with Q = n levels is the exact quantile function
    xe, ye = x1, y1  # 10 per class
    exact = sliced_wasserstein_classes(xe, ye, directions=theta)
    grid = sliced_wasserstein_classes(xe, ye, directions=theta, method="quantiles", n_quantiles=10)
    torch.testing.assert_close(exact, grid, rtol=1e-12, atol=1e-14)
    # unequal sizes: the grid converges to the exact value
    fine = sliced_wasserstein_classes(x1, y1, x2, y2, directions=theta, method="quantiles", n_quantiles=4000)
    torch.testing.assert_close(fine, full, rtol=5e-3, atol=1e-4)


@pytest.mark.parametrize("sizes", [(12, 12), (9, 14)], ids=["equal", "unequal"])
def test_gradient_matches_finite_differences(sizes):
    g = torch.Generator().manual_seed(10)
    x1 = torch.randn(sizes[0] * 2, 3, generator=g, dtype=D64, requires_grad=True)
    y1 = torch.arange(sizes[0] * 2) % 2
    x2, y2 = torch.randn(sizes[1] * 2, 3, generator=g, dtype=D64), torch.arange(sizes[1] * 2) % 2
    theta = random_directions(8, 3, seed=11, dtype=D64)

    def f(x):
        return sliced_wasserstein_classes(x, y1, x2, y2, directions=theta).sum()

    (grad,) = torch.autograd.grad(f(x1), x1)
    h = 1e-6
    num = torch.zeros_like(x1)
    with torch.no_grad():
        for i in range(x1.shape[0]):  # tiny problem: a loop over coordinates is the reference
            for j in range(3):
                e = torch.zeros_like(x1)
                e[i, j] = h
                num[i, j] = (f(x1 + e) - f(x1 - e)) / (2 * h)
    # the objective is piecewise quadratic in x (sorting is locally constant): central
    # differences are exact up to rounding unless a step crosses a sort boundary (h = 1e-6)
    torch.testing.assert_close(grad, num, rtol=1e-6, atol=1e-8)


def test_a_class_flowed_onto_itself_has_a_zero_finite_gradient():
    g = torch.Generator().manual_seed(12)
    x2, y = torch.randn(20, 4, generator=g, dtype=D64), torch.arange(20) % 2
    for p in (1, 2):
        x1 = x2.clone().requires_grad_(True)
        value = sliced_wasserstein_classes(x1, y, x2, y, n_projections=10, p=p).diagonal().sum()
        (grad,) = torch.autograd.grad(value, x1)
        assert float(value.detach()) == 0.0 and bool(torch.isfinite(grad).all()) and float(grad.abs().max()) == 0.0


def test_bad_input_is_named():
    x, y = torch.randn(6, 2), torch.arange(6) % 2
    with pytest.raises(ValueError, match="method"):
        sliced_wasserstein_classes(x, y, method="grid")
    with pytest.raises(ValueError, match="dimension"):
        sliced_wasserstein_classes(x, y, directions=torch.ones(3, 5))
    with pytest.raises(ValueError, match="weights"):
        sliced_wasserstein_classes(x, y, weights1=-torch.ones(6))
    with pytest.raises(ValueError, match="y2"):
        sliced_wasserstein_classes(x, y, x)


def test_hand_written_backward_of_the_equal_size_path_passes_gradcheck():
    """p = 2, equal sizes: the pair means have a hand-written backward (two batched products);
    checked against finite differences, for a cross matrix and for a self matrix, where the
    same tensor is both arguments."""
    g = torch.Generator().manual_seed(13)
    x = torch.randn(12, 3, generator=g, dtype=D64, requires_grad=True)
    other, y = torch.randn(12, 3, generator=g, dtype=D64), torch.arange(12) % 2
    assert torch.autograd.gradcheck(lambda a: sliced_wasserstein_classes(a, y, other, y, n_projections=5), (x,))
    assert torch.autograd.gradcheck(lambda a: sliced_wasserstein_classes(a, y, n_projections=5), (x,))


def test_blocks_are_the_two_matrices_of_separate_calls_on_the_same_directions():
    from dsflow.ot.sliced import sliced_wasserstein_blocks

    g = torch.Generator().manual_seed(14)
    x1, y1 = torch.randn(30, 4, generator=g, dtype=D64, requires_grad=True), torch.arange(30) % 3
    x2, y2 = torch.randn(26, 4, generator=g, dtype=D64), torch.arange(26) % 2
    cross, self_ = sliced_wasserstein_blocks(x1, y1, x2, y2, n_projections=12, seed=3)
    # same seed, same directions: bit for bit the separate calls (same operations, same machine)
    assert torch.equal(cross, sliced_wasserstein_classes(x1, y1, x2, y2, n_projections=12, seed=3))
    assert torch.equal(self_, sliced_wasserstein_classes(x1, y1, n_projections=12, seed=3))
    (ga,) = torch.autograd.grad((cross.sum() + self_.sum()), x1)
    (gb,) = torch.autograd.grad(sliced_wasserstein_classes(x1, y1, x2, y2, n_projections=12, seed=3).sum()
                                + sliced_wasserstein_classes(x1, y1, n_projections=12, seed=3).sum(), x1)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("sizes1, sizes2, union", [([10, 11, 10], [11, 10, 11, 11], True),
                                                   ([5, 7, 9, 11], [6, 8, 13], False)])
def test_both_uniform_unequal_size_paths_match_pot(sizes1, sizes2, union):
    """A few distinct class sizes: every class on the union grid of breakpoints; many: one merged
    grid per pair of sizes.  Both are exact 1-D OT, checked here against POT, values and the
    gradient against the weighted general path."""
    from dsflow.ot.sliced import _common_grid, _SortedClasses

    g = torch.Generator().manual_seed(7)
    y1 = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes1)])
    y2 = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes2)])
    x1 = torch.randn(len(y1), 4, generator=g, dtype=D64).requires_grad_()
    x2 = torch.randn(len(y2), 4, generator=g, dtype=D64) + 0.3
    theta = random_directions(25, 4, seed=3, dtype=D64)
    assert (_common_grid(_SortedClasses(x1, y1, theta), _SortedClasses(x2, y2, theta)) is not None) == union
    for p in (1, 2):
        ours = sliced_wasserstein_classes(x1, y1, x2, y2, directions=theta, p=p)
        ref = np.array([[_pot(x1.detach()[y1 == i], x2[y2 == j], theta, p) for j in range(len(sizes2))]
                        for i in range(len(sizes1))])
        np.testing.assert_allclose(ours.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    # the gradient equals that of the general (weighted, sorted-breakpoint) path with unit weights
    ours = sliced_wasserstein_classes(x1, y1, x2, y2, directions=theta)
    (grad,) = torch.autograd.grad(ours.sum(), x1)
    general = sliced_wasserstein_classes(x1, y1, x2, y2, directions=theta, weights1=torch.ones(len(y1), dtype=D64))
    (ref_grad,) = torch.autograd.grad(general.sum(), x1)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_expanded_pair_sums_keep_exact_zeros_and_small_values_accurate():
    """The batched ``|a|^2 + |b|^2 - 2 a.b`` loses ~eps * |a|^2 to cancellation; pairs near
    that level are recomputed by differences, so identical classes give exactly 0 and a class
    shifted by 1e-3 keeps its tiny SW (float32 against a float64 reference)."""
    from dsflow.ot.sliced import _PairMeanSquare

    g = torch.Generator().manual_seed(11)
    a = torch.randn(4, 30, 50, generator=g, dtype=D64) + 3.0  # large means: cancellation-prone
    b = torch.cat([a[:2], a[2:3] + 1e-3, torch.randn(1, 30, 50, generator=g, dtype=D64)])
    ref = _PairMeanSquare.apply(a, b, 4, None, False)  # differences, float64
    ours = _PairMeanSquare.apply(a.float(), b.float(), 4, None, True)
    assert bool((ours[0, 0] == 0).all()) and bool((ours[1, 1] == 0).all())  # exact, not ~1e-6
    np.testing.assert_allclose(ours.double().numpy(), ref.numpy(), rtol=1e-4, atol=0)
    assert float(ours[2, 2].min()) > 0  # 1e-6-sized values survive (expansion error here ~1e-6)
