"""Log-domain Sinkhorn against POT (converged float64 reference) and geomloss."""

import numpy as np
import pytest
import torch

from dsflow.ot.costs import sqdist
from dsflow.ot.sinkhorn import epsilon_schedule, log_sinkhorn


def _entropic_reference(C, a, b, eps):
    """OT_eps with KL(pi | a x b), from POT's log-domain plan run to 1e-13."""
    import ot

    P = ot.bregman.sinkhorn_log(a, b, C, eps, numItermax=5000, stopThr=1e-10)
    return float((P * C).sum() + eps * (P * np.log(np.maximum(P, 1e-300) / np.outer(a, b))).sum())


def _clouds(n, m, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, dtype=dtype, generator=g), torch.randn(m, d, dtype=dtype, generator=g) + 0.5


@pytest.mark.parametrize("eps", [pytest.param(0.3, marks=pytest.mark.slow), 1.0])  # POT needs ~15 s at 0.3
def test_debiased_value_matches_pot_reference(eps):
    x, y = _clouds(40, 30, 3, 0)
    Cxy, Cxx, Cyy = sqdist(x, y), sqdist(x, x), sqdist(y, y)
    g = torch.Generator().manual_seed(3)
    a = torch.rand(40, dtype=torch.float64, generator=g) + 0.1
    a = a / a.sum()
    b = torch.full((30,), 1 / 30, dtype=torch.float64)
    val, pot = log_sinkhorn(Cxy, a, b, eps=eps, C_xx=Cxx, C_yy=Cyy, debias=True, tol=1e-9, max_iter=100000)
    an, bn = a.numpy(), b.numpy()
    ref = (_entropic_reference(Cxy.numpy(), an, bn, eps) - 0.5 * _entropic_reference(Cxx.numpy(), an, an, eps)
           - 0.5 * _entropic_reference(Cyy.numpy(), bn, bn, eps))
    assert pot.converged
    assert abs(float(val) - ref) <= 1e-7 * abs(ref)
    biased, _ = log_sinkhorn(Cxy, a, b, eps=eps, tol=1e-9, max_iter=100000)
    assert abs(float(biased) - _entropic_reference(Cxy.numpy(), an, bn, eps)) <= 1e-7 * abs(float(biased))


def test_matches_geomloss_with_documented_blur_mapping():
    from geomloss import SamplesLoss

    x, y = _clouds(80, 60, 3, 1, torch.float64)
    eps = 2.0
    # geomloss: cost |x-y|^2/2 and eps = blur^2 -> our eps = 2 blur^2 and our value = 2 x theirs
    loss = SamplesLoss("sinkhorn", p=2, blur=(eps / 2) ** 0.5, scaling=0.995, debias=True, backend="tensorized")
    ref = 2 * float(loss(x, y))
    val, _ = log_sinkhorn(sqdist(x, y), eps=eps, C_xx=sqdist(x, x), C_yy=sqdist(y, y), debias=True, tol=1e-9)
    assert abs(float(val) - ref) <= 1e-5 * abs(ref)


def test_default_tolerance_is_within_one_percent_where_few_scaling_steps_are_not():
    """The reference implementation's trap: one update per eps level understates the value."""
    from geomloss import SamplesLoss

    datasets = pytest.importorskip("sklearn.datasets")
    X, _ = datasets.load_digits(return_X_y=True)
    X = torch.tensor(X[:600] / 16.0, dtype=torch.float32)
    x, y = X[:300], X[300:]
    C = [sqdist(x, y), sqdist(x, x), sqdist(y, y)]
    conv, _ = log_sinkhorn(*C[:1], eps=0.1, C_xx=C[1], C_yy=C[2], debias=True, tol=1e-6, max_iter=20000)
    default, pot = log_sinkhorn(*C[:1], eps=0.1, C_xx=C[1], C_yy=C[2], debias=True)
    assert pot.converged
    assert abs(float(default) - float(conv)) <= 0.01 * float(conv)
    under = 2 * float(SamplesLoss("sinkhorn", p=2, blur=0.05**0.5, scaling=0.5, backend="tensorized")(x, y))
    assert abs(under - float(conv)) > 0.01 * float(conv)  # the default geomloss schedule is not converged


def test_warm_start_saves_iterations_and_keeps_value():
    x, y = _clouds(150, 140, 3, 2, torch.float32)
    C = lambda u: (sqdist(u, y), sqdist(u, u), sqdist(y, y))  # noqa: E731
    _, pot = log_sinkhorn(*C(x)[:1], eps=0.05, C_xx=C(x)[1], C_yy=C(x)[2], debias=True, tol=1e-4)
    x2 = x + 0.003 * torch.randn_like(x)
    cold, pc = log_sinkhorn(C(x2)[0], eps=0.05, C_xx=C(x2)[1], C_yy=C(x2)[2], debias=True, tol=1e-4)
    warm, pw = log_sinkhorn(C(x2)[0], eps=0.05, C_xx=C(x2)[1], C_yy=C(x2)[2], debias=True, tol=1e-4, init=pot)
    assert pw.schedule_steps == 0 and pc.schedule_steps > 0
    # 38 vs 60 updates (the cold start's scaling levels are alternating scaling-domain updates,
    # cheaper in iterations than geomloss' symmetric ones: 0.5 held before that change)
    assert pw.iterations + pw.schedule_steps < 0.7 * (pc.iterations + pc.schedule_steps)
    assert abs(float(warm) - float(cold)) <= 1e-4 * abs(float(cold))


def test_envelope_gradient_matches_finite_differences():
    x, y = _clouds(12, 10, 2, 4)
    x.requires_grad_(True)

    def f(u):
        v, _ = log_sinkhorn(sqdist(u, y), eps=0.5, C_xx=sqdist(u, u), C_yy=sqdist(y, y), debias=True, tol=1e-12, max_iter=100000)
        return v

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_padding_with_zero_weights_is_ignored():
    x, y = _clouds(20, 15, 2, 5)
    v, _ = log_sinkhorn(sqdist(x, y), eps=0.3, tol=1e-9)
    xp = torch.cat([x, 100 + torch.randn(5, 2, dtype=x.dtype)])
    a = torch.cat([torch.full((20,), 1 / 20, dtype=x.dtype), torch.zeros(5, dtype=x.dtype)])
    vp, _ = log_sinkhorn(sqdist(xp, y), a, None, eps=0.3, tol=1e-9)
    assert abs(float(v) - float(vp)) <= 1e-9 * abs(float(v))


def test_schedule_and_bad_input():
    s = epsilon_schedule(10.0, 0.1, 0.5)
    # exact: the end points are the arguments themselves (eps0 * scaling**0, and eps appended)
    assert s[0] == 10.0 and s[-1] == 0.1 and all(b < a for a, b in zip(s, s[1:]))
    with pytest.raises(ValueError, match="scaling"):
        epsilon_schedule(10.0, 0.1, 1.5)
    x, y = _clouds(5, 4, 2, 6)
    with pytest.raises(ValueError, match="eps"):
        log_sinkhorn(sqdist(x, y), eps=0.0)
    with pytest.raises(ValueError, match="debias"):
        log_sinkhorn(sqdist(x, y), eps=0.1, debias=True)


def test_softmin_backward_matches_autograd_and_finite_differences():
    from dsflow.ot.sinkhorn import softmin

    g = torch.Generator().manual_seed(7)
    C = (3 * torch.rand(2, 5, 4, dtype=torch.float64, generator=g)).requires_grad_()
    h = torch.randn(2, 4, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda c, u: softmin(0.3, c, u), (C, h), eps=1e-6, atol=1e-8)
    # against plain autograd through torch.logsumexp (an independent route)
    w = torch.randn(2, 5, dtype=torch.float64, generator=g)
    gC, gh = torch.autograd.grad((softmin(0.3, C, h) * w).sum(), (C, h))
    ref = -0.3 * torch.logsumexp(h[:, None, :] - C / 0.3, dim=-1)
    rC, rh = torch.autograd.grad((ref * w).sum(), (C, h))
    torch.testing.assert_close(gC, rC, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gh, rh, rtol=1e-12, atol=1e-14)
    # without gradients the same value comes from the no-graph route
    with torch.no_grad():
        torch.testing.assert_close(softmin(0.3, C, h), ref.detach(), rtol=1e-13, atol=1e-13)


def test_softmin_broadcasts_a_shared_cost_and_refuses_double_backward():
    from dsflow.ot.sinkhorn import softmin

    g = torch.Generator().manual_seed(8)
    C = torch.rand(4, 5, dtype=torch.float64, generator=g).requires_grad_()  # one cost, batch of h
    h = torch.randn(3, 5, dtype=torch.float64, generator=g).requires_grad_()
    out = softmin(0.5, C, h)
    ref = -0.5 * torch.logsumexp(h[:, None, :] - C / 0.5, dim=-1)
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-13)
    gC, gh = torch.autograd.grad(out.sum(), (C, h))
    rC, rh = torch.autograd.grad(ref.sum(), (C, h))
    torch.testing.assert_close(gC, rC, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gh, rh, rtol=1e-12, atol=1e-14)
    (g1,) = torch.autograd.grad(softmin(0.5, C, h).sum(), C, create_graph=True)
    with pytest.raises(RuntimeError):  # an error, not a silently wrong second derivative
        g1.sum().backward()
