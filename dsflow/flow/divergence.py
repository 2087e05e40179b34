"""Divergence of a flow: the error it raises, the checks that raise it, and the rise rule.

A non-finite value, gradient or update, and a linear-algebra failure inside a step (an
eigensolver that does not converge on particles thrown far away), all mean the same thing:
the step size was too large for the particles.  They raise one error, `FlowDivergedError`,
built in one place (`DivergenceGuard`), so the same advice (smaller ``lr``, ``grad_clip``)
and the same saved state (the last finite particles, the history, the trajectory) follow
from any of them.  A finite flow whose objective rose far above its start is flagged by
`objective_rose` (a warning, not an error).
"""

from __future__ import annotations

import math
from typing import Mapping

from dsflow.state import ParticleState

#: The advice every divergence message ends with (config keys of the app, parameters of run_flow).
DIVERGENCE_HINT = "try a smaller lr (optimizer.lr) or gradient clipping (flow.grad_clip)"

#: `objective_rose`: a flow is flagged as diverging when its objective ends more than this many
#: times its initial magnitude above where it started.
RISE_FACTOR = 10.0


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


def is_linalg_failure(err: BaseException) -> bool:
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


def offending_gradient_part(objective, state, params) -> str:
    """Name of the first part of ``objective`` (`Functional.parts`) whose gradient is not
    finite; the objective's own name when it has no parts or none is to blame alone."""
    import torch

    for name, fn in objective.parts().items():
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
    return objective.name


class DivergenceGuard:
    """The checks of one flow: each raises a `FlowDivergedError` carrying the last finite
    state, the history and the trajectory recorded so far (the lists are shared with the
    loop, so the error holds everything up to the failing step)."""

    def __init__(self, state: ParticleState, objective, history: list[dict], recorder=None) -> None:
        self.state, self.objective, self.history, self.recorder = state, objective, history, recorder

    def error(self, step: int, part: str, what: str) -> FlowDivergedError:
        """The error for ``step``; ``state`` is finite here (the step start, or restored)."""
        state = self.state
        if state.step == 0 and part != "update":
            # nothing has moved yet: the initial data, not the step size, is the problem
            message = (f"the objective failed on the initial particles, before any update: {what}; this is "
                       "not a step-size problem: check the data (duplicate or constant samples, classes "
                       "too small for their covariance; e.g. functional.cov_ridge=1e-6)")
        else:
            message = (f"flow diverged at step {step}: {what}; {DIVERGENCE_HINT}. The last finite particles "
                       f"(step {state.step}) and the history are kept")
        recorder = self.recorder
        return FlowDivergedError(
            message,
            step=step, part=part, last_state=state.snapshot(), history=self.history,
            trajectory=None if recorder is None else recorder.result(),
            trajectory_steps=None if recorder is None else recorder.steps,
        )

    def linalg(self, step: int, err: BaseException, what: str) -> FlowDivergedError:
        """The error for a linear-algebra failure ``err`` (call only when `is_linalg_failure`)."""
        return self.error(step, "linalg", f"{what} ({type(err).__name__}: {str(err)[:160]})")

    def check_value(self, step: int, fvalue: float, parts: Mapping[str, float]) -> None:
        """A non-finite objective: named after its first non-finite part."""
        if not math.isfinite(fvalue):
            name = self.objective.name
            bad = [k for k, v in parts.items() if not math.isfinite(v) and k != name]
            part = bad[0] if bad else name
            raise self.error(step, part, f"objective is {fvalue} (non-finite part: {part!r})")

    def check_gradient(self, step: int, gnorm: float, fvalue: float, params) -> None:
        """A non-finite gradient: the parts are re-evaluated one by one (only on failure)."""
        if not math.isfinite(gnorm):
            part = offending_gradient_part(self.objective, self.state, params)
            raise self.error(step, part, f"the gradient of {part!r} is not finite (objective {fvalue})")

    def check_update(self, step: int, backup, gnorm: float, lr: float) -> None:
        """Finite gradients that made the state non-finite: the pre-step state is put back."""
        import torch

        state = self.state
        if not state.is_finite():
            bad_state = state.snapshot()
            backup.restore(state)
            bad = [k for k, v in bad_state.tensors().items()
                   if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]
            raise self.error(step, "update", f"the update made {bad} non-finite with a finite "
                             f"gradient (norm {gnorm:.3g}, lr {lr:.3g})")

    def check_final(self, fvalue: float) -> None:
        if not math.isfinite(fvalue):
            raise self.error(self.state.step, self.objective.name,
                             f"the objective of the final state is {fvalue}")


__all__ = ["FlowDivergedError", "DivergenceGuard", "objective_rose", "is_linalg_failure",
           "offending_gradient_part", "DIVERGENCE_HINT", "RISE_FACTOR"]
