"""The particle loop: ``run_flow`` moves a `ParticleState` down the gradient of a functional.

One step ``t`` (state ``z_t`` -> ``z_{t+1}``):

1. ``F(z_t)`` and its parts are evaluated and differentiated (autograd) with respect to the
   tensors the dynamics move (``dynamics.param_groups``); a class-mass functional (WoW) has
   each particle's gradient divided by its mass (``objective.particle_masses``);
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

The loop (`run_flow`) calls one step (`_FlowStep`) and does the bookkeeping around it; the
rules around the optimizer step (clipping, noise, box) live in `dsflow.flow.rules`, the
divergence checks in `dsflow.flow.divergence`, and the checkpoint payload and resume in
`dsflow.flow.checkpoint`.  The engine reads the objective only through the `Functional`
interface (``evaluate``, ``parts``, ``temperature``, ``reset``, ``state_dict``,
``velocity_factor``, ``particle_masses``) and the dynamics through `Dynamics`.

A linear-algebra failure inside a step (``torch.linalg.LinAlgError``, an eigensolver that
does not converge on particles thrown far away) is a divergence like a NaN: both mean the
step size was too large for the particles, and both raise `FlowDivergedError` with the last
finite state, so the same advice (smaller ``lr``, ``grad_clip``) and the same saved state
follow from either.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from dsflow.flow.divergence import (DIVERGENCE_HINT, RISE_FACTOR, DivergenceGuard, FlowDivergedError,
                                    is_linalg_failure, objective_rose)
from dsflow.flow.dynamics_base import Dynamics
from dsflow.flow.rules import Box, BrownianNoise, GradientClip, clip_gradients, plain
from dsflow.functionals.base import Functional
from dsflow.state import ParticleState

STOP_STEPS = "steps"
STOP_EARLY = "early_stop"
STOP_CALLBACK = "callback"
STOP_INTERRUPTED = "interrupted"

log = logging.getLogger("dsflow")

#: The old private name (tests and callers); the check lives in `dsflow.flow.divergence`.
_is_linalg_failure = is_linalg_failure


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


# ----------------------------------------------------------------------------- options
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

    schedule = plain(schedule)
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


def _grad_norm(params):
    """Global L2 norm (float64, no overflow for large finite values) of the gradients."""
    import torch

    norms = [torch.linalg.vector_norm(p.grad, dtype=torch.float64) for p in params if p.grad is not None]
    if not norms:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(norms)))


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
            tensors = state.tensors()
            for k, buf in self.buffers.items():
                v = tensors[k]
                if v.requires_grad:
                    v.copy_(buf)
                else:
                    state.set_tensor(k, buf.clone())
        state.step = self.step


class _EarlyStop:
    """``|F_t - F_{t-1}| <= rtol |F_{t-1}|`` for ``patience`` consecutive steps.  ``counters``
    (``prev``, ``count``) is what checkpoints store."""

    def __init__(self, rtol: float, patience: int, counters: Mapping | None = None) -> None:
        self.rtol, self.patience = float(rtol or 0.0), int(patience)
        self.counters = {"prev": None, "count": 0} if counters is None else dict(counters)

    def update(self, fvalue: float) -> bool:
        """Record ``F_t``; True when the flow should stop (always False when disabled)."""
        if not self.rtol > 0:
            return False
        c = self.counters
        prev = c["prev"]
        if prev is not None and abs(fvalue - prev) <= self.rtol * max(abs(prev), 1e-30):
            c["count"] += 1
        else:
            c["count"] = 0
        c["prev"] = fvalue
        return c["count"] >= self.patience


class _FlowStep:
    """One step ``z_t -> z_{t+1}``: evaluate and differentiate, guard, clip, step, noise,
    box, guard the update, ``dynamics.after_step``, schedule.  Returns the step's numbers;
    the loop turns them into the record."""

    def __init__(self, state, objective, dynamics, opt, scheduler, feature_group: int, *, clip, noise, box,
                 guard: DivergenceGuard) -> None:
        self.state, self.objective, self.dynamics = state, objective, dynamics
        self.opt, self.scheduler, self.feature_group = opt, scheduler, feature_group
        self.params = [p for g in opt.param_groups for p in g["params"]]
        self.clip, self.noise, self.box, self.guard = clip, noise, box, guard
        self.backup = _StateBackup(state)
        self.n_classes = state.num_classes
        self.masses = self._masses()

    def _masses(self):
        """The gradient divisors of a class-mass objective, shaped to divide ``x.grad`` (``None``
        for a particle average); computed once, and again when the labels change."""
        masses = self.objective.particle_masses(self.state.y)
        if masses is None:
            return None
        x = self.state.x
        return masses.to(device=x.device, dtype=x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))

    def __call__(self, step: int):
        import torch

        state, objective, guard, params = self.state, self.objective, self.guard, self.params
        self.backup.save(state)
        self.opt.zero_grad(set_to_none=True)
        fvalue = math.nan
        try:
            with torch.enable_grad():
                value, parts = objective.evaluate(state)
            fvalue = float(value.detach())
            if math.isfinite(fvalue) and value.requires_grad:
                value.backward()
        except Exception as err:  # noqa: BLE001 - re-raised unless it is a linear-algebra failure
            if not is_linalg_failure(err):
                raise
            raise guard.linalg(step, err, "a linear-algebra routine failed on the particles") from err
        guard.check_value(step, fvalue, parts)
        if self.masses is not None and state.x.grad is not None:
            # class-mass functionals (WoW): the velocity of particle i is grad_i / m_i
            state.x.grad.div_(self.masses)
        gnorm = _grad_norm(params)
        guard.check_gradient(step, gnorm, fvalue, params)
        if self.clip is not None:
            self.clip.apply(params)
        lr = float(self.opt.param_groups[self.feature_group]["lr"])
        self.opt.step()
        with torch.no_grad():
            if self.noise is not None:
                self.noise.apply(state, lr)
            if self.box is not None:
                self.box.apply(state)
            guard.check_update(step, self.backup, gnorm, lr)
            changed = bool(self.dynamics.after_step(state, step))
        if changed:
            objective.reset()
            self.n_classes = state.num_classes
            self.masses = self._masses()
        if self.scheduler is not None:
            self.scheduler.step()
        state.step = step + 1
        return fvalue, parts, gnorm, lr, changed


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

    from dsflow.flow import checkpoint as ckpts
    from dsflow.flow.trajectory import TrajectoryRecorder

    # ---- validation --------------------------------------------------------------------
    if not isinstance(state, ParticleState):
        raise TypeError(f"run_flow: state must be a ParticleState, got {type(state).__name__}")
    if not isinstance(objective, Functional):
        raise TypeError(f"run_flow: objective must be a Functional (dsflow.functionals.Functional: evaluate, parts, "
                        f"temperature, state_dict), got {type(objective).__name__}; subclass Functional")
    if not isinstance(dynamics, Dynamics):
        raise TypeError(f"run_flow: dynamics must be a Dynamics (dsflow.flow.dynamics_base.Dynamics), "
                        f"got {type(dynamics).__name__}; subclass Dynamics")
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
    if noise_scale not in BrownianNoise.SCALES:
        raise ValueError(f"run_flow: noise_scale must be 'lr' or 'lr_over_n', got {noise_scale!r}")
    if early_stop_rtol and int(early_stop_patience) < 1:
        raise ValueError("run_flow: early_stop_patience must be >= 1")
    clip = GradientClip.parse(grad_clip)
    box = Box.parse(box)
    callbacks = list(callbacks or ())
    if not state.is_finite():
        raise ValueError("run_flow: the initial state contains NaN or Inf")
    if checkpoint_every:
        ckpts.check_writable(checkpoint_dir)  # before step 0, not at the first checkpoint hours later

    trajectory_every = int(trajectory_every)
    checkpoint_every = int(checkpoint_every)
    recorder = TrajectoryRecorder(trajectory_dtype, trajectory_path) if trajectory_every > 0 else None
    noise = BrownianNoise.for_objective(objective, state, seed=seed, noise_scale=noise_scale)
    noise_gen = None if noise is None else noise.generator

    # ---- resume: the state first (the optimizer is built on the restored leaves) --------
    history: list[dict] = []
    start_step = 0
    early = _EarlyStop(early_stop_rtol, early_stop_patience)
    resumed_from = None
    ckpt = ckpt_path = None
    skipped: list[str] = []
    changed_config: dict = {}
    if resume:
        ckpt, ckpt_path, skipped = ckpts.load_resume_checkpoint(checkpoint_dir)
        if ckpt is not None:
            changed_config = ckpts.check_fingerprint(ckpt, ckpt_path, fingerprint, bool(resume_ignore_config))
            ckpts.restore_state(state, ckpt["state"])
            start_step = int(ckpt["state"]["step"])
            history = list(ckpt["history"])
            early = _EarlyStop(early_stop_rtol, early_stop_patience, ckpt["early_stop"])
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
    # An index, not the dict: load_state_dict replaces the optimizer's group dicts.
    feature_group = next((i for i, g in enumerate(opt.param_groups) if any(p is state.x for p in g["params"])), None)
    if feature_group is None:
        raise ValueError("run_flow: dynamics.param_groups(state) must include state.x")
    if ckpt is not None:
        ckpts.restore_run(ckpt, optimizer=opt, scheduler=scheduler, start_step=start_step,
                          changed_config=changed_config, noise_generator=noise_gen, recorder=recorder,
                          objective=objective, dynamics=dynamics)

    if recorder is not None and not recorder.steps:
        recorder.append(start_step, state.x)
    if on_start is not None:
        on_start(start_step, list(history))
    fingerprint = None if fingerprint is None else dict(fingerprint)

    def checkpoint_now(step_reached: int) -> None:
        payload = ckpts.flow_payload(state=state, step=step_reached, optimizer=opt, scheduler=scheduler,
                                     noise_generator=noise_gen, history=history, early_stop=early.counters,
                                     recorder=recorder, objective=objective, fingerprint=fingerprint)
        ckpts.save_checkpoint(checkpoint_dir, step_reached, payload, keep=int(keep_checkpoints))

    # ---- the loop ------------------------------------------------------------------------
    guard = DivergenceGuard(state, objective, history, recorder)
    one_step = _FlowStep(state, objective, dynamics, opt, scheduler, feature_group, clip=clip, noise=noise,
                         box=box, guard=guard)
    backup = one_step.backup
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
            fvalue, parts, gnorm, lr, changed = one_step(step)
            now = time.perf_counter()
            record = {
                "step": step,
                "objective": fvalue,
                "parts": parts,
                "grad_norm": gnorm,
                "lr": lr,
                "n_classes": one_step.n_classes,
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
            if early.update(fvalue):
                stop_reason = STOP_EARLY
            if stop:
                stop_reason = STOP_CALLBACK
            if stop_reason == STOP_STEPS and state.step < steps and should_stop is not None and should_stop():
                stop_reason = STOP_INTERRUPTED  # a signal: end here, with this step's checkpoint
            if bar is not None:
                bar.update(1)
                if step % postfix_every == 0:
                    bar.set_postfix(F=f"{fvalue:.4g}", k=one_step.n_classes, refresh=False)
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
            if not is_linalg_failure(err):
                raise
            raise guard.linalg(state.step, err, "evaluating the final state failed") from err
        final_value = float(v)
        guard.check_final(final_value)
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
