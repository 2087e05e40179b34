"""Potential energies: values and gradients vs hand computations and finite differences,
and flows of convex potentials reaching their known minimisers."""

import functools

import numpy as np
import pytest
import torch

from dsflow.data.container import LabeledData
from dsflow.flow.dynamics import FeatureDriven
from dsflow.flow.engine import run_flow
from dsflow.flow.state import ParticleState
from dsflow.functionals import (
    AffineNorm,
    BallConstraint,
    ClassAffineNorm,
    Collapse,
    FeatureNorm,
    Hinge,
    WeightedSum,
)


def make_state(x, y=None, requires_grad=True):
    x = torch.as_tensor(x, dtype=torch.float64).clone().requires_grad_(requires_grad)
    y = torch.zeros(len(x), dtype=torch.long) if y is None else torch.as_tensor(y)
    return ParticleState(x=x, y=y)


def grad_of(fn, state):
    v = fn(state)
    (g,) = torch.autograd.grad(v, state.x)
    return v.detach(), g


def random_state(n=7, d=3, seed=0, labels=(0, 1)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    y = torch.as_tensor(labels)[torch.arange(n) % len(labels)]
    return make_state(x, y)


def test_feature_norm_hand_values_and_gradient():
    s = make_state([[3.0, 4.0], [0.0, 0.0]])
    v, g = grad_of(FeatureNorm(), s)
    assert v.item() == pytest.approx(2.5)
    # d/dx (1/2)(||x1|| + ||x2||): x1/||x1|| / 2, and the subgradient 0 at the origin
    assert torch.allclose(g, torch.tensor([[0.3, 0.4], [0.0, 0.0]], dtype=torch.float64))
    v, g = grad_of(FeatureNorm(center=[1.0, 1.0], squared=True), s)
    assert v.item() == pytest.approx((13 + 2) / 2)
    assert torch.allclose(g, torch.tensor([[2.0, 3.0], [-1.0, -1.0]], dtype=torch.float64))


def test_affine_norm_matches_numpy():
    st = random_state()
    A = np.array([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])
    b = np.array([0.5, -1.0])
    v = AffineNorm(A.tolist(), b.tolist())(st)
    x = st.x.detach().numpy()
    assert v.item() == pytest.approx(np.linalg.norm(x @ A.T - b, axis=1).mean(), rel=1e-12)
    # A=None is the identity
    v2 = AffineNorm(b=[1.0, 2.0, 3.0])(st)
    assert v2.item() == pytest.approx(np.linalg.norm(x - [1, 2, 3], axis=1).mean(), rel=1e-12)


def test_class_affine_only_listed_classes():
    st = random_state(n=8, labels=(0, 1, 5))
    A0 = [[2.0, 0, 0], [0, 1, 0], [0, 0, 1]]
    b5 = [1.0, 1.0, 1.0]
    fn = ClassAffineNorm(A={0: A0}, b={5: b5})
    x, y = st.x.detach().numpy(), st.y.numpy()
    expected = np.zeros(len(x))
    for i in range(len(x)):  # brute force, one particle at a time
        if y[i] == 0:
            expected[i] = np.linalg.norm(np.array(A0) @ x[i])
        elif y[i] == 5:
            expected[i] = np.linalg.norm(x[i] - b5)
    assert fn(st).item() == pytest.approx(expected.mean(), rel=1e-12)
    v, g = grad_of(fn, st)
    assert torch.all(g[st.y == 1] == 0)  # class 1 is unconstrained: no term touches it, exact zeros


def test_hinge_label_mapping_and_values():
    w, b = [1.0, 0.0], 0.5
    s01 = make_state([[2.0, 0.0], [2.0, 0.0], [0.0, 3.0]], [1, 0, 0])
    # labels {0, 1}: 1 -> +1, 0 -> -1.  V = max(0, s (x.w - b))
    fn = Hinge(w=w, b=b)
    assert fn.signs(s01.y).tolist() == [1, -1, -1]
    assert fn(s01).item() == pytest.approx((1.5 + 0.0 + 0.5) / 3)
    spm = make_state([[2.0, 0.0], [2.0, 0.0]], [1, -1])
    assert Hinge(w=w, b=b).signs(spm.y).tolist() == [1, -1]
    assert Hinge(w=w, b=b, margin=1.0)(spm).item() == pytest.approx((2.5 + 0.0) / 2)
    three = make_state([[0.0, 0.0]] * 3, [0, 1, 2])
    with pytest.raises(ValueError, match="positive_label"):
        Hinge(w=w)(three)
    assert Hinge(w=w, positive_label=2).signs(three.y).tolist() == [-1, -1, 1]


def test_ball_and_collapse_values():
    s = make_state([[0.5, 0.0], [3.0, 4.0]])
    assert BallConstraint(radius=1.0)(s).item() == pytest.approx((0 + 4.0) / 2)
    assert BallConstraint(radius=1.0, center=[3.0, 0.0])(s).item() == pytest.approx((1.5 + 3.0) / 2)
    assert Collapse(dims=[1])(s).item() == pytest.approx(16.0 / 2)
    assert Collapse()(s).item() == pytest.approx((0.25 + 25.0) / 2)
    assert Collapse(dims=[0], center=1.0)(s).item() == pytest.approx((0.25 + 4.0) / 2)


@pytest.mark.parametrize(
    "fn",
    [
        FeatureNorm(),
        FeatureNorm(center=[0.1, -0.2, 0.3], p=3.0),
        AffineNorm([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]], [0.5, -1.0]),
        ClassAffineNorm(A={0: [[1.0, 0, 1], [0, 2, 0]]}, b={0: [1.0, 0.0], 1: [0.0, 1.0, -1.0]}),
        Hinge(w=[1.0, -2.0, 0.5], b=0.3, margin=0.7),
        BallConstraint(radius=0.5, center=[0.2, 0.0, 0.1]),
        Collapse(dims=[0, 2], center=[0.5, -0.5]),
    ],
    ids=lambda f: type(f).__name__,
)
def test_gradients_match_finite_differences(fn):
    st = random_state(n=6, d=3, seed=3)

    def f(x):
        return fn(ParticleState(x=x, y=st.y))

    # random points are away from the kinks (origin, hinge plane, sphere) almost surely
    assert torch.autograd.gradcheck(f, (st.x,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_parameter_shape_errors_are_clear():
    st = random_state(d=3)
    with pytest.raises(ValueError, match="must be \\(m, 3\\)"):
        AffineNorm(A=[[1.0, 0.0]])(st)
    with pytest.raises(ValueError, match="dimension d=3"):
        BallConstraint(center=[0.0, 0.0])(st)
    with pytest.raises(ValueError, match="out of range"):
        Collapse(dims=[5])(st)
    with pytest.raises(ValueError, match="radius"):
        BallConstraint(radius=-1)
    with pytest.raises(TypeError, match="mappings"):
        ClassAffineNorm(A=[[1.0]])


def _flow(fn, data, steps, lr, opt=torch.optim.SGD):
    dyn = FeatureDriven()
    st = dyn.init_state(data, dtype=torch.float64)
    res = run_flow(st, fn, dyn, functools.partial(opt, lr=lr), steps=steps, progress=False)
    return st, res


def test_flow_of_squared_norm_reaches_centre():
    data = LabeledData(torch.randn(50, 3) * 3, torch.zeros(50, dtype=torch.long))
    c = [1.0, -2.0, 0.5]
    # grad of the mean is (2/n)(x - c): lr = n/4 halves the distance every step
    st, res = _flow(FeatureNorm(center=c, squared=True), data, steps=60, lr=50 / 4)
    assert torch.allclose(st.x, torch.tensor(c, dtype=torch.float64).expand(50, 3), atol=1e-12)
    objs = [h["objective"] for h in res.history]
    assert all(a >= b for a, b in zip(objs, objs[1:]))


def test_flow_of_squared_affine_reaches_least_squares_solution():
    A = np.array([[2.0, 1.0], [0.0, 1.0]])
    b = np.array([1.0, -1.0])
    data = LabeledData(torch.randn(20, 2), torch.zeros(20, dtype=torch.long))
    st, _ = _flow(AffineNorm(A.tolist(), b.tolist(), squared=True), data, steps=400, lr=2.0)
    assert np.allclose(st.x.detach().numpy(), np.linalg.solve(A, b), atol=1e-8)


def test_flow_of_ball_and_collapse():
    data = LabeledData(torch.randn(40, 3, generator=torch.Generator().manual_seed(0)) * 4, torch.arange(40) % 2)
    fn = WeightedSum({"ball": BallConstraint(radius=1.0), "flat": Collapse(dims=[2])})
    # SGD: the ball's gradient is a unit radial vector / n, so lr = 0.02 n moves 0.02 per step
    # (outside particles reach the sphere within |x0| / 0.02 < 1000 steps, then jitter by <= 0.02)
    assert torch.linalg.vector_norm(data.x, dim=1).max() < 19
    st, res = _flow(fn, data, steps=1000, lr=0.8)
    x = st.x.detach()
    assert torch.linalg.vector_norm(x, dim=1).max() < 1.0 + 0.021
    assert x[:, 2].abs().max() < 0.02
    assert res.history[-1]["parts"]["ball"] < 1e-2


def test_flow_of_hinge_separates_classes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=g)
    y = (torch.arange(60) % 2)
    data = LabeledData(x, y)
    fn = Hinge(w=[1.0, 0.0], b=0.0, margin=0.5)
    st, res = _flow(fn, data, steps=400, lr=5.0)
    proj = st.x.detach()[:, 0]
    # positive class (1) ends at x.w <= b - margin (up to one step), negative at >= b + margin
    assert proj[st.y == 1].max() <= -0.5 + 1e-6
    assert proj[st.y == 0].min() >= 0.5 - 1e-6
    assert res.final_objective == pytest.approx(0.0, abs=1e-9)
