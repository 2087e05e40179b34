"""Functionals over labeled datasets (config group ``functional``)."""

from dsflow.functionals.base import Functional, WeightedSum

__all__ = ["Functional", "WeightedSum"]
