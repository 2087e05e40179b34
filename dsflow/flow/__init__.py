"""Particle discretisation of Wasserstein gradient flows over labeled datasets.

``import dsflow.flow`` stays light: the engine and dynamics are loaded on first use.
"""

from dsflow.state import ParticleState

_LAZY = {
    "run_flow": "dsflow.flow.engine",
    "FlowResult": "dsflow.flow.engine",
    "FlowDivergedError": "dsflow.flow.engine",
    "FeatureDriven": "dsflow.flow.dynamics",
    "JointDrivenFixedLabel": "dsflow.flow.dynamics",
    "JointDrivenVariableLabel": "dsflow.flow.dynamics",
    "make_dynamics": "dsflow.flow.dynamics",
    "TrajectoryRecorder": "dsflow.flow.trajectory",
    "load_trajectory": "dsflow.flow.trajectory",
}

__all__ = ["ParticleState", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dsflow.flow' has no attribute {name!r}")
