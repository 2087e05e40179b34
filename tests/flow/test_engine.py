"""The particle loop: resume, NaN guard, early stopping, box, clipping, schedules,
trajectories, noise, callbacks."""

import json
import math

import numpy as np
import pytest
import torch
from flow_helpers import LabelGaussianSinkhorn, Scripted, adam, blobs, sgd

from dsflow.data.container import LabeledData
from dsflow.flow.checkpoint import list_checkpoints
from dsflow.flow.dynamics import FeatureDriven, JointDrivenVariableLabel
from dsflow.flow.engine import FlowDivergedError, make_scheduler, objective_rose, run_flow
from dsflow.functionals import AffineNorm, BallConstraint, Entropy, FeatureNorm, WeightedSum
from dsflow.functionals.base import Functional


def fd_state(n=20, d=2, seed=0, dtype=torch.float32, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    data = LabeledData(scale * torch.randn(n, d, generator=g, dtype=torch.float64), torch.arange(n) % 2)
    dyn = FeatureDriven()
    return dyn.init_state(data, dtype=dtype), dyn


def quadratic(center=(0.0, 0.0)):
    return FeatureNorm(center=list(center), squared=True)


# ----------------------------------------------------------------------------- resume
def _jd_vl_run(tmp_path, steps, **kw):
    src = blobs([[0, 0], [0, 4]], n_per_class=12, seed=1)
    tgt = blobs([[5, -4], [5, 0], [5, 4]], n_per_class=8, seed=2)
    dyn = JointDrivenVariableLabel(clustering="kmeans", n_clusters=3, cov_features="full", recluster_every=2)
    st = dyn.init_state(src)
    obj = WeightedSum({"ot": LabelGaussianSinkhorn().bind(target=tgt),
                       "noise": Entropy(temperature=0.05)})
    res = run_flow(st, obj, dyn, adam(0.1), steps=steps, progress=False, seed=5,
                   schedule={"name": "cosine"}, trajectory_every=2, **kw)
    return st, res


def test_resume_reproduces_uninterrupted_run(tmp_path):
    st_ref, ref = _jd_vl_run(tmp_path, steps=10)

    def interrupt(step, record, state):
        if step == 6:  # after the checkpoint of step 6 (checkpoint_every=3) was... not yet written
            raise KeyboardInterrupt

    ckdir = tmp_path / "ck"
    _, part = _jd_vl_run(tmp_path, steps=10, checkpoint_every=3, checkpoint_dir=ckdir, callbacks=[interrupt])
    assert part.stop_reason == "interrupted"
    assert [p.name for p in list_checkpoints(ckdir)] == ["ckpt_00000003.pt", "ckpt_00000006.pt"]
    st, res = _jd_vl_run(tmp_path, steps=10, checkpoint_every=3, checkpoint_dir=ckdir, resume=True)
    assert res.resumed_from == 6 and res.steps_done == 10
    for key in ("x", "y", "label_means", "label_factors"):
        assert torch.equal(getattr(st, key).detach(), getattr(st_ref, key).detach()), key
    assert [h["objective"] for h in res.history] == [h["objective"] for h in ref.history]
    assert [h["n_classes"] for h in res.history] == [h["n_classes"] for h in ref.history]
    assert [h["lr"] for h in res.history] == [h["lr"] for h in ref.history]
    assert res.trajectory_steps == ref.trajectory_steps == [0, 2, 4, 6, 8, 10]
    assert np.array_equal(res.trajectory, ref.trajectory)
    # resuming a finished run does nothing more
    st2, res2 = _jd_vl_run(tmp_path, steps=10, checkpoint_every=3, checkpoint_dir=ckdir, resume=True)
    assert res2.resumed_from == 10 and torch.equal(st2.x.detach(), st_ref.x.detach())


def test_resume_needs_a_directory():
    st, dyn = fd_state()
    with pytest.raises(ValueError, match="checkpoint_dir"):
        run_flow(st, quadratic(), dyn, sgd(0.1), steps=3, resume=True)


# ----------------------------------------------------------------------------- NaN guard
@pytest.mark.parametrize("mode", ["value", "gradient"])
def test_nan_guard_stops_with_last_finite_state(mode):
    st, dyn = fd_state()
    obj = WeightedSum({"ball": BallConstraint(radius=1.0), "bad": Scripted(bad_step=3, mode=mode)})
    ref_state, _ = fd_state()
    run_flow(ref_state, WeightedSum({"ball": BallConstraint(radius=1.0), "bad": Scripted(bad_step=99)}),
             dyn, sgd(1.0), steps=3, progress=False)
    with pytest.raises(FlowDivergedError) as info:
        run_flow(st, obj, dyn, sgd(1.0), steps=10, progress=False)
    err = info.value
    assert err.step == 3 and err.part == "bad"
    assert "step 3" in str(err) and "'bad'" in str(err)
    assert len(err.history) == 3 and err.last_state.step == 3
    assert err.last_state.is_finite()
    assert torch.equal(err.last_state.x, ref_state.x.detach())  # exact: the same 3 steps, same machine


def test_nan_guard_catches_non_finite_update():
    st, dyn = fd_state()
    x0 = st.x.detach().clone()
    huge = WeightedSum({"q": {"weight": 1e30, "functional": quadratic()}})  # finite value and gradient
    with pytest.raises(FlowDivergedError, match="update") as info:
        run_flow(st, huge, dyn, sgd(1e10), steps=5, progress=False)
    assert info.value.step == 0 and info.value.part == "update"
    assert torch.equal(info.value.last_state.x, x0)  # exact: the bad update is never applied


class FailingEigh(Functional):
    """`quadratic` whose eigensolver fails from ``bad_step`` on (as torch's eigh does on
    ill-conditioned matrices of particles thrown far away), in the forward or backward pass."""

    name = "eigh"

    def __init__(self, bad_step=2, where="forward", error="linalg"):
        self.bad_step, self.where, self.error = bad_step, where, error

    def _fail(self):
        if self.error == "linalg":
            raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge because the input "
                                           "matrix is ill-conditioned (error code: 21)")
        raise RuntimeError("cholesky: The factorization could not be completed because the input is not "
                           "positive-definite")

    def __call__(self, state):
        v = quadratic()(state)
        if state.step < self.bad_step:
            return v
        if self.where == "forward":
            self._fail()
        fail = self._fail

        class Boom(torch.autograd.Function):
            @staticmethod
            def forward(ctx, t):
                return t.clone()

            @staticmethod
            def backward(ctx, g):
                fail()

        return Boom.apply(v)


@pytest.mark.parametrize("where,error", [("forward", "linalg"), ("backward", "linalg"), ("forward", "cholesky")])
def test_linear_algebra_failure_is_a_divergence(where, error):
    st, dyn = fd_state()
    ref, _ = fd_state()
    run_flow(ref, quadratic(), dyn, sgd(0.5), steps=2, progress=False)
    with pytest.raises(FlowDivergedError) as info:
        run_flow(st, FailingEigh(2, where, error), dyn, sgd(0.5), steps=10, progress=False)
    err = info.value
    assert err.step == 2 and err.part == "linalg" and len(err.history) == 2
    assert "step 2" in str(err) and "optimizer.lr" in str(err) and "flow.grad_clip" in str(err)
    assert err.last_state.step == 2 and torch.equal(err.last_state.x, ref.x.detach())


def test_other_runtime_errors_are_not_divergences():
    class Broken(Functional):
        def __call__(self, state):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")

    st, dyn = fd_state()
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied") as info:
        run_flow(st, Broken(), dyn, sgd(0.5), steps=3, progress=False)
    assert not isinstance(info.value, FlowDivergedError)


def test_a_failure_on_the_initial_particles_is_not_blamed_on_the_step_size():
    st, dyn = fd_state()
    with pytest.raises(FlowDivergedError) as info:
        run_flow(st, FailingEigh(0, "forward", "linalg"), dyn, sgd(0.5), steps=3, progress=False)
    message = str(info.value)
    assert "before any update" in message and "not a step-size problem" in message
    assert "optimizer.lr" not in message and info.value.last_state.step == 0


def test_only_linear_algebra_messages_from_a_routine_count_as_divergence():
    from dsflow.flow.engine import _is_linalg_failure

    assert _is_linalg_failure(RuntimeError("linalg.eigh: The algorithm failed to converge (error code: 3)"))
    assert _is_linalg_failure(RuntimeError("cholesky_cpu: U(2,2) is zero, singular U."))
    # a phrase alone, from code that is not a linear-algebra routine, is a bug to surface
    assert not _is_linalg_failure(RuntimeError("cannot broadcast a singular dimension"))
    assert not _is_linalg_failure(ValueError("linalg.eigh failed to converge"))


def test_every_divergence_message_gives_the_lr_and_clip_hint():
    for obj, lr in [(WeightedSum({"ball": BallConstraint(radius=1.0), "bad": Scripted(bad_step=1)}), 1.0),
                    (WeightedSum({"q": {"weight": 1e30, "functional": quadratic()}}), 1e10)]:
        st, dyn = fd_state()
        with pytest.raises(FlowDivergedError) as info:
            run_flow(st, obj, dyn, sgd(lr), steps=5, progress=False)
        assert "optimizer.lr" in str(info.value) and "flow.grad_clip" in str(info.value)


def test_objective_rose_rule():
    assert objective_rose(4.3, 2.7e19) and objective_rose(1.0, 11.5) and objective_rose(1.0, float("inf"))
    assert not objective_rose(1.0, 10.9) and not objective_rose(4.3, 0.1) and not objective_rose(None, 3.0)
    assert objective_rose(-1.0, 9.5) and not objective_rose(-1.0, 8.0)  # a rise of 10x |before|
    assert objective_rose(0.0, 1e-6) and not objective_rose(0.0, 1e-12)  # the floor of |before|


def test_stop_request_ends_at_a_step_boundary_with_a_checkpoint(tmp_path):
    ref, dyn = fd_state()
    run_flow(ref, quadratic(), dyn, sgd(0.3), steps=8, progress=False)
    st, dyn = fd_state()
    asked = []

    def should_stop():
        asked.append(st.step)
        return st.step >= 3

    res = run_flow(st, quadratic(), dyn, sgd(0.3), steps=8, progress=False, should_stop=should_stop,
                   checkpoint_every=100, checkpoint_dir=tmp_path)
    assert res.stop_reason == "interrupted" and res.steps_done == 3 and len(res.history) == 3
    assert asked == [1, 2, 3]  # after each completed step
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_00000003.pt"]
    st2, dyn = fd_state()
    res2 = run_flow(st2, quadratic(), dyn, sgd(0.3), steps=8, progress=False, resume=True,
                    checkpoint_every=100, checkpoint_dir=tmp_path)
    assert res2.resumed_from == 3 and torch.equal(st2.x.detach(), ref.x.detach())


# ----------------------------------------------------------------------------- stopping
def test_early_stopping_on_relative_change():
    st, dyn = fd_state()
    # least squares with a positive minimum (2 at x_0 = 1): F_t converges geometrically
    lsq = AffineNorm(A=[[1.0, 0.0], [1.0, 0.0]], b=[0.0, 2.0], squared=True)
    res = run_flow(st, lsq, dyn, sgd(2.0), steps=500, early_stop_rtol=1e-3,
                   early_stop_patience=3, progress=False)
    assert res.stop_reason == "early_stop" and res.steps_done < 500
    objs = [h["objective"] for h in res.history]
    assert all(abs(a - b) <= 1e-3 * abs(a) for a, b in zip(objs[-4:-1], objs[-3:]))
    assert abs(objs[-5] - objs[-4]) > 1e-3 * abs(objs[-5])  # it stopped at the first chance
    assert res.final_objective == pytest.approx(2.0, rel=1e-2)
    st, dyn = fd_state()
    res = run_flow(st, quadratic(), dyn, sgd(2.0), steps=50, progress=False)
    assert res.stop_reason == "steps" and res.steps_done == 50


def test_callbacks_receive_records_and_can_stop():
    st, dyn = fd_state()
    seen = []

    def cb(step, record, state):
        seen.append((step, record["objective"], state.step))
        return step == 4

    res = run_flow(st, quadratic(), dyn, sgd(1.0), steps=20, callbacks=[cb], progress=False)
    assert res.stop_reason == "callback" and res.steps_done == 5
    assert [s for s, _, _ in seen] == [0, 1, 2, 3, 4] and [t for *_, t in seen] == [1, 2, 3, 4, 5]
    keys = {"step", "objective", "parts", "grad_norm", "lr", "n_classes", "time", "step_time"}
    assert keys <= set(res.history[0])


# ----------------------------------------------------------------------------- box, clip
def test_box_projection():
    st, dyn = fd_state()
    run_flow(st, quadratic(center=(5.0, -5.0)), dyn, sgd(5.0), steps=30, box=[-1.0, 1.0], progress=False)
    x = st.x.detach()
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert torch.allclose(x, torch.tensor([1.0, -1.0]).expand_as(x))  # the box corner nearest (5, -5)
    with pytest.raises(ValueError, match="lo must be < hi"):
        run_flow(st, quadratic(), dyn, sgd(1.0), steps=1, box=[1, 0])


@pytest.mark.parametrize("mode", ["global", "per_particle"])
def test_gradient_clipping(mode):
    st, dyn = fd_state(dtype=torch.float64, scale=10.0)
    x0 = st.x.detach().clone()
    c = 0.01
    run_flow(st, quadratic(), dyn, sgd(1.0), steps=1, grad_clip={"max_norm": c, "mode": mode}, progress=False)
    step = st.x.detach() - x0
    unclipped = 2 * x0 / x0.shape[0]  # grad of mean |x|^2
    if mode == "global":
        assert torch.linalg.vector_norm(step).item() == pytest.approx(c, rel=1e-6)
        assert torch.allclose(step, -c * unclipped / torch.linalg.vector_norm(unclipped))
    else:
        norms = torch.linalg.vector_norm(step, dim=1)
        big = torch.linalg.vector_norm(unclipped, dim=1) > c
        assert torch.allclose(norms[big], torch.full_like(norms[big], c))
        assert torch.allclose(step[~big], -unclipped[~big])
    with pytest.raises(ValueError, match="grad_clip"):
        run_flow(st, quadratic(), dyn, sgd(1.0), steps=1, grad_clip={"max_norm": 1, "mode": "rows"})


# ----------------------------------------------------------------------------- schedules
@pytest.mark.parametrize(
    "schedule, expected",
    [
        (None, lambda t: 0.4),
        ({"name": "step", "step_size": 3, "gamma": 0.5}, lambda t: 0.4 * 0.5 ** (t // 3)),
        ({"name": "exponential", "gamma": 0.9}, lambda t: 0.4 * 0.9**t),
        ("cosine", lambda t: 0.4 * (1 + math.cos(math.pi * t / 10)) / 2),
    ],
    ids=["none", "step", "exponential", "cosine"],
)
def test_schedules(schedule, expected):
    st, dyn = fd_state()
    res = run_flow(st, quadratic(), dyn, sgd(0.4), steps=10, schedule=schedule, progress=False)
    assert [h["lr"] for h in res.history] == pytest.approx([expected(t) for t in range(10)], rel=1e-9)


def test_schedule_errors():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_scheduler(opt, "linear", 10)
    with pytest.raises(ValueError, match="bad options"):
        make_scheduler(opt, {"name": "step", "gama": 0.1}, 10)


def test_lr_scale_of_label_group():
    src = blobs([[0, 0], [0, 3]], n_per_class=5)
    dyn = JointDrivenVariableLabel(clustering="kmeans", label_lr_scale=0.0)
    st = dyn.init_state(src)
    m0 = st.label_means.detach().clone()
    obj = LabelGaussianSinkhorn().bind(target=blobs([[4, 0], [4, 3]], n_per_class=5))
    run_flow(st, obj, dyn, adam(0.1), steps=2, progress=False)
    assert torch.equal(st.label_means.detach(), m0)  # lr 0.1 * 0 for the label group: x + (-0) * g == x exactly


# ----------------------------------------------------------------------------- trajectories
def test_trajectory_in_memory_on_disk_and_float16(tmp_path):
    runs = {}
    for name, kw in {
        "memory": {},
        "disk": {"trajectory_path": tmp_path / "traj.npy"},
        "half": {"trajectory_dtype": "float16", "trajectory_path": tmp_path / "half"},
    }.items():
        st, dyn = fd_state()
        runs[name] = run_flow(st, quadratic(), dyn, sgd(1.0), steps=7, trajectory_every=3, progress=False, **kw)
    mem = runs["memory"].trajectory
    assert mem.shape == (4, 20, 2) and mem.dtype == np.float32
    assert runs["memory"].trajectory_steps == [0, 3, 6, 7]
    disk = runs["disk"].trajectory
    assert disk == tmp_path / "traj.npy"
    assert np.array_equal(np.load(disk), mem)
    assert json.loads((tmp_path / "traj.npy.steps.json").read_text()) == [0, 3, 6, 7]
    half = np.load(runs["half"].trajectory)
    assert half.dtype == np.float16 and half.shape == mem.shape
    assert np.allclose(half, mem, rtol=1e-3, atol=1e-3)
    assert np.array_equal(mem[-1], runs["memory"].state.x.detach().numpy())


def test_trajectory_file_is_valid_while_streaming(tmp_path):
    path = tmp_path / "t.npy"
    lengths = []

    def cb(step, record, state):
        lengths.append(np.load(path, mmap_mode="r").shape[0])

    st, dyn = fd_state()
    run_flow(st, quadratic(), dyn, sgd(1.0), steps=4, trajectory_every=1, trajectory_path=path,
             callbacks=[cb], progress=False)
    assert lengths == [2, 3, 4, 5]


# ----------------------------------------------------------------------------- noise
def test_noise_variance_and_seeding():
    n, d, T, lr = 20000, 2, 0.1, 0.5
    data = LabeledData(torch.zeros(n, d), torch.zeros(n, dtype=torch.long))
    dyn = FeatureDriven()

    def noisy(seed, **kw):
        st = dyn.init_state(data)
        run_flow(st, Entropy(T), dyn, sgd(lr), steps=1, seed=seed, progress=False, **kw)
        return st.x.detach()

    x = noisy(0)
    # var of the sample variance of N samples is 2 var^2 / N: 2*T*lr = 0.1 +- 5 * 0.1 * 0.007
    assert x.var().item() == pytest.approx(2 * T * lr, rel=0.035)
    assert abs(x.mean().item()) < 5 * math.sqrt(2 * T * lr / (n * d))
    assert torch.equal(x, noisy(0)) and not torch.equal(x, noisy(1))
    x_n = noisy(0, noise_scale="lr_over_n")
    assert torch.allclose(x_n, x / math.sqrt(n))


def test_noise_on_top_of_the_gradient_step():
    st, dyn = fd_state(dtype=torch.float64)
    x0 = st.x.detach().clone()
    obj = WeightedSum({"q": quadratic(), "e": {"weight": 2.0, "functional": Entropy(0.01)}})
    run_flow(st, obj, dyn, sgd(1.0), steps=1, seed=3, progress=False)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    expected = x0 - 1.0 * 2 * x0 / x0.shape[0] + math.sqrt(2 * 0.02 * 1.0) * noise
    assert torch.allclose(st.x.detach(), expected, atol=1e-12)


def test_bad_arguments():
    st, dyn = fd_state()
    with pytest.raises(TypeError, match="optimizer"):
        run_flow(st, quadratic(), dyn, None, steps=1)
    with pytest.raises(ValueError, match="steps"):
        run_flow(st, quadratic(), dyn, sgd(1.0), steps=-1)
    with pytest.raises(ValueError, match="trajectory_dtype"):
        run_flow(st, quadratic(), dyn, sgd(1.0), steps=1, trajectory_every=1, trajectory_dtype="int8")


def test_langevin_reaches_the_gibbs_variance():
    """SGD on V = |x|^2 plus entropy T with noise_scale=lr_over_n is the Euler-Maruyama
    scheme of dX = -grad V dt + sqrt(2T) dW with dt = lr/n: its stationary law is
    N(0, T / (2 (1 - dt))) per coordinate (exact for the discrete AR(1) recursion)."""
    n, T, dt = 4000, 0.5, 0.05
    data = LabeledData(torch.full((n, 1), 3.0, dtype=torch.float64), torch.zeros(n, dtype=torch.long))
    dyn = FeatureDriven()
    st = dyn.init_state(data)
    obj = WeightedSum({"v": FeatureNorm(squared=True), "s": Entropy(T)})
    run_flow(st, obj, dyn, sgd(dt * n), steps=150, noise_scale="lr_over_n", progress=False)
    x = st.x.detach()
    assert abs(x.mean().item()) < 0.05  # started at 3, contracted by (1 - 2 dt)^150 ~ 1e-7
    assert x.var().item() == pytest.approx(T / (2 * (1 - dt)), rel=0.07)  # sd of estimate ~2.2%
