"""Particle discretisation of Wasserstein gradient flows over labeled datasets."""

from dsflow.flow.state import ParticleState

__all__ = ["ParticleState"]
