"""The particle loop: ``run_flow`` moves a `ParticleState` down the gradient of a functional.

One step ``t`` (state ``z_t`` -> ``z_{t+1}``):

1. ``F(z_t)`` and its parts are evaluated and differentiated (autograd) with respect to the
   tensors the dynamics move (``dynamics.param_groups``);
2. NaN guard: a non-finite value or gradient raises `FlowDivergedError` (naming the step
   and the offending part) carrying the last finite state and the history so far;
3. optional gradient clipping, then the optimizer step (``lr`` from the schedule);
4. Brownian noise ``sqrt(2 T lr) N(0, I)`` on the features when ``F`` has a temperature
   ``T > 0`` (entropy terms; Euler-Maruyama), from a generator seeded with ``seed``;
5. projection onto the box ``[lo, hi]`` (features only);
6. ``dynamics.after_step`` (e.g. jd_vl reclustering); when labels changed the objective's
   caches are dropped with ``objective.reset()``;
7. the step's record goes to the history and to the callbacks; trajectory frames and
   checkpoints are written; early stopping and stop requests (``should_stop``: SIGINT/SIGTERM,
   see `dsflow.flow.interrupt`) are checked.

A linear-algebra failure inside a step (``torch.linalg.LinAlgError``, an eigensolver that
does not converge on particles thrown far away) is a divergence like a NaN: both mean the
step size was too large for the particles, and both raise `FlowDivergedError` with the last
finite state, so the same advice (smaller ``lr``, ``grad_clip``) and the same saved state
follow from either.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from dsflow.flow.dynamics_base import Dynamics
from dsflow.state import ParticleState
from dsflow.functionals.base import Functional

STOP_STEPS = "steps"
STOP_EARLY = "early_stop"
STOP_CALLBACK = "callback"
STOP_INTERRUPTED = "interrupted"

log = logging.getLogger("dsflow")

#: The advice every divergence message ends with (config keys of the app, parameters of run_flow).
DIVERGENCE_HINT = "try a smaller lr (optimizer.lr) or gradient clipping (flow.grad_clip)"

#: `objective_rose`: a flow is flagged as diverging when its objective ends more than this many
#: times its initial magnitude above where it started.
RISE_FACTOR = 10.0


@dataclass
class FlowResult:
    """What a flow produced.

    Attributes
    ----------
    state:
        The final `ParticleState` (the live tensors; call ``state.snapshot()`` to detach).
    history:
        One dict per step: ``step``, ``objective`` (F before the step's update), ``parts``,
        ``grad_norm`` (global L2 norm of the gradient before clipping), ``lr`` (features'
        step size used), ``n_classes`` (after the step), ``labels_changed``, ``step_time``
        and ``time`` (seconds, cumulative).
    trajectory:
        ``None``, an array ``(T, n, d)``, or the ``Path`` of the ``.npy`` it was streamed to.
    trajectory_steps:
        The step of each trajectory frame (frame ``k`` is ``x`` after ``trajectory_steps[k]``
        steps; 0 is the initial state).
    stop_reason:
        ``"steps"``, ``"early_stop"``, ``"callback"`` or ``"interrupted"``.
    final_objective, final_parts:
        ``F`` at the final state (``None`` when ``evaluate_final=False``).
    resumed_from, resumed_checkpoint, skipped_checkpoints:
        After a resume: the step and the file it continued from, and the newer checkpoint
        files that were skipped because they were corrupt.
    """

    state: ParticleState
    history: list[dict]
    trajectory: Any = None
    trajectory_steps: list[int] = field(default_factory=list)
    stop_reason: str = STOP_STEPS
    steps_done: int = 0
    final_objective: float | None = None
    final_parts: dict[str, float] = field(default_factory=dict)
    wall_time: float = 0.0
    resumed_from: int | None = None
    resumed_checkpoint: str | None = None
    skipped_checkpoints: list[str] = field(default_factory=list)

    @property
    def objective(self) -> float | None:
        """The last known objective value (final evaluation if any, else last step's)."""
        if self.final_objective is not None:
            return self.final_objective
        return self.history[-1]["objective"] if self.history else None

    def trajectory_array(self):
        """The trajectory as an array ``(T, n, d)`` (memory-mapped if it was streamed)."""
        from dsflow.flow.trajectory import load_trajectory

        return None if self.trajectory is None else load_trajectory(self.trajectory)


class FlowDivergedError(RuntimeError):
    """The objective or its gradient became NaN/Inf, or a linear-algebra routine failed on
    the particles (``part="linalg"``).

    Attributes: ``step``, ``part`` (name of the offending functional term, ``"update"``
    when finite gradients produced non-finite particles, ``"linalg"`` for an eigensolver or
    Cholesky failure), ``last_state``
    (detached copy of the last finite `ParticleState`), ``history`` (records of the steps
    completed before), ``trajectory``/``trajectory_steps`` (frames recorded so far).
    """

    def __init__(self, message: str, *, step: int, part: str, last_state: ParticleState,
                 history: list[dict], trajectory=None, trajectory_steps=None):
        super().__init__(message)
        self.step = step
        self.part = part
        self.last_state = last_state
        self.history = history
        self.trajectory = trajectory
        self.trajectory_steps = list(trajectory_steps or [])


# ----------------------------------------------------------------------------- options
def _plain(value):
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return value


def make_scheduler(optimizer, schedule, steps: int):
    """A torch LR scheduler from ``schedule`` (stepped once per flow step), or ``None``.

    ``schedule`` is ``None``/``"none"``, a name (``"step"``, ``"exponential"``,
    ``"cosine"``) or a mapping ``{name: ..., options}``:

    * ``step``: ``lr *= gamma`` every ``step_size`` steps (defaults ``gamma=0.5``,
      ``step_size=max(1, steps // 4)``);
    * ``exponential``: ``lr *= gamma`` every step (default ``gamma=0.99``);
    * ``cosine``: cosine annealing from ``lr`` to ``eta_min`` (default 0) over ``steps``.
    """
    import torch

    schedule = _plain(schedule)
    if schedule is None:
        return None
    if isinstance(schedule, str):
        schedule = {"name": schedule}
    if not isinstance(schedule, Mapping) or "name" not in schedule:
        raise ValueError(f"schedule must be null, a name or {{name: ..., ...}}, got {schedule!r}")
    opts = dict(schedule)
    name = str(opts.pop("name")).lower()
    sch = torch.optim.lr_scheduler
    try:
        if name in ("none", "constant"):
            if opts:
                raise TypeError(f"unexpected options {sorted(opts)}")
            return None
        if name == "step":
            return sch.StepLR(optimizer, step_size=int(opts.pop("step_size", max(1, steps // 4))),
                              gamma=float(opts.pop("gamma", 0.5)), **opts)
        if name == "exponential":
            return sch.ExponentialLR(optimizer, gamma=float(opts.pop("gamma", 0.99)), **opts)
        if name == "cosine":
            return sch.CosineAnnealingLR(optimizer, T_max=max(1, int(opts.pop("T_max", steps))),
                                         eta_min=float(opts.pop("eta_min", 0.0)), **opts)
    except TypeError as err:
        raise ValueError(f"schedule {name!r}: bad options ({err})") from None
    raise ValueError(f"unknown schedule {name!r}; choose none, step, exponential or cosine")


def _parse_clip(grad_clip):
    """``None`` or ``(max_norm, mode)`` with mode ``"global"`` or ``"per_particle"``."""
    grad_clip = _plain(grad_clip)
    if grad_clip is None:
        return None
    if isinstance(grad_clip, (int, float)):
        max_norm, mode = float(grad_clip), "global"
    elif isinstance(grad_clip, Mapping):
        unknown = set(grad_clip) - {"max_norm", "mode"}
        if unknown or "max_norm" not in grad_clip:
            raise ValueError(f"grad_clip must be {{max_norm: float, mode: global|per_particle}}, got {grad_clip!r}")
        max_norm, mode = float(grad_clip["max_norm"]), str(grad_clip.get("mode", "global"))
    else:
        raise ValueError(f"grad_clip must be null, a number or a mapping, got {grad_clip!r}")
    if mode not in ("global", "per_particle"):
        raise ValueError(f"grad_clip mode must be 'global' or 'per_particle', got {mode!r}")
    if not max_norm > 0:
        raise ValueError(f"grad_clip max_norm must be > 0, got {max_norm}")
    return max_norm, mode


def _parse_box(box):
    box = _plain(box)
    if box is None:
        return None
    if not isinstance(box, Sequence) or len(box) != 2:
        raise ValueError(f"box must be [lo, hi] (either may be null), got {box!r}")
    lo, hi = (None if b is None else float(b) for b in box)
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"box: lo must be < hi, got [{lo}, {hi}]")
    return lo, hi


def clip_gradients(params: Sequence, max_norm: float, mode: str) -> None:
    """Clip gradients in place.

    ``global``: rescale all gradients together so their joint L2 norm is <= ``max_norm``.
    ``per_particle``: rescale each row of each parameter (a particle's features, a
    particle's or a class's Gaussian) to L2 norm <= ``max_norm``.
    """
    import torch

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if mode == "global":
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)
        return
    for g in grads:
        rows = g.reshape(g.shape[0], -1)
        norms = torch.linalg.vector_norm(rows, dim=1)
        factor = (max_norm / (norms + 1e-12)).clamp(max=1.0)
        g.mul_(factor.view(-1, *([1] * (g.ndim - 1))))


def _grad_norm(params):
    """Global L2 norm (float64, no overflow for large finite values) of the gradients."""
    import torch

    norms = [torch.linalg.vector_norm(p.grad, dtype=torch.float64) for p in params if p.grad is not None]
    if not norms:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def _offending_gradient_part(objective, state, params) -> str:
    """Name of the first term of ``objective`` whose gradient is not finite."""
    import torch

    terms = getattr(objective, "terms", None)
    if not isinstance(terms, Mapping):
        return getattr(objective, "name", "objective")
    for name, fn in terms.items():
        try:
            with torch.enable_grad():
                v = fn(state)
                if not v.requires_grad:
                    continue
                gs = torch.autograd.grad(v, params, allow_unused=True)
        except Exception:  # noqa: BLE001 - diagnosis only; the flow already failed
            return name
        if any(g is not None and not bool(torch.isfinite(g).all()) for g in gs):
            return name
    return getattr(objective, "name", "objective")


class _StateBackup:
    """Preallocated copies of the state tensors: restores the pre-step state on failure."""

    def __init__(self, state: ParticleState) -> None:
        self.buffers = {k: v.detach().clone() for k, v in state.tensors().items()}
        self.step = state.step

    def save(self, state: ParticleState) -> None:
        import torch

        with torch.no_grad():
            for k, v in state.tensors().items():
                buf = self.buffers.get(k)
                if buf is None or buf.shape != v.shape:
                    self.buffers[k] = v.detach().clone()
                else:
                    buf.copy_(v)
        self.step = state.step

    def restore(self, state: ParticleState) -> None:
        import torch

        with torch.no_grad():
            for k, buf in self.buffers.items():
                v = getattr(state, k)
                if v.requires_grad:
                    v.copy_(buf)
                else:
                    setattr(state, k, buf.clone())
        state.step = self.step


def _rng_states(noise_gen) -> dict:
    import numpy as np
    import torch

    out = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "noise": None if noise_gen is None else noise_gen.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_states(states: dict, noise_gen) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if noise_gen is not None and states.get("noise") is not None:
        noise_gen.set_state(states["noise"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _restore_state(state: ParticleState, saved: dict) -> None:
    """Copy checkpointed tensors into ``state`` (fresh leaves for the moving tensors)."""
    for key, value in saved["tensors"].items():
        current = getattr(state, key)
        if current is None or tuple(current.shape) != tuple(value.shape):
            raise ValueError(
                f"cannot resume: checkpoint tensor {key!r} has shape {tuple(value.shape)} but the "
                f"state has {None if current is None else tuple(current.shape)}; resume with the "
                "same data and dynamics as the checkpointed run"
            )
        new = value.to(device=current.device, dtype=current.dtype)
        if current.requires_grad:
            new = new.detach().clone().requires_grad_(True)
        setattr(state, key, new)
    state.step = int(saved["step"])
    state.meta = dict(saved["meta"])


def objective_rose(before, after, factor: float = RISE_FACTOR) -> bool:
    """True when a flow ended far above where it started: ``after - before > factor *
    max(|before|, 1e-12)``, i.e. the objective rose by more than ``factor`` (10) times its
    initial magnitude.  A gradient flow should decrease its objective; a rise of this size
    means the steps overshoot (lr too large), even though every value stayed finite.  A
    non-finite ``after`` counts as a rise; missing values do not."""
    if before is None or after is None:
        return False
    before, after = float(before), float(after)
    if not math.isfinite(before):
        return False
    if not math.isfinite(after):
        return True
    return after - before > factor * max(abs(before), 1e-12)


_LINALG_ROUTINES = ("linalg", "cholesky", "eig", "svd", "lapack", "cusolver", "magma", "lu_factor")
_LINALG_MESSAGES = ("failed to converge", "not positive-definite", "not positive definite",
                    "ill-conditioned", "singular", "illegal value")


def _is_linalg_failure(err: BaseException) -> bool:
    """A failure of an eigensolver/Cholesky/SVD on the particles (not a programming error)."""
    import torch

    if isinstance(err, torch.linalg.LinAlgError):
        return True
    if not isinstance(err, RuntimeError):
        return False
    # torch's messages name the routine ("linalg.eigh: The algorithm failed to converge ...");
    # requiring both a routine and a failure phrase keeps programming errors out
    message = str(err).lower()
    return (any(r in message for r in _LINALG_ROUTINES) and any(m in message for m in _LINALG_MESSAGES))


def _load_resume_checkpoint(checkpoint_dir) -> tuple[dict | None, Path | None, list[str]]:
    """The newest intact checkpoint in ``checkpoint_dir``: ``(payload, path, skipped)``.

    Corrupt files (truncated copies, a disk that filled up) are skipped with a warning
    naming each one, and renamed to ``<name>.corrupt`` so they are neither tried again nor
    mistaken for the newest checkpoint later; ``(None, None, [])`` when there is none at all;
    `CheckpointError` when there are checkpoints but none is intact.  A file refused as
    unsafe (`UnsafeCheckpointError`) stops the resume: it was planted, not damaged.
    """
    from dsflow.flow.checkpoint import (CheckpointError, CorruptCheckpointError, list_checkpoints,
                                        load_checkpoint)

    skipped: list[str] = []
    reasons: list[str] = []
    for path in reversed(list_checkpoints(checkpoint_dir)):
        try:
            return load_checkpoint(path), path, skipped
        except CorruptCheckpointError as err:
            reasons.append(str(err))
            moved = path.with_name(path.name + ".corrupt")
            try:
                path.replace(moved)
                where = f"renamed to {moved.name}"
            except OSError:
                where = "left in place"
            skipped.append(str(path))
            log.warning("skipping checkpoint %s (%s); trying the one before it", path, f"{err}; {where}")
    if reasons:
        raise CheckpointError(
            f"cannot resume: no intact checkpoint in {checkpoint_dir} ({'; '.join(reasons)}). "
            "Start afresh with flow.resume=false (or remove the damaged files)",
            checkpoint_dir,
        )
    return None, None, skipped


def _describe_differences(differences: dict) -> str:
    return "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in differences.items())


def _check_fingerprint(ckpt: dict, path, fingerprint, ignore: bool) -> dict:
    """Differences between the checkpoint's config fingerprint and ``fingerprint``; raises
    `CheckpointMismatchError` for any unless ``ignore``."""
    from dsflow.flow.checkpoint import CheckpointMismatchError, fingerprint_differences

    if fingerprint is None:
        return {}
    old = ckpt.get("fingerprint")
    if old is None:
        log.warning("checkpoint %s records no config fingerprint (written by an older dsflow or "
                    "without one): cannot check that the config is unchanged", path)
        return {}
    differences = fingerprint_differences(old, dict(fingerprint))
    if not differences:
        return {}
    text = _describe_differences(differences)
    if not ignore:
        raise CheckpointMismatchError(
            f"cannot resume from {path}: the config differs from the checkpointed run's in "
            f"{len(differences)} key(s) (checkpoint -> now): {text}. Resume with the checkpointed "
            "values, start a new run (flow.resume=false, or another run directory), or set "
            "flow.resume_ignore_config=true to continue the checkpointed particles under the new config",
            differences,
        )
    log.warning("resuming from %s although the config changed (resume_ignore_config): %s; the "
                "particles, RNG states and history are the checkpoint's, the optimizer and "
                "schedule settings the new config's", path, text)
    return differences


def _load_optimizer_keeping_settings(opt, saved: dict) -> None:
    """Load the optimizer's saved *state* (moments, step counts) under the current settings
    (lr, betas, momentum, ... of the new config): the ``resume_ignore_config`` path.  A
    different optimizer (other state keys) starts from a fresh state."""
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    saved_keys = [set(g) - {"params"} for g in saved.get("param_groups", [])]
    if saved_keys != [set(g) for g in fresh]:
        log.warning("the checkpoint's optimizer differs from the configured one: its state "
                    "(moments, step counts) is not restored")
        return
    opt.load_state_dict(saved)
    for group, settings in zip(opt.param_groups, fresh):
        group.update(settings)


# ----------------------------------------------------------------------------- engine
def run_flow(
    state: ParticleState,
    objective: Functional,
    dynamics: Dynamics,
    optimizer: Callable,
    *,
    steps: int,
    callbacks: Iterable[Callable] = (),
    progress: bool = True,
    seed: int = 0,
    trajectory_every: int = 0,
    trajectory_dtype: str = "float32",
    trajectory_path: str | Path | None = None,
    checkpoint_every: int = 0,
    checkpoint_dir: str | Path | None = None,
    keep_checkpoints: int = 2,
    resume: bool = False,
    early_stop_rtol: float = 0.0,
    early_stop_patience: int = 10,
    grad_clip=None,
    box=None,
    schedule=None,
    noise_scale: str = "lr",
    evaluate_final: bool = True,
    fingerprint: Mapping | None = None,
    resume_ignore_config: bool = False,
    should_stop: Callable[[], bool] | None = None,
    on_start: Callable[[int, list], None] | None = None,
) -> FlowResult:
    """Run a particle gradient flow of ``objective`` from ``state`` for ``steps`` steps.

    Parameters
    ----------
    state:
        Particles from ``dynamics.init_state(data)``; moved in place.
    objective:
        A bound `Functional` (``objective.bind(target=...)`` done by the caller).
    dynamics:
        Which tensors move and what happens after each step (`dsflow.flow.dynamics`).
    optimizer:
        ``param_groups -> torch.optim.Optimizer`` (e.g. Hydra ``_partial_`` of
        ``torch.optim.Adam`` with ``lr``).  Groups may carry ``lr_scale`` (the group's
        ``lr`` is multiplied by it once the optimizer exists).
    steps:
        Total number of steps (a resumed run continues up to the same total).
    callbacks:
        ``cb(step, record, state)`` after every step (``state`` after the update); a
        callback returning ``True`` stops the flow (``stop_reason="callback"``).
    progress:
        tqdm bar on stderr (silent when stderr is not a terminal).
    seed:
        Seeds the Brownian-noise generator.
    trajectory_every, trajectory_dtype, trajectory_path:
        Record ``x`` at step 0, every ``trajectory_every`` steps and at the end, as
        ``float32`` or ``float16``, in memory or streamed to a ``.npy`` file.
    checkpoint_every, checkpoint_dir, keep_checkpoints, resume:
        Save a checkpoint every N steps (and at the end) into ``checkpoint_dir``, keeping
        the newest ``keep_checkpoints``; ``resume=True`` continues from the newest intact one
        there (corrupt ones are skipped with a warning; a fresh start when there is none),
        reproducing the uninterrupted run.  A checkpoint already at or past ``steps`` is
        reported as it is (no step runs).  ``checkpoint_dir`` is checked to be writable
        before step 0.
    early_stop_rtol, early_stop_patience:
        Stop when ``|F_t - F_{t-1}| / |F_{t-1}| < rtol`` for ``patience`` consecutive steps
        (disabled when ``rtol <= 0``).
    grad_clip:
        ``None``, a max norm (global), or ``{max_norm: c, mode: global|per_particle}``.
    box:
        ``[lo, hi]``: features are clamped to it after every step (``null`` = unbounded).
    schedule:
        Step-size schedule, see `make_scheduler`.
    noise_scale:
        ``"lr"`` (noise std ``sqrt(2 T lr)``) or ``"lr_over_n"`` (``sqrt(2 T lr / n)``: the
        Euler-Maruyama step of time ``lr / n``, which is what plain SGD on the
        particle-averaged functional takes; see docs/engine.md).
    evaluate_final:
        Evaluate ``F`` once more at the final state (``FlowResult.final_objective``).
    fingerprint, resume_ignore_config:
        An opaque ``{"hash": ..., "values": {key: value}}`` (`dsflow.flow.checkpoint.fingerprint`)
        of whatever determines the flow, chosen by the caller (the app: data, functional,
        dynamics, optimizer, seed, ...).  It is stored in every checkpoint; on resume a
        different one raises `CheckpointMismatchError` naming the keys that differ, unless
        ``resume_ignore_config=True`` (then the checkpointed particles continue under the
        new optimizer settings, with a warning).
    should_stop:
        ``should_stop() -> bool``, asked after every step; True ends the flow at that step boundary
        (checkpoint written, ``stop_reason="interrupted"``).  The app passes its
        `dsflow.flow.interrupt.StopSignals` (SIGINT/SIGTERM).
    on_start:
        ``on_start(start_step, history)`` once before the first step: the step the flow
        starts from (the checkpoint's after a resume, else 0) and the history up to it.  The
        app uses it to keep ``metrics.jsonl`` whole across resumes.
    """
    import torch

    from dsflow.flow.checkpoint import check_writable, save_checkpoint
    from dsflow.flow.trajectory import TrajectoryRecorder

    # ---- validation --------------------------------------------------------------------
    if not isinstance(state, ParticleState):
        raise TypeError(f"run_flow: state must be a ParticleState, got {type(state).__name__}")
    if not callable(objective):
        raise TypeError(f"run_flow: objective must be a Functional, got {type(objective).__name__}")
    if not callable(optimizer):
        raise TypeError(
            "run_flow: optimizer must be a callable param_groups -> torch.optim.Optimizer, e.g. "
            "functools.partial(torch.optim.Adam, lr=0.01) or a Hydra config with _partial_: true"
        )
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"run_flow: steps must be >= 0, got {steps}")
    if int(trajectory_every) < 0 or int(checkpoint_every) < 0:
        raise ValueError("run_flow: trajectory_every and checkpoint_every must be >= 0")
    if (checkpoint_every or resume) and checkpoint_dir is None:
        raise ValueError("run_flow: checkpoint_every/resume need checkpoint_dir (a directory for ckpt_*.pt)")
    if noise_scale not in ("lr", "lr_over_n"):
        raise ValueError(f"run_flow: noise_scale must be 'lr' or 'lr_over_n', got {noise_scale!r}")
    if early_stop_rtol and int(early_stop_patience) < 1:
        raise ValueError("run_flow: early_stop_patience must be >= 1")
    clip = _parse_clip(grad_clip)
    box = _parse_box(box)
    callbacks = list(callbacks or ())
    if not state.is_finite():
        raise ValueError("run_flow: the initial state contains NaN or Inf")
    if checkpoint_every:
        check_writable(checkpoint_dir)  # before step 0, not at the first checkpoint hours later

    trajectory_every = int(trajectory_every)
    checkpoint_every = int(checkpoint_every)
    recorder = TrajectoryRecorder(trajectory_dtype, trajectory_path) if trajectory_every > 0 else None

    temperature = float(getattr(objective, "temperature", 0.0) or 0.0)
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"run_flow: objective temperature must be finite and >= 0, got {temperature}")
    noise_gen = None
    if temperature > 0:
        noise_gen = torch.Generator(device=state.x.device)
        noise_gen.manual_seed(int(seed))

    history: list[dict] = []
    start_step = 0
    early = {"prev": None, "count": 0}
    resumed_from = None
    ckpt = ckpt_path = None
    skipped: list[str] = []
    changed_config: dict = {}
    if resume:
        ckpt, ckpt_path, skipped = _load_resume_checkpoint(checkpoint_dir)
        if ckpt is not None:
            changed_config = _check_fingerprint(ckpt, ckpt_path, fingerprint, bool(resume_ignore_config))
            _restore_state(state, ckpt["state"])
            start_step = int(ckpt["state"]["step"])
            history = list(ckpt["history"])
            early = dict(ckpt["early_stop"])
            resumed_from = start_step
            log.info("resuming from %s (step %d)", ckpt_path, start_step)
            if start_step >= steps:
                log.warning("the checkpoint %s is at step %d, not before steps=%d: no step runs; the "
                            "checkpointed state is reported (raise steps to continue the flow)",
                            ckpt_path, start_step, steps)

    # ---- optimizer and schedule (built after a resume replaced the leaves) -----------
    groups = dynamics.param_groups(state)
    opt = optimizer(groups)
    for g in opt.param_groups:
        scale = float(g.get("lr_scale", 1.0))
        if scale != 1.0:
            g["lr"] = g["lr"] * scale
    scheduler = make_scheduler(opt, schedule, steps)
    params = [p for g in opt.param_groups for p in g["params"]]
    # An index, not the dict: load_state_dict replaces the optimizer's group dicts.
    feature_group = next((i for i, g in enumerate(opt.param_groups) if any(p is state.x for p in g["params"])), None)
    if feature_group is None:
        raise ValueError("run_flow: dynamics.param_groups(state) must include state.x")
    if ckpt is not None:
        if changed_config:  # resume_ignore_config: the new settings apply from here on
            import warnings

            _load_optimizer_keeping_settings(opt, ckpt["optimizer"])
            if scheduler is not None:  # the new schedule, at the step reached
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for _ in range(start_step):
                        scheduler.step()
        else:
            opt.load_state_dict(ckpt["optimizer"])
            if scheduler is not None and ckpt.get("scheduler") is not None:
                scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_states(ckpt["rng"], noise_gen)
        if recorder is not None:
            if ckpt.get("trajectory") is None:
                raise ValueError("cannot resume: the checkpointed run recorded no trajectory")
            recorder.load_state_dict(ckpt["trajectory"])
        if hasattr(objective, "load_state_dict") and ckpt.get("objective") is not None:
            objective.load_state_dict(ckpt["objective"])
        elif getattr(dynamics, "variable_labels", False):
            objective.reset()

    if recorder is not None and not recorder.steps:
        recorder.append(start_step, state.x)
    if on_start is not None:
        on_start(start_step, list(history))
    fingerprint = None if fingerprint is None else dict(fingerprint)

    def checkpoint_now(step_reached: int) -> None:
        payload = {
            "version": 2,
            "state": {"tensors": {k: v.detach().cpu() for k, v in state.tensors().items()},
                      "step": step_reached, "meta": dict(state.meta)},
            "optimizer": opt.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "rng": _rng_states(noise_gen),
            "history": history,
            "early_stop": dict(early),
            "trajectory": None if recorder is None else recorder.state_dict(),
            "objective": objective.state_dict() if hasattr(objective, "state_dict") else None,
            "fingerprint": fingerprint,
        }
        save_checkpoint(checkpoint_dir, step_reached, payload, keep=int(keep_checkpoints))

    def diverged(step_: int, part: str, what: str) -> FlowDivergedError:
        # ``state`` is finite here: the step start (value/gradient/linalg) or restored (update)
        if state.step == 0 and part != "update":
            # nothing has moved yet: the initial data, not the step size, is the problem
            message = (f"the objective failed on the initial particles, before any update: {what}; this is "
                       "not a step-size problem: check the data (duplicate or constant samples, classes "
                       "too small for their covariance; e.g. functional.cov_ridge=1e-6)")
        else:
            message = (f"flow diverged at step {step_}: {what}; {DIVERGENCE_HINT}. The last finite particles "
                       f"(step {state.step}) and the history are kept")
        return FlowDivergedError(
            message,
            step=step_, part=part, last_state=state.snapshot(), history=history,
            trajectory=None if recorder is None else recorder.result(),
            trajectory_steps=None if recorder is None else recorder.steps,
        )

    # ---- the loop ------------------------------------------------------------------------
    n_classes = state.num_classes
    backup = _StateBackup(state)
    stop_reason = STOP_STEPS
    t0 = time.perf_counter()
    time_offset = history[-1]["time"] if history else 0.0
    bar = None
    if progress and steps > start_step:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start_step, desc="flow", disable=not sys.stderr.isatty(),
                   dynamic_ncols=True, leave=False)
    postfix_every = max(1, steps // 100)
    step = start_step
    try:
        for step in range(start_step, steps):
            t_step = time.perf_counter()
            backup.save(state)
            opt.zero_grad(set_to_none=True)
            fvalue = math.nan
            try:
                with torch.enable_grad():
                    value, parts = objective.evaluate(state)
                fvalue = float(value.detach())
                if math.isfinite(fvalue) and value.requires_grad:
                    value.backward()
            except Exception as err:  # noqa: BLE001 - re-raised unless it is a linear-algebra failure
                if not _is_linalg_failure(err):
                    raise
                raise diverged(step, "linalg", f"a linear-algebra routine failed on the particles "
                               f"({type(err).__name__}: {str(err)[:160]})") from err
            if not math.isfinite(fvalue):
                bad = [k for k, v in parts.items() if not math.isfinite(v) and k != getattr(objective, "name", None)]
                part = bad[0] if bad else getattr(objective, "name", "objective")
                raise diverged(step, part, f"objective is {fvalue} (non-finite part: {part!r})")
            gnorm = _grad_norm(params)
            if not math.isfinite(gnorm):
                part = _offending_gradient_part(objective, state, params)
                raise diverged(step, part, f"the gradient of {part!r} is not finite (objective {fvalue})")
            if clip is not None:
                clip_gradients(params, *clip)
            lr = float(opt.param_groups[feature_group]["lr"])
            opt.step()
            with torch.no_grad():
                if noise_gen is not None:
                    var = 2.0 * temperature * lr / (state.n if noise_scale == "lr_over_n" else 1)
                    noise = torch.randn(state.x.shape, generator=noise_gen, device=state.x.device,
                                        dtype=state.x.dtype)
                    state.x.add_(noise, alpha=math.sqrt(var))
                if box is not None:
                    state.x.clamp_(min=box[0], max=box[1])
                if not state.is_finite():
                    bad_state = state.snapshot()
                    backup.restore(state)
                    bad = [k for k, v in bad_state.tensors().items()
                           if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]
                    raise diverged(step, "update", f"the update made {bad} non-finite with a finite "
                                   f"gradient (norm {gnorm:.3g}, lr {lr:.3g})")
                changed = bool(dynamics.after_step(state, step))
            if changed:
                objective.reset()
                n_classes = state.num_classes
            if scheduler is not None:
                scheduler.step()
            state.step = step + 1
            now = time.perf_counter()
            record = {
                "step": step,
                "objective": fvalue,
                "parts": parts,
                "grad_norm": gnorm,
                "lr": lr,
                "n_classes": n_classes,
                "labels_changed": changed,
                "step_time": now - t_step,
                "time": time_offset + now - t0,
            }
            history.append(record)
            if recorder is not None and (state.step % trajectory_every == 0):
                recorder.append(state.step, state.x)
            stop = False
            for cb in callbacks:
                stop = bool(cb(step, record, state)) or stop
            if early_stop_rtol and early_stop_rtol > 0:
                prev = early["prev"]
                if prev is not None and abs(fvalue - prev) <= early_stop_rtol * max(abs(prev), 1e-30):
                    early["count"] += 1
                else:
                    early["count"] = 0
                early["prev"] = fvalue
                if early["count"] >= int(early_stop_patience):
                    stop_reason = STOP_EARLY
            if stop:
                stop_reason = STOP_CALLBACK
            if stop_reason == STOP_STEPS and state.step < steps and should_stop is not None and should_stop():
                stop_reason = STOP_INTERRUPTED  # a signal: end here, with this step's checkpoint
            if bar is not None:
                bar.update(1)
                if step % postfix_every == 0:
                    bar.set_postfix(F=f"{fvalue:.4g}", k=n_classes, refresh=False)
            last = stop_reason != STOP_STEPS or state.step == steps
            if checkpoint_every and (state.step % checkpoint_every == 0 or last):
                checkpoint_now(state.step)
            if stop_reason != STOP_STEPS:
                break
    except KeyboardInterrupt:
        # Return what was computed: the state as it was before the interrupted step.
        if state.step == step and backup.step == step:
            backup.restore(state)
        stop_reason = STOP_INTERRUPTED
    finally:
        if bar is not None:
            bar.close()

    if recorder is not None and recorder.steps and recorder.steps[-1] != state.step:
        recorder.append(state.step, state.x)

    final_value, final_parts = None, {}
    if evaluate_final:
        try:
            with torch.no_grad():
                v, final_parts = objective.evaluate(state)
        except Exception as err:  # noqa: BLE001 - see the loop
            if not _is_linalg_failure(err):
                raise
            raise diverged(state.step, "linalg", "evaluating the final state failed "
                           f"({type(err).__name__}: {str(err)[:160]})") from err
        final_value = float(v)
        if not math.isfinite(final_value):
            raise diverged(state.step, getattr(objective, "name", "objective"),
                           f"the objective of the final state is {final_value}")
    return FlowResult(
        state=state,
        history=history,
        trajectory=None if recorder is None else recorder.result(),
        trajectory_steps=[] if recorder is None else list(recorder.steps),
        stop_reason=stop_reason,
        steps_done=state.step,
        final_objective=final_value,
        final_parts=dict(final_parts),
        wall_time=time.perf_counter() - t0,
        resumed_from=resumed_from,
        resumed_checkpoint=None if ckpt_path is None else str(ckpt_path),
        skipped_checkpoints=skipped,
    )


__all__ = ["run_flow", "FlowResult", "FlowDivergedError", "make_scheduler", "clip_gradients",
           "objective_rose", "DIVERGENCE_HINT", "RISE_FACTOR"]
