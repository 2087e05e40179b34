"""The augmented cost and its hand-written backward, against autograd and finite differences."""

import pytest
import torch

from dsflow.ot.costs import ground_cost
from dsflow.ot.outer import augmented_cost


def _reference(x1, idx1, x2, idx2, W, fw, lw):
    # plain autograd through the definition (an independent route)
    return fw * ((x1[:, None, :] - x2[None, :, :]) ** 2).sum(-1) + lw * W[idx1[:, None], idx2[None, :]]


@pytest.mark.parametrize("fw,lw", [(1.0, 1.0), (0.5, 2.0)])
def test_cross_cost_values_and_gradients(fw, lw):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(7, 3, dtype=torch.float64, generator=g).requires_grad_()
    x2 = torch.randn(5, 3, dtype=torch.float64, generator=g).requires_grad_()
    W = torch.rand(3, 2, dtype=torch.float64, generator=g).requires_grad_()
    idx1 = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    idx2 = torch.tensor([1, 0, 1, 0, 1])
    C = augmented_cost(x1, idx1, x2, idx2, W, feature_weight=fw, label_weight=lw)
    torch.testing.assert_close(C, _reference(x1, idx1, x2, idx2, W, fw, lw), rtol=1e-12, atol=1e-12)
    G = torch.rand(7, 5, dtype=torch.float64, generator=g)
    got = torch.autograd.grad((C * G).sum(), (x1, x2, W))
    want = torch.autograd.grad((_reference(x1, idx1, x2, idx2, W, fw, lw) * G).sum(), (x1, x2, W))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda a, b, w: augmented_cost(a, idx1, b, idx2, w, feature_weight=fw, label_weight=lw), (x1, x2, W)
    )


def test_self_cost_uses_the_symmetric_gradient():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, dtype=torch.float64, generator=g).requires_grad_()
    W = torch.rand(2, 2, dtype=torch.float64, generator=g)
    W = (W + W.mT).fill_diagonal_(0).requires_grad_()
    idx = torch.tensor([0, 1, 1, 0, 1, 0])
    C = augmented_cost(x, idx, x, idx, W)
    G = torch.rand(6, 6, dtype=torch.float64, generator=g)  # not symmetric: both triangles count
    got = torch.autograd.grad((C * G).sum(), (x, W))
    want = torch.autograd.grad((_reference(x, idx, x, idx, W, 1.0, 1.0) * G).sum(), (x, W))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, w: augmented_cost(a, idx, a, idx, w), (x, W))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,d", [(6, 4), (50, 17), (300, 64)])
def test_self_cost_diagonal_is_zero_by_construction(n, d, dtype):
    # Exact 0.0 on purpose: the diagonal is written, not computed, so no kernel (AVX-512 FMA,
    # MKL blocking) can round it away from 0.  Before it was written, |x|^2+|x|^2-2x.x left
    # up to 1.5e-13 (float64) here, and 8.9e-16 at (6, 4) on some AVX-512/MKL machines.
    from dsflow.ot.costs import sqdist

    g = torch.Generator().manual_seed(n)
    x = (3 * torch.randn(n, d, generator=g, dtype=torch.float64)).to(dtype)
    idx = torch.arange(n) % 3
    W = torch.rand(3, 3, dtype=dtype, generator=g)
    W = (W + W.mT).fill_diagonal_(0)
    for C in (augmented_cost(x, idx, x, idx, W), ground_cost(x, x, 1), sqdist(x, x)):
        assert float(C.diagonal(dim1=-2, dim2=-1).abs().max()) == 0.0
    xb = x[None].repeat(2, 1, 1)
    assert float(sqdist(xb, xb).diagonal(dim1=-2, dim2=-1).abs().max()) == 0.0
    x4 = x[None, None].repeat(2, 1, 1, 1)  # broadcast route (4-d)
    assert float(sqdist(x4, x4).diagonal(dim1=-2, dim2=-1).abs().max()) == 0.0
    # coincident points off the diagonal are clamped at 0, and gradients stay finite
    xr = torch.cat([x, x[:2]]).requires_grad_()
    C = sqdist(xr, xr)
    assert float(C.detach().diagonal().abs().max()) == 0.0
    (gx,) = torch.autograd.grad((C * torch.rand(C.shape, generator=g, dtype=dtype)).sum(), xr)
    assert torch.isfinite(gx).all()


def test_other_exponents_and_no_labels():
    g = torch.Generator().manual_seed(2)
    x1, x2 = torch.randn(4, 2, generator=g), torch.randn(3, 2, generator=g)
    idx1, idx2 = torch.zeros(4, dtype=torch.long), torch.zeros(3, dtype=torch.long)
    torch.testing.assert_close(augmented_cost(x1, idx1, x2, idx2, None, p=1), ground_cost(x1, x2, 1))
    torch.testing.assert_close(augmented_cost(x1, idx1, x2, idx2, torch.ones(1, 1), label_weight=0.0),
                               ground_cost(x1, x2, 2))
    with pytest.raises(ValueError, match="feature dimensions"):
        augmented_cost(x1, idx1, torch.randn(3, 5), idx2, None)


@pytest.mark.parametrize("batched", [False, True])
def test_sqdist_backward_matches_autograd_of_the_definition(batched):
    from dsflow.ot.costs import sqdist

    g = torch.Generator().manual_seed(3)
    shape = (2,) if batched else ()
    x1 = torch.randn(*shape, 6, 3, dtype=torch.float64, generator=g).requires_grad_()
    x2 = torch.randn(*shape, 4, 3, dtype=torch.float64, generator=g).requires_grad_()
    G = torch.rand(*shape, 6, 4, dtype=torch.float64, generator=g)
    ref = ((x1[..., :, None, :] - x2[..., None, :, :]) ** 2).sum(-1)
    torch.testing.assert_close(sqdist(x1, x2), ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad((sqdist(x1, x2) * G).sum(), (x1, x2)),
                    torch.autograd.grad((ref * G).sum(), (x1, x2))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(sqdist, (x1, x2)) and torch.autograd.gradgradcheck(sqdist, (x1, x2))
    # self cost: one GEMM with G + G^T, same gradient as the definition
    assert torch.autograd.gradcheck(lambda u: sqdist(u, u), (x1,))


def test_sqdist_keeps_float32_under_a_callers_bf16_autocast():
    """Near-duplicate pixels (|x|^2 ~ 100): the expansion cancels, so a bf16 product (8
    mantissa bits) errs by ~0.5 in the cost, float32 by ~1e-4.  `full_precision_matmul`
    turns a caller's autocast (and, on CUDA, TF32) off inside the cost."""
    from dsflow.ot.costs import sqdist

    g = torch.Generator().manual_seed(4)
    x = torch.rand(64, 400, generator=g)
    y = x + 1e-2 * torch.randn(64, 400, generator=g)
    ref = sqdist(x.double(), y.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = (x * x).sum(-1)[:, None] + (y * y).sum(-1)[None, :] - 2.0 * (x @ y.mT).float()
        ours = sqdist(x, y)
        ours_bcast = sqdist(x[None, None], y[None, None])[0, 0]  # the broadcast route
    assert float((raw.double() - ref).abs().max()) > 0.05  # what the guard prevents
    for C in (ours, ours_bcast):
        assert C.dtype == torch.float32
        assert float((C.double() - ref).abs().max()) < 1e-3
