"""Interaction energies: brute-force values, analytic and finite-difference gradients,
chunked == unchunked, finite gradients at coincident particles."""

import numpy as np
import pytest
import torch

from dsflow.flow.state import ParticleState
from dsflow.functionals import ClassRepulsion, SquaredDistanceRepulsion


def make_state(n=9, d=3, seed=0, labels=(0, 1, 4), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_(True)
    y = torch.as_tensor(labels)[torch.arange(n) % len(labels)]
    return ParticleState(x=x, y=y)


def brute_force(x, y, kernel, weights=None):
    """(1 / 2n^2) sum over all ordered pairs, one pair at a time."""
    n = len(x)
    total = 0.0
    for i in range(n):
        for j in range(n):
            w = (weights or {}).get((y[i], y[j]), 1.0 if y[i] != y[j] else 0.0)
            total += w * kernel(np.linalg.norm(x[i] - x[j]))
    return total / (2 * n * n)


@pytest.mark.parametrize("bandwidth", [1.0, 0.5])
def test_exp_repulsion_matches_brute_force(bandwidth):
    st = make_state()
    x, y = st.x.detach().numpy(), st.y.tolist()
    expected = brute_force(x, y, lambda r: np.exp(-r / bandwidth))
    assert ClassRepulsion(bandwidth=bandwidth)(st).item() == pytest.approx(expected, rel=1e-12)


def test_squared_repulsion_and_pair_weights_match_brute_force():
    st = make_state()
    x, y = st.x.detach().numpy(), st.y.tolist()
    assert SquaredDistanceRepulsion()(st).item() == pytest.approx(brute_force(x, y, lambda r: -r * r), rel=1e-12)
    pw = {0: {1: 2.5, 0: 0.7}, 4: {1: 0.0}}
    weights = {(0, 1): 2.5, (1, 0): 2.5, (0, 0): 0.7, (4, 1): 0.0, (1, 4): 0.0}
    v = ClassRepulsion(pair_weights=pw)(st).item()
    assert v == pytest.approx(brute_force(x, y, lambda r: np.exp(-r), weights), rel=1e-12)


def test_squared_repulsion_analytic_gradient():
    st = make_state(n=8)
    x, y = st.x.detach(), st.y
    n = len(x)
    c = (y[:, None] != y[None, :]).double()
    # d/dx_i of -(1/2n^2) sum_{jk} c_jk |x_j - x_k|^2 = -(2/n^2) sum_j c_ij (x_i - x_j)
    expected = -(2.0 / n**2) * (c.sum(1, keepdim=True) * x - c @ x)
    (g,) = torch.autograd.grad(SquaredDistanceRepulsion()(st), st.x)
    assert torch.allclose(g, expected, atol=1e-14)


@pytest.mark.parametrize("fn", [ClassRepulsion(bandwidth=0.7, pair_weights={0: {0: 0.3}}), SquaredDistanceRepulsion()],
                         ids=["exp", "sq"])
def test_gradcheck_finite_differences(fn):
    st = make_state(n=6, d=2, seed=1)
    assert torch.autograd.gradcheck(lambda x: fn(ParticleState(x=x, y=st.y)), (st.x,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("cls", [ClassRepulsion, SquaredDistanceRepulsion])
def test_chunked_equals_unchunked(cls):
    st = make_state(n=23, d=4, seed=2)
    full = cls(chunk_elements=10**9)
    chunked = cls(chunk_elements=50)  # 2 rows of 23 per block: 12 blocks, checkpointed
    v1 = full(st)
    (g1,) = torch.autograd.grad(v1, st.x)
    v2 = chunked(st)
    (g2,) = torch.autograd.grad(v2, st.x)
    assert v2.item() == pytest.approx(v1.item(), rel=1e-13)
    assert torch.allclose(g1, g2, rtol=1e-12, atol=1e-15)


def test_gradient_finite_at_coincident_particles():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 1, 0, 1])
    # same-class self-interaction switched on: the diagonal i=j and the coincident pair
    # (0, 2) of one class both have zero distance
    fn = ClassRepulsion(pair_weights={0: {0: 1.0}})
    v = fn(ParticleState(x=x, y=y))
    (g,) = torch.autograd.grad(v, x)
    assert torch.isfinite(v) and torch.isfinite(g).all()
    # coincident particles contribute the subgradient 0: only the pair with x_3 pulls
    r = np.sqrt(5.0)
    # pairs (0, 3) and (3, 0): (1 / (2 n^2)) * 2 * k'(r) * (x_0 - x_3) / r with k' = -exp(-r)
    expected_0 = (1 / 16) * (-np.exp(-r)) * np.array([1.0, 2.0]) / r
    assert np.allclose(g[0].numpy(), expected_0, atol=1e-7)


def test_large_n_chunked_runs_with_bounded_blocks():
    n = 1500
    st = make_state(n=n, d=5, dtype=torch.float32)
    fn = ClassRepulsion(chunk_elements=n * 64)  # 64 rows per block, never n x n
    v = fn(st)
    v.backward()
    assert torch.isfinite(st.x.grad).all()
    # same value as an independent float64 evaluation of a subsample-free formula
    x = st.x.detach().double()
    d = torch.cdist(x, x)
    c = (st.y[:, None] != st.y[None, :]).double()
    assert v.item() == pytest.approx(float((c * torch.exp(-d)).sum() / (2 * n * n)), rel=1e-4)


def test_bad_options():
    with pytest.raises(ValueError, match="bandwidth"):
        ClassRepulsion(bandwidth=0)
    with pytest.raises(TypeError, match="pair_weights"):
        ClassRepulsion(pair_weights=[1, 2])
    with pytest.raises(ValueError, match="chunk_elements"):
        SquaredDistanceRepulsion(chunk_elements=0)
