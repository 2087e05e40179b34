"""Base class for label dynamics (config group ``dynamics``).

Dynamics decide which tensors of a `ParticleState` move (the optimizer's parameters) and
what is recomputed after each optimizer step (class statistics, reclustered labels,
projections such as a pixel box).
"""

from __future__ import annotations

from dsflow.data.container import LabeledData
from dsflow.state import ParticleState


class Dynamics:
    name: str = "dynamics"
    #: True when discrete labels can change during the flow (functionals must then
    #: not cache anything that depends on ``state.y``).
    variable_labels: bool = False
    #: The `LabelState` class this dynamics keeps in ``state.labels`` (``None``: no label
    #: state, the labels are the discrete ``state.y``).  The dynamics own it: they build,
    #: move and update it; functionals read it through its ``kind``.
    label_state: type | None = None

    def init_state(self, data: LabeledData, *, device=None, dtype=None) -> ParticleState:
        """Particles at t=0 from a dataset (moving tensors are leaves with requires_grad)."""
        raise NotImplementedError

    def param_groups(self, state: ParticleState) -> list[dict]:
        """Optimizer parameter groups, e.g. ``[{"params": [state.x]}]``."""
        raise NotImplementedError

    def after_step(self, state: ParticleState, step: int) -> bool:
        """Called after each optimizer step under ``torch.no_grad()``.

        Returns True when the discrete labels changed (the engine then calls
        ``objective.reset()`` so that caches keyed on labels are dropped).
        """
        return False
