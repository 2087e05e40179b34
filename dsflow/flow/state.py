"""The old home of `ParticleState`, kept so ``from dsflow.flow.state import ParticleState``
still works.  The state now lives in `dsflow.state`, below both `dsflow.flow` and
`dsflow.functionals` (functionals evaluate states without importing the engine)."""

from dsflow.state import GaussianLabels, LabelState, ParticleState

__all__ = ["ParticleState", "LabelState", "GaussianLabels"]
