"""The online (chunked) outer Sinkhorn against the tensorized path it replaces at large n.

The tensorized path is itself tested against POT and geomloss (test_sinkhorn.py), so here it
is the reference: same value and same gradients (w.r.t. both feature sets and the label
tables), for chunk sizes that do not divide n, unequal n and m, the debiased self terms, a
cached target self problem, warm starts, and p != 2.  In float64 at tol 1e-10 both solvers
reach the same fixed point to ~1e-12 (their iterates differ: log domain vs scaling domain),
so 1e-9 is a margin of 1000x.
"""

import math

import pytest
import torch

from dsflow.ot.online import BlockCost, choose_cost_backend, online_self_potential, tensorized_bytes
from dsflow.ot.outer import augmented_ot
from dsflow.ot.problem import make_problem

F64 = torch.float64


def _sym(k, g, dtype=F64):
    W = torch.rand(k, k, dtype=dtype, generator=g)
    return (W + W.mT).fill_diagonal_(0)


def _problem(n, m, d, k, kk, seed, dtype=F64, grad_w=True):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(n, d, dtype=dtype, generator=g)
    xt = torch.randn(m, d, dtype=dtype, generator=g) + 0.5
    ys = torch.randint(0, k, (n,), generator=g)
    yt = torch.randint(0, kk, (m,), generator=g)
    W = {"st": torch.rand(k, kk, dtype=dtype, generator=g), "ss": _sym(k, g, dtype), "tt": _sym(kk, g, dtype)}
    if grad_w:
        W["st"].requires_grad_()
        W["ss"].requires_grad_()
    return xs.requires_grad_(), ys, xt.requires_grad_(), yt, W


def _run(xs, ys, xt, yt, W, backend, chunk=None, **kw):
    opts = dict(outer="sinkhorn", entreg=0.5, tol=1e-10, max_iter=100_000)
    opts.update(kw)
    res = augmented_ot(xs, ys, xt, yt, W["st"], W["ss"], W["tt"], cost_backend=backend, chunk_size=chunk, **opts)
    wrt = [t for t in (xs, xt, W["st"], W["ss"]) if t.requires_grad]
    grads = torch.autograd.grad(res.value, wrt, allow_unused=True)
    return res, grads


def _close(got, want, rtol):
    scale = max(float(want.abs().max()), 1e-30)
    assert float((got - want).abs().max()) <= rtol * scale, (float((got - want).abs().max()), scale)


@pytest.mark.parametrize("outer", ["sinkhorn", "sinkhorn_biased"])
@pytest.mark.parametrize("n,m,chunk", [(37, 29, 7), (40, 40, 40), (23, 51, 2), (50, 17, 64)])
def test_value_and_gradients_match_the_tensorized_path(n, m, chunk, outer):
    xs, ys, xt, yt, W = _problem(n, m, 5, 3, 4, seed=n + m)
    ref, gref = _run(xs, ys, xt, yt, W, "tensorized", outer=outer)
    got, ggot = _run(xs, ys, xt, yt, W, "online", chunk, outer=outer)
    assert ref.info["cost_backend"] == "tensorized" and got.info["cost_backend"] == "online"
    assert got.potentials.converged and got.potentials.f.shape == ref.potentials.f.shape == (1, n)
    assert abs(float(got.value.detach()) - float(ref.value.detach())) <= 1e-9 * abs(float(ref.value.detach()))
    for a, b in zip(ggot, gref):
        assert (a is None) == (b is None)
        if a is not None:
            _close(a, b, 1e-9)
    # dual potentials are unique up to (f + c, g - c): compare after fixing f's mean
    c_got, c_ref = got.potentials.f.mean(), ref.potentials.f.mean()
    torch.testing.assert_close(got.potentials.f - c_got, ref.potentials.f - c_ref, rtol=0, atol=1e-9)
    torch.testing.assert_close(got.potentials.g + c_got, ref.potentials.g + c_ref, rtol=0, atol=1e-9)
    if outer == "sinkhorn":
        torch.testing.assert_close(got.potentials.f_self, ref.potentials.f_self, rtol=0, atol=1e-9)
        torch.testing.assert_close(got.potentials.g_self, ref.potentials.g_self, rtol=0, atol=1e-9)


def test_features_only_unequal_weights_and_p1():
    g = torch.Generator().manual_seed(5)
    xs = torch.randn(31, 4, dtype=F64, generator=g).requires_grad_()
    xt = torch.randn(19, 4, dtype=F64, generator=g).requires_grad_()
    a = torch.rand(31, dtype=F64, generator=g) + 0.1
    a[3] = 0.0  # a zero weight (padding) as the tensorized path allows
    ys, yt = torch.zeros(31, dtype=torch.long), torch.zeros(19, dtype=torch.long)
    for p in (2, 1):
        vals, grads = [], []
        for be, ch in (("tensorized", None), ("online", 6)):
            res = augmented_ot(xs, ys, xt, yt, None, None, None, a=a, p=p, entreg=0.3, tol=1e-10, max_iter=100_000,
                               cost_backend=be, chunk_size=ch, label_weight=0.0)
            vals.append(float(res.value.detach()))
            grads.append(torch.autograd.grad(res.value, (xs, xt)))
        assert abs(vals[0] - vals[1]) <= 1e-9 * abs(vals[0])
        for u, v in zip(*grads):
            _close(v, u, 1e-8)


def test_cached_target_self_problem_matches():
    xs, ys, xt, yt, W = _problem(26, 33, 3, 2, 3, seed=7, grad_w=False)
    pb = make_problem(inner="means", entreg=0.5, tol=1e-10, max_iter=100_000)
    log_b = torch.full((33,), -math.log(33), dtype=F64)
    cost = BlockCost(xt.detach(), yt, xt.detach(), yt, W["tt"], same=True)
    g_on, half_on, _ = online_self_potential(cost, log_b, eps=0.5, tol=1e-10, max_iter=100_000, chunk_size=5)
    g_te, half_te, _ = pb.target_self(xt.detach(), yt, W["tt"], log_b)
    assert g_on.shape == g_te.shape and half_on.shape == half_te.shape
    torch.testing.assert_close(g_on, g_te, rtol=0, atol=1e-9)
    torch.testing.assert_close(half_on, half_te, rtol=1e-10, atol=0)
    # the same cached solution feeds both back-ends' outer solves
    ref, gref = _run(xs, ys, xt, yt, W, "tensorized", target_self=(g_te, half_te))
    got, ggot = _run(xs, ys, xt, yt, W, "online", 4, target_self=(g_te, half_te))
    full, _ = _run(xs, ys, xt, yt, W, "tensorized")
    assert abs(float(got.value.detach()) - float(ref.value.detach())) <= 1e-9 * abs(float(ref.value.detach()))
    assert abs(float(got.value.detach()) - float(full.value.detach())) <= 1e-9 * abs(float(full.value.detach()))
    for a, b in zip(ggot, gref):
        _close(a, b, 1e-9)


def test_float32_agrees_to_rounding():
    """float32 against a float64 solve of the same points (the independent reference).

    Both paths stop at tol 1e-4 (a marginal error: the value is second order in it, the
    gradient first order) and round the GEMM expansion |x|^2 + |y|^2 - 2xy (~6e-8 relative of
    |x|^2 ~ 30 per entry).  Bounds: value 1e-6 relative (measured 2e-7 tensorized, 9e-9
    online), gradients 1e-4 of their largest entry (first order in tol; measured 1.9e-5)."""
    xs, ys, xt, yt, W = _problem(120, 90, 30, 4, 5, seed=11, dtype=torch.float32, grad_w=False)
    x64, xt64 = xs.detach().double().requires_grad_(), xt.detach().double().requires_grad_()
    ref, gref = _run(x64, ys, xt64, yt, {k: v.double() for k, v in W.items()}, "tensorized", tol=1e-12)
    v_ref = float(ref.value.detach())
    for backend, chunk in (("tensorized", None), ("online", 37)):
        got, ggot = _run(xs, ys, xt, yt, W, backend, chunk, tol=1e-4, max_iter=5000)
        assert got.info["cost_backend"] == backend and got.potentials.converged
        assert abs(float(got.value.detach()) - v_ref) <= 1e-6 * abs(v_ref)
        for a, b in zip(ggot, gref):
            _close(a.double(), b, 1e-4)


def test_no_n_by_m_tensor_is_ever_formed():
    """Every tensor an online solve + backward creates (seen by a dispatch mode, so the
    backward's ops count too) is far smaller than n x m: blocks are chunk x m."""
    from torch.utils._python_dispatch import TorchDispatchMode

    n, m, chunk = 60, 50, 4

    class Largest(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    Largest.largest = max(Largest.largest, t.numel())
            return out

    xs, ys, xt, yt, W = _problem(n, m, 3, 3, 2, seed=2)
    with Largest():
        _run(xs, ys, xt, yt, W, "online", chunk, tol=1e-2, entreg=2.0)
    assert 0 < Largest.largest <= chunk * max(n, m)
    Largest.largest = 0
    with Largest():
        _run(xs, ys, xt, yt, W, "tensorized", tol=1e-2, entreg=2.0)
    assert Largest.largest >= n * m  # the probe sees the matrices the tensorized path holds


def test_the_functional_flows_the_same_on_both_paths():
    """Two flow steps with warm starts (the second solve starts from the first's potentials)."""
    from dsflow.data.container import LabeledData
    from dsflow.flow.state import ParticleState
    from dsflow.functionals.otdd import OTDD

    g = torch.Generator().manual_seed(3)
    target = LabeledData(torch.randn(45, 6, generator=g, dtype=F64), torch.arange(45) % 3)
    x0 = torch.randn(38, 6, generator=g, dtype=F64)
    y0 = torch.arange(38) % 4
    traj = {}
    for be, ch in (("tensorized", None), ("online", 9)):
        F = OTDD(inner="gaussian", entreg=0.5, tol=1e-10, max_iter=100_000, cost_backend=be, chunk_size=ch,
                 allow_singletons=True).bind(target=target)
        x = x0.clone().requires_grad_()
        vals = []
        for _ in range(3):
            v = F(ParticleState(x=x, y=y0))
            (gx,) = torch.autograd.grad(v, x)
            vals.append(float(v.detach()))
            x = (x.detach() - 5.0 * gx).requires_grad_()
        assert F.last_info["cost_backend"] == be and F.last_info["warm"]
        traj[be] = (vals, x.detach())
    for u, v in zip(traj["tensorized"][0], traj["online"][0]):
        assert abs(u - v) <= 1e-9 * abs(u)
    torch.testing.assert_close(traj["online"][1], traj["tensorized"][1], rtol=0, atol=1e-8)


def test_auto_picks_by_the_memory_budget():
    xs, ys, xt, yt, W = _problem(30, 20, 3, 2, 2, seed=4, grad_w=False)
    need = tensorized_bytes(30, 20, 8, self_x=True, self_y=True)
    assert need == 8 * (3 * 600 + 3 * 900 + 2 * 400)
    gib = 1 << 30
    assert choose_cost_backend("auto", 30, 20, F64, "cpu", self_x=True, self_y=True,
                               memory_budget_gb=need / gib) == "tensorized"
    assert choose_cost_backend("auto", 30, 20, F64, "cpu", self_x=True, self_y=True,
                               memory_budget_gb=(need - 1) / gib) == "online"
    res = augmented_ot(xs, ys, xt, yt, W["st"], W["ss"], W["tt"], entreg=0.5, memory_budget_gb=1e-6)
    assert res.info["cost_backend"] == "online"
    assert augmented_ot(xs, ys, xt, yt, W["st"], W["ss"], W["tt"], entreg=0.5).info["cost_backend"] == "tensorized"
    # a coupling is n x m: auto keeps it tensorized, online refuses it
    res = augmented_ot(xs, ys, xt, yt, W["st"], W["ss"], W["tt"], entreg=0.5, memory_budget_gb=1e-6,
                       return_coupling=True)
    assert res.coupling.shape == (30, 20)
    with pytest.raises(ValueError, match="cost_backend='tensorized'"):
        augmented_ot(xs, ys, xt, yt, W["st"], W["ss"], W["tt"], entreg=0.5, cost_backend="online",
                     return_coupling=True)


@pytest.mark.parametrize("kw,match", [
    ({"cost_backend": "keops"}, "cost_backend must be one of"),
    ({"chunk_size": 0}, "chunk_size must be a positive integer"),
    ({"chunk_size": 2.5}, "chunk_size must be a positive integer"),
    ({"memory_budget_gb": 0}, "memory_budget_gb must be > 0"),
    ({"solver": "geomloss", "cost_backend": "online"}, "solver='dsflow' with cost_backend='online'"),
])
def test_bad_options_are_refused_by_name(kw, match):
    with pytest.raises(ValueError, match=match):
        make_problem(inner="none", caller="OTDD", **kw)


def test_non_finite_particles_give_a_nan_value():
    xs, ys, xt, yt, W = _problem(12, 10, 3, 2, 2, seed=6, grad_w=False)
    bad = xs.detach().clone()
    bad[2, 1] = float("inf")
    res = augmented_ot(bad, ys, xt.detach(), yt, W["st"], W["ss"], W["tt"], entreg=0.5, cost_backend="online")
    assert math.isnan(float(res.value)) and res.potentials.info["non_finite_cost"]
