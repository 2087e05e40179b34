"""`dsflow.ot.sw_kernels`: the WoW kernels on SW matrices (formulas, defaults, safe root at 0)."""

import math

import pytest
import torch

from dsflow.ot.sliced import sliced_wasserstein_classes
from dsflow.ot.sw_kernels import KERNELS, safe_root, sw_kernel

D64 = torch.float64


def test_formulas_and_the_papers_defaults():
    s = torch.tensor([0.0, 0.25, 4.0], dtype=D64)
    torch.testing.assert_close(sw_kernel("riesz", s), -s.sqrt())
    torch.testing.assert_close(sw_kernel("riesz", s, r=1.5), -s.pow(0.75))
    torch.testing.assert_close(sw_kernel("gaussian", s), torch.exp(-s / 0.2))
    torch.testing.assert_close(sw_kernel("laplace", s), torch.exp(-s / 0.5))
    torch.testing.assert_close(sw_kernel("imq", s), (1 + s) ** -0.5)
    assert {k: v[0] for k, v in KERNELS.items()} == {"riesz": 2, "gaussian": 2, "laplace": 1, "imq": 2}


def test_the_root_has_a_zero_finite_gradient_at_zero_and_the_true_one_elsewhere():
    s = torch.tensor([0.0, 0.0, 0.36, 2.0], dtype=D64, requires_grad=True)
    (g,) = torch.autograd.grad(safe_root(s).sum(), s)
    assert bool(torch.isfinite(g).all()) and g[:2].tolist() == [0.0, 0.0]
    torch.testing.assert_close(g[2:], 0.5 / s[2:].detach().sqrt())
    neg = torch.tensor([-1e-12], dtype=D64, requires_grad=True)  # round-off below 0 counts as 0
    (gn,) = torch.autograd.grad(safe_root(neg).sum(), neg)
    assert float(safe_root(neg.detach())) == 0.0 and float(gn) == 0.0


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_of_classes_has_finite_gradients_matching_finite_differences(name):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=g, dtype=D64, requires_grad=True)
    y = torch.arange(16) % 2
    target = torch.randn(16, 3, generator=g, dtype=D64)
    p = KERNELS[name][0]

    def f(a):
        return sw_kernel(name, sliced_wasserstein_classes(a, y, target, y, p=p, n_projections=6)).sum()

    assert torch.autograd.gradcheck(f, (x,))
    # a class against itself: K at SW = 0 with a finite (zero for the root) gradient
    z = target.clone().requires_grad_(True)
    (gz,) = torch.autograd.grad(
        sw_kernel(name, sliced_wasserstein_classes(z, y, target, y, p=p, n_projections=6)).diagonal().sum(), z)
    assert bool(torch.isfinite(gz).all())


def test_bad_kernels_and_parameters_are_named():
    s = torch.ones(2)
    with pytest.raises(ValueError, match="unknown kernel"):
        sw_kernel("cauchy", s)
    with pytest.raises(ValueError, match="unknown parameters"):
        sw_kernel("riesz", s, h=1)
    with pytest.raises(ValueError, match="r must lie"):
        sw_kernel("riesz", s, r=2)
    with pytest.raises(ValueError, match="h must be > 0"):
        sw_kernel("gaussian", s, h=0)
    assert math.isclose(float(sw_kernel("imq", torch.zeros(1))), 1.0)
