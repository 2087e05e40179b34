"""The OTDD functional: agreement with `otdd()`, label representations, caches, warm starts."""

import pytest
import torch

from dsflow.data.container import LabeledData
from dsflow.flow.state import ParticleState
from dsflow.functionals import OTDD
from dsflow.ot import class_gaussians, otdd


def _data(n, d, k, seed, shift=0.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, d, dtype=dtype, generator=g) + shift + 0.5 * y[:, None].to(dtype)
    return LabeledData(x, y)


def test_fd_value_equals_otdd_cost_and_gradient_is_feature_only():
    src, tgt = _data(15, 2, 3, 0), _data(14, 2, 4, 1, shift=1.0)
    F = OTDD(entreg=0.2, tol=1e-9).bind(target=tgt)
    x = src.x.clone().requires_grad_()
    v = F(ParticleState(x=x, y=src.y))
    ref = otdd(src, tgt, entreg=0.2, tol=1e-9).cost
    assert abs(float(v.detach()) - float(ref)) <= 1e-7 * float(ref)
    (g,) = torch.autograd.grad(v, x)
    # label_grad=False: the statistics are detached, so the gradient is that of OT with the
    # label-distance matrices held fixed (finite differences on x with W frozen)
    from dsflow.ot.labels import label_distances
    from dsflow.ot.gaussian import class_index
    from dsflow.ot.outer import augmented_ot

    LD = label_distances(src.x, src.y, tgt.x, tgt.y, blocks=("st", "ss", "tt"))
    xs = src.x.clone().requires_grad_()

    def frozen(u):
        return augmented_ot(u, class_index(src.y)[1], tgt.x, class_index(tgt.y)[1], LD.st, LD.ss, LD.tt,
                            entreg=0.2, tol=1e-12, max_iter=100000).value

    assert torch.autograd.gradcheck(frozen, (xs,), eps=1e-6, atol=1e-5, rtol=1e-4)
    (g_ref,) = torch.autograd.grad(frozen(xs), xs)
    assert torch.allclose(g, g_ref, atol=1e-6, rtol=1e-4)


def test_label_grad_true_matches_full_otdd_gradient():
    src, tgt = _data(30, 2, 2, 2), _data(30, 2, 3, 3, shift=0.5)
    F = OTDD(entreg=0.3, tol=1e-10, label_grad=True, target=tgt)
    x = src.x.clone().requires_grad_()
    (g,) = torch.autograd.grad(F(ParticleState(x=x, y=src.y)), x)
    x2 = src.x.clone().requires_grad_()
    (g2,) = torch.autograd.grad(otdd(LabeledData(x2, src.y), tgt, entreg=0.3, tol=1e-10).cost, x2)
    assert torch.allclose(g, g2, atol=1e-8, rtol=1e-6)


def test_joint_driven_gradients_match_finite_differences():
    src, tgt = _data(12, 2, 2, 4), _data(12, 2, 3, 5, shift=0.5)
    st = class_gaussians(src.x, src.y)
    means = st.means.clone().requires_grad_()
    factors = st.factors.clone().requires_grad_()
    x = src.x.clone().requires_grad_()
    F = OTDD(entreg=0.5, tol=1e-12, max_iter=100000, target=tgt)

    def f(x_, m_, F_):
        return F(ParticleState(x=x_, y=src.y, label_means=m_, label_factors=F_, label_index=src.y))

    # joint-driven with per-class rows equals fd with label_grad when rows are the class fits
    fd = OTDD(entreg=0.5, tol=1e-12, max_iter=100000, label_grad=True, target=tgt)
    assert abs(float(f(x, means, factors)) - float(fd(ParticleState(x=x, y=src.y)))) < 1e-9
    assert torch.autograd.gradcheck(f, (x, means, factors), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_jd_vl_one_gaussian_per_particle():
    src, tgt = _data(10, 2, 2, 6), _data(10, 2, 2, 7)
    st = class_gaussians(src.x, src.y)
    means = st.means[src.y].clone().requires_grad_()
    factors = st.factors[src.y].clone().requires_grad_()
    F = OTDD(entreg=0.5, target=tgt)
    v = F(ParticleState(x=src.x, y=src.y, label_means=means, label_factors=factors, label_index=torch.arange(10)))
    gm, gf = torch.autograd.grad(v, (means, factors))
    assert torch.isfinite(gm).all() and torch.isfinite(gf).all() and float(gm.abs().sum()) > 0


def test_warm_start_saves_iterations_with_same_value_and_reset():
    src, tgt = _data(120, 3, 3, 8, dtype=torch.float32), _data(110, 3, 3, 9, shift=0.3, dtype=torch.float32)
    warm = OTDD(entreg=0.05, tol=1e-4, target=tgt)
    cold = OTDD(entreg=0.05, tol=1e-4, warm_start=False, target=tgt)
    x = src.x.clone()
    warm(ParticleState(x=x, y=src.y))
    x2 = x + 0.002 * torch.randn_like(x)
    vw = warm(ParticleState(x=x2, y=src.y))
    vc = cold(ParticleState(x=x2, y=src.y))
    iw = warm.last_info["iterations"] + warm.last_info["schedule_steps"]
    ic = cold.last_info["iterations"] + cold.last_info["schedule_steps"]
    assert warm.last_info["warm"] and not cold.last_info["warm"]
    assert iw < ic
    assert abs(float(vw) - float(vc)) <= 1e-4 * abs(float(vc))
    warm.reset()
    warm(ParticleState(x=x2, y=src.y))
    assert not warm.last_info["warm"]


def test_target_caches_and_errors():
    tgt = _data(20, 2, 2, 10)
    F = OTDD(entreg=0.3)
    with pytest.raises(RuntimeError, match="bind"):
        F(ParticleState(x=tgt.x, y=tgt.y))
    F.bind(target=tgt)
    v = F(ParticleState(x=tgt.x.clone(), y=tgt.y))
    # debiased: flowing the target itself costs nothing -- up to the default tolerance
    # (tol=0.1: the cross and self solves stop at different points; value error second order)
    assert abs(float(v)) < 1e-3
    tight = OTDD(entreg=0.3, tol=1e-8, max_iter=100000, target=tgt)
    assert abs(float(tight(ParticleState(x=tgt.x.clone(), y=tgt.y)))) < 1e-6
    assert len(F._target_cache) == 1
    F(ParticleState(x=tgt.x.float(), y=tgt.y))  # another dtype: its own cache entry
    assert len(F._target_cache) == 2
    with pytest.raises(ValueError, match="inner"):
        OTDD(inner="bures")
    with pytest.raises(ValueError, match="p=2"):
        OTDD(inner="gaussian", p=1)
    with pytest.raises(TypeError, match="LabeledData"):
        OTDD().bind(target=tgt.x)
    ex = OTDD(inner="exact", target=tgt)
    st = class_gaussians(tgt.x, tgt.y)
    with pytest.raises(ValueError, match="joint-driven"):
        ex(ParticleState(x=tgt.x, y=tgt.y, label_means=st.means, label_factors=st.factors, label_index=tgt.y))


@pytest.mark.parametrize("inner,outer", [("exact", "sinkhorn"), ("means", "sinkhorn_biased"), ("none", "exact")])
def test_other_label_models_agree_with_otdd(inner, outer):
    src, tgt = _data(24, 2, 2, 11), _data(20, 2, 2, 12, shift=0.4)
    F = OTDD(inner=inner, outer=outer, entreg=0.3, tol=1e-9, target=tgt)
    v = F(ParticleState(x=src.x, y=src.y))
    ref = otdd(src, tgt, inner=inner, outer=outer, entreg=0.3, tol=1e-9).cost
    assert abs(float(v) - float(ref)) <= 1e-7 * abs(float(ref))


def test_hydra_config_instantiates():
    from pathlib import Path

    from omegaconf import OmegaConf
    from hydra.utils import instantiate

    import dsflow

    group = OmegaConf.load(Path(dsflow.__file__).parent.parent / "configs" / "functional" / "otdd.yaml")
    cfg = OmegaConf.create({"seed": 7, "functional": group})  # where Hydra puts the group: its seed is the run's
    F = instantiate(cfg.functional)
    assert isinstance(F, OTDD) and F.inner == "gaussian" and F.entreg == 0.1
    assert F.seed == 7 and F.target_batch is None


# ----------------------------------------------------------------------------- bug fixes
def test_warm_start_and_source_cache_never_cross_dtypes():
    # regression: a float64 call's warm start / label blocks were reused for a float32 state
    # (same tensor id after the float64 one was freed): "expected scalar type Float but found Double"
    src, tgt = _data(30, 2, 3, 13), _data(28, 2, 3, 14, shift=0.5)
    F = OTDD(entreg=0.3, tol=1e-6, target=tgt)
    F(ParticleState(x=src.x.clone(), y=src.y))
    v32 = F(ParticleState(x=src.x.float(), y=src.y))
    assert v32.dtype == torch.float32 and not F.last_info["warm"]  # stale warm start dropped
    ref = OTDD(entreg=0.3, tol=1e-6, target=tgt)(ParticleState(x=src.x.float(), y=src.y))
    assert abs(float(v32) - float(ref)) <= 1e-5 * abs(float(ref))
    # another number of particles: dropped as well
    v_small = F(ParticleState(x=src.x[:20].float(), y=src.y[:20]))
    assert torch.isfinite(v_small) and not F.last_info["warm"]


def test_huge_step_diverges_with_the_engines_nan_guard():
    from functools import partial

    from dsflow.flow.dynamics import FeatureDriven
    from dsflow.flow.engine import FlowDivergedError, run_flow
    from dsflow.ot.sinkhorn import epsilon_schedule

    src, tgt = _data(20, 2, 2, 15, dtype=torch.float32), _data(20, 2, 2, 16, shift=2.0, dtype=torch.float32)
    dyn = FeatureDriven()
    st = dyn.init_state(src)
    with pytest.raises(FlowDivergedError, match="diverged"):
        run_flow(st, OTDD(entreg=0.1, target=tgt), dyn, partial(torch.optim.SGD, lr=1e30), steps=5, progress=False)
    with pytest.raises(FloatingPointError, match="non-finite"):
        epsilon_schedule(float("inf"), 0.1, 0.5)
    # non-finite costs give a NaN value (no exception inside the solver)
    F = OTDD(entreg=0.1, target=tgt)
    x = src.x.clone()
    x[0, 0] = float("inf")
    assert not torch.isfinite(F(ParticleState(x=x, y=src.y)))
    assert F._warm is None  # and the next finite state solves normally
    assert torch.isfinite(F(ParticleState(x=src.x, y=src.y)))


def test_resumed_flow_equals_uninterrupted_flow(tmp_path):
    from functools import partial

    from dsflow.flow.dynamics import FeatureDriven
    from dsflow.flow.engine import run_flow

    src, tgt = _data(40, 3, 3, 17, dtype=torch.float32), _data(36, 3, 3, 18, shift=1.0, dtype=torch.float32)

    def flow(**kw):
        dyn = FeatureDriven()
        st = dyn.init_state(src)
        F = OTDD(entreg=0.1, target=tgt)
        res = run_flow(st, F, dyn, partial(torch.optim.Adam, lr=0.05), steps=8, progress=False, seed=3, **kw)
        return st, res, F

    st_ref, ref, F_ref = flow()

    def interrupt(step, record, state):
        if step == 5:
            raise KeyboardInterrupt

    ck = tmp_path / "ck"
    _, part, F_part = flow(checkpoint_every=4, checkpoint_dir=ck, callbacks=[interrupt])
    assert part.stop_reason == "interrupted"
    st, res, F = flow(checkpoint_every=4, checkpoint_dir=ck, resume=True)
    assert res.resumed_from == 4
    assert torch.equal(st.x.detach(), st_ref.x.detach())
    assert [h["objective"] for h in res.history] == [h["objective"] for h in ref.history]
    # the warm start was restored, not recomputed: without it the first resumed step differs
    sd = F_ref.state_dict()
    assert sd["warm"] is not None and sd["warm"]["f"].shape == (1, 40)
    G = OTDD(entreg=0.1, target=tgt)
    G.load_state_dict(sd)
    assert torch.equal(G._warm.f, sd["warm"]["f"])
    with pytest.raises(ValueError, match="state_dict"):
        G.load_state_dict({"nope": 1})


def test_default_settings_within_one_percent_of_converged_on_a_digits_flow():
    # fast version of scripts/bench_flow_digits.py: rotated, label-permuted digits flowing
    # toward the originals (fd dynamics, Adam lr 0.1, float32, warm starts, default tol=0.1);
    # every step's value is compared with a cold float64 solve at tol=1e-4 (value error second
    # order in the tolerance: ~1e-8)
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X[:150] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[:150])
    target = LabeledData(X, y)
    rotated = X.reshape(-1, 8, 8).rot90(1, (1, 2)).reshape(-1, 64).contiguous()
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    F = OTDD(target=target)
    assert F.tol == 0.1 and F.entreg == 0.1 and F.warm_start
    ref = OTDD(tol=1e-4, max_iter=100000, warm_start=False, target=LabeledData(X.double(), y))
    state = ParticleState(x=rotated.clone().requires_grad_(), y=perm[y])
    opt = torch.optim.Adam([state.x], lr=0.1)
    errors = []
    for step in range(4):
        value = F(state)
        if step in (1, 3):  # warm-started steps (the error grows along the flow)
            v_ref = float(ref(ParticleState(x=state.x.detach().double(), y=state.y)))
            errors.append(abs(float(value.detach()) - v_ref) / v_ref)
        opt.zero_grad()
        value.backward()
        opt.step()
    assert F.last_info["warm"]
    assert max(errors) < 1e-2, errors


def test_resume_of_a_weighted_sum_with_otdd_is_exact(tmp_path):
    # WeightedSum passes state_dict/load_state_dict through to its parts (the OTDD warm start)
    from functools import partial

    from dsflow.flow.dynamics import FeatureDriven
    from dsflow.flow.engine import run_flow
    from dsflow.functionals import BallConstraint, WeightedSum

    src, tgt = _data(40, 3, 3, 21, dtype=torch.float32), _data(36, 3, 3, 22, shift=1.0, dtype=torch.float32)

    def flow(**kw):
        dyn = FeatureDriven()
        st = dyn.init_state(src)
        F = WeightedSum({"otdd": OTDD(entreg=0.1), "ball": {"weight": 0.5, "functional": BallConstraint(radius=1.0)}})
        F.bind(target=tgt)
        res = run_flow(st, F, dyn, partial(torch.optim.Adam, lr=0.05), steps=8, progress=False, seed=3, **kw)
        return st, res, F

    st_ref, ref, F_ref = flow()
    assert set(F_ref.state_dict()) == {"otdd"}

    def interrupt(step, record, state):
        if step == 5:
            raise KeyboardInterrupt

    ck = tmp_path / "ck"
    flow(checkpoint_every=4, checkpoint_dir=ck, callbacks=[interrupt])
    st, res, _ = flow(checkpoint_every=4, checkpoint_dir=ck, resume=True)
    assert res.resumed_from == 4
    assert torch.equal(st.x.detach(), st_ref.x.detach())
    assert [h["objective"] for h in res.history] == [h["objective"] for h in ref.history]


def test_target_batches_are_drawn_per_step_and_give_the_otdd_to_that_batch():
    """target_batch=b: at step t the functional is the OTDD to b target samples per class drawn
    for (seed, t): equal to an OTDD bound to that very batch, and another batch at another step."""
    from dsflow.functionals.batches import class_members, per_class_rows

    g = torch.Generator().manual_seed(5)
    src = LabeledData(x=torch.randn(24, 3, generator=g, dtype=torch.float64), y=torch.arange(24) % 3)
    tgt = LabeledData(x=torch.randn(60, 3, generator=g, dtype=torch.float64) + 1, y=torch.arange(60) % 3)
    f = OTDD(entreg=0.5, tol=1e-6, target_batch=6, seed=3).bind(target=tgt)
    values = []
    for step in (0, 1):
        rows = per_class_rows(class_members(tgt.y), 6, 3, step)
        ref = OTDD(entreg=0.5, tol=1e-6).bind(target=tgt.subset(rows))
        state = ParticleState(x=src.x.clone(), y=src.y, step=step)
        values.append(float(f(state)))
        assert values[-1] == pytest.approx(float(ref(state)), rel=1e-9)
        assert f.target.n == 18 and torch.bincount(f.target.y).tolist() == [6, 6, 6]
    assert values[0] != values[1]  # another step, another batch
    big = OTDD(entreg=0.5, tol=1e-6, target_batch=100).bind(target=tgt)  # >= every class: the whole target
    whole = OTDD(entreg=0.5, tol=1e-6).bind(target=tgt)
    state = ParticleState(x=src.x.clone(), y=src.y, step=4)
    assert float(big(state)) == pytest.approx(float(whole(state)), rel=1e-9)
    with pytest.raises(ValueError, match="target_batch"):
        OTDD(target_batch=0)
    with pytest.raises(ValueError, match="target_batch=1"):
        OTDD(target_batch=1)  # Gaussian label model: classes of one sample
