"""`dsflow.functionals.mmd_sw`: the WoW functional against a brute-force double loop over class
pairs (POT's sliced Wasserstein on the same directions), finite differences (float64: differences
are rounding, 1e-7 relative for a central difference of step 1e-6), its time scaling through the
engine, mixed sums, and a flow that reaches its target."""

import functools

import numpy as np
import ot
import pytest
import torch

from dsflow.data.container import LabeledData
from dsflow.flow.dynamics import FeatureDriven
from dsflow.flow.engine import run_flow
from dsflow.functionals import MMDSW, FeatureNorm, WeightedSum
from dsflow.state import GaussianLabels, ParticleState

D64 = torch.float64


def _data(sizes, shift=0.0, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    x = torch.randn(len(y), d, generator=g, dtype=D64) + shift + y[:, None].to(D64)
    return x, y


def _kernel(name, sw_p, params):
    if name == "riesz":
        return -sw_p ** (params["r"] / 2)
    if name == "gaussian":
        return np.exp(-sw_p / (2 * params["h"]))
    if name == "laplace":
        return np.exp(-sw_p / params["h"])
    return (params["h"] + sw_p) ** -0.5


def _brute_force(f, x, y, xt, yt, step):
    """1/2 MMD^2 by a double loop over class pairs, each SW by POT on the functional's directions."""
    p = f.p
    theta = f._directions(step, x.shape[1], "cpu", D64).numpy().T
    theta_tt = f._directions(-1, x.shape[1], "cpu", D64).numpy().T

    def sw(a, b, proj):
        return ot.sliced_wasserstein_distance(a.numpy(), b.numpy(), projections=proj, p=p) ** p

    def weights(labels):
        counts = np.array([(labels == c).sum() for c in torch.unique(labels)], dtype=float)
        return np.full(len(counts), 1 / len(counts)) if f.class_weights == "uniform" else counts / counts.sum()

    cs, ct = torch.unique(y), torch.unique(yt)
    w, v = weights(y), weights(yt)
    total = 0.0
    for i, a in enumerate(cs):
        for j, b in enumerate(cs):
            k = 0.0 if i == j and f.kernel == "riesz" else _kernel(f.kernel, sw(x[y == a], x[y == b], theta),
                                                                    f.kernel_params)
            total += w[i] * w[j] * k
        for j, b in enumerate(ct):
            total -= 2 * w[i] * v[j] * _kernel(f.kernel, sw(x[y == a], xt[yt == b], theta), f.kernel_params)
    for i, a in enumerate(ct):
        for j, b in enumerate(ct):
            k = 0.0 if i == j and f.kernel == "riesz" else _kernel(f.kernel, sw(xt[yt == a], xt[yt == b], theta_tt),
                                                                    f.kernel_params)
            total += v[i] * v[j] * k
    return 0.5 * total


@pytest.mark.parametrize("kernel", ["riesz", "gaussian", "laplace", "imq"])
@pytest.mark.parametrize("weights", ["uniform", "counts"])
def test_value_matches_a_brute_force_double_loop(kernel, weights):
    x, y = _data([7, 9, 5])
    xt, yt = _data([8, 6, 10, 4], shift=0.5, seed=1)
    f = MMDSW(kernel=kernel, n_projections=40, class_weights=weights, seed=3).bind(target=LabeledData(x=xt, y=yt))
    state = ParticleState(x=x, y=y, step=5)
    ours = float(f(state))
    assert ours == pytest.approx(_brute_force(f, x, y, xt, yt, step=5), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("kernel", ["riesz", "gaussian", "imq", "laplace"])
def test_gradient_matches_finite_differences_for_unequal_classes(kernel):
    x, y = _data([5, 7, 4], d=3)
    xt, yt = _data([6, 3, 8], shift=0.7, d=3, seed=2)
    f = MMDSW(kernel=kernel, n_projections=30, class_weights="counts", seed=1).bind(target=LabeledData(x=xt, y=yt))
    xg = x.clone().requires_grad_()
    f(ParticleState(x=xg, y=y)).backward()
    eps = 1e-6
    g = torch.Generator().manual_seed(5)
    for _ in range(6):  # random coordinates: every class and both kinds of breakpoint get hit
        i, k = int(torch.randint(len(y), (1,), generator=g)), int(torch.randint(3, (1,), generator=g))
        xp, xm = x.clone(), x.clone()
        xp[i, k] += eps
        xm[i, k] -= eps
        fd = (float(f(ParticleState(x=xp, y=y))) - float(f(ParticleState(x=xm, y=y)))) / (2 * eps)
        assert float(xg.grad[i, k]) == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_a_dataset_flowed_onto_itself_has_a_zero_finite_gradient():
    x, y = _data([6, 6, 6])
    f = MMDSW(n_projections=50).bind(target=LabeledData(x=x.clone(), y=y.clone()))
    xg = x.clone().requires_grad_()
    value = f(ParticleState(x=xg, y=y, step=0))
    value.backward()
    assert torch.isfinite(xg.grad).all()
    assert float(xg.grad.abs().max()) < 1e-12  # the source and target terms cancel exactly


def test_particle_masses_are_class_weight_over_class_size():
    y = torch.tensor([0, 0, 0, 1, 2, 2])
    np.testing.assert_allclose(MMDSW().particle_masses(y).numpy(), [1 / 9] * 3 + [1 / 3] + [1 / 6] * 2)
    np.testing.assert_allclose(MMDSW(class_weights="counts").particle_masses(y).numpy(), [1 / 6] * 6)
    assert MMDSW().velocity_factor(y) == 1


def _one_engine_step(objective, x, y, lr):
    state = ParticleState(x=x.clone(), y=y)
    dyn = FeatureDriven()
    state = dyn.init_state(LabeledData(x=x.clone(), y=y), dtype=D64)
    run_flow(state, objective, dyn, functools.partial(torch.optim.SGD, lr=lr), steps=1, progress=False,
             evaluate_final=False)
    return state.x.detach()


def test_the_engine_divides_each_gradient_by_its_particle_mass():
    x, y = _data([3, 8])
    xt, yt = _data([5, 5], shift=1.0, seed=4)
    f = MMDSW(n_projections=20).bind(target=LabeledData(x=xt, y=yt))
    xg = x.clone().requires_grad_()
    f(ParticleState(x=xg, y=y, step=0)).backward()
    expected = x - 0.3 * xg.grad / f.particle_masses(y)[:, None]
    torch.testing.assert_close(_one_engine_step(f, x, y, 0.3), expected, rtol=1e-12, atol=1e-12)


def test_a_mixed_sum_moves_each_term_at_its_own_velocity():
    """MMD-SW (mass w_c/n_c) + a potential (mass 1/n): velocity grad_mmd / m + n grad_pot."""
    x, y = _data([3, 8])
    xt, yt = _data([5, 5], shift=1.0, seed=4)
    target = LabeledData(x=xt, y=yt)
    mmd, pot = MMDSW(n_projections=20).bind(target=target), FeatureNorm()
    total = WeightedSum({"mmd": mmd, "norm": {"weight": 0.5, "functional": pot}}).bind(target=target)
    assert total.time_scaling == "class_mass" and total.velocity_factor(y) == 1
    g_mmd, g_pot = x.clone().requires_grad_(), x.clone().requires_grad_()
    mmd(ParticleState(x=g_mmd, y=y, step=0)).backward()
    pot(ParticleState(x=g_pot, y=y, step=0)).backward()
    velocity = g_mmd.grad / mmd.particle_masses(y)[:, None] + 0.5 * len(y) * g_pot.grad
    torch.testing.assert_close(_one_engine_step(total, x, y, 0.1), x - 0.1 * velocity, rtol=1e-12, atol=1e-12)


def test_class_mass_terms_with_different_masses_are_refused():
    y = torch.tensor([0, 0, 0, 1])
    total = WeightedSum({"a": MMDSW(), "b": MMDSW(class_weights="counts")})
    with pytest.raises(ValueError, match="different masses"):
        total.particle_masses(y)


def test_a_class_flows_onto_a_shifted_copy_of_itself():
    """-SW_2 is not smooth at its minimum (like |x|): a constant step ends in a cycle of size ~lr
    around the target, so the step decays (cosine) as a flow run to convergence would."""
    x, y = _data([20], d=2)
    target = LabeledData(x=x + torch.tensor([3.0, -2.0], dtype=D64), y=y)
    f = MMDSW(n_projections=64).bind(target=target)
    dyn = FeatureDriven()
    state = dyn.init_state(LabeledData(x=x.clone(), y=y), dtype=D64)
    result = run_flow(state, f, dyn, functools.partial(torch.optim.SGD, lr=0.5), steps=100, progress=False,
                      schedule="cosine")
    assert result.history[0]["objective"] > 1.0 and result.final_objective < 1e-3
    w2 = ot.emd2([], [], ot.dist(state.x.detach().numpy(), target.x.numpy()))  # 13 at the start
    assert w2 < 1e-4
    assert float((state.x.detach() - target.x).abs().max()) < 1e-2  # each particle near its shifted copy


def test_target_batches_are_per_class_seeded_and_change_with_the_step():
    xt, yt = _data([30, 4], seed=1)
    f = MMDSW(target_batch=10, seed=2).bind(target=LabeledData(x=xt, y=yt))
    tc = f._target(torch.device("cpu"), D64)
    a0, b0 = f._target_batch(tc, 0)
    a0_again, _ = f._target_batch(tc, 0)
    a1, _ = f._target_batch(tc, 1)
    assert torch.bincount(b0).tolist() == [10, 4]  # a class smaller than the batch is used whole
    assert torch.equal(a0, a0_again) and not torch.equal(a0, a1)
    # a batch at least as large as every class is the whole target: the same value
    x, y = _data([5, 5])
    full = MMDSW(seed=2).bind(target=LabeledData(x=xt, y=yt))
    big = MMDSW(seed=2, target_batch=30).bind(target=LabeledData(x=xt, y=yt))
    s = ParticleState(x=x, y=y, step=3)
    assert float(big(s)) == pytest.approx(float(full(s)), rel=1e-12)


def test_bad_options_and_states_are_named():
    with pytest.raises(ValueError, match="functional.kernel"):
        MMDSW(kernel="rbf")
    with pytest.raises(ValueError, match="functional.h=null"):
        MMDSW(kernel="riesz", h=0.3)
    with pytest.raises(ValueError, match="functional.r=1"):
        MMDSW(kernel="gaussian", r=0.5)
    with pytest.raises(ValueError, match=r"\(0, 2\)"):
        MMDSW(r=2.0)
    with pytest.raises(ValueError, match="class_weights"):
        MMDSW(class_weights="balanced")
    x, y = _data([4, 4])
    f = MMDSW().bind(target=LabeledData(x=x, y=y))
    jd = ParticleState(x=x, y=y, labels=GaussianLabels(means=torch.zeros(2, 4, dtype=D64)))
    with pytest.raises(ValueError, match="dynamics=fd"):
        f.check(jd)
    with pytest.raises(ValueError, match="3 features but the target 4"):
        f.check(ParticleState(x=x[:, :3], y=y))


def test_a_resumed_wow_flow_repeats_the_uninterrupted_one(tmp_path):
    """Directions and target batches come from (seed, step), so a resume needs no saved state
    of the functional: the resumed run ends where the uninterrupted one does (same machine)."""
    x, y = _data([6, 9])
    xt, yt = _data([7, 8], shift=1.0, seed=3)
    target = LabeledData(x=xt, y=yt)
    opt = functools.partial(torch.optim.SGD, lr=0.2, momentum=0.9)

    def flow(steps, **kw):
        f = MMDSW(n_projections=16, target_batch=5, seed=4).bind(target=target)
        dyn = FeatureDriven()
        state = dyn.init_state(LabeledData(x=x.clone(), y=y), dtype=D64)
        run_flow(state, f, dyn, opt, steps=steps, progress=False, **kw)
        return state.x.detach()

    straight = flow(6)
    flow(3, checkpoint_every=3, checkpoint_dir=tmp_path)
    resumed = flow(6, checkpoint_every=3, checkpoint_dir=tmp_path, resume=True)
    assert torch.equal(resumed, straight)


def test_unknown_options_name_the_override_that_drops_them():
    with pytest.raises(ValueError, match=r"functional.entreg is not an option.*~functional.entreg"):
        MMDSW(entreg=1.0)
