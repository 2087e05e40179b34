"""Functionals over labeled datasets (config group ``functional``)."""

from dsflow.functionals.base import Functional, WeightedSum
from dsflow.functionals.otdd import OTDD  # noqa: F401  (OTDD engine owner)
from dsflow.functionals.entropy import Entropy
from dsflow.functionals.mmd_sw import MMDSW
from dsflow.functionals.interactions import ClassRepulsion, PairwiseInteraction, SquaredDistanceRepulsion
from dsflow.functionals.potentials import (
    AffineNorm,
    BallConstraint,
    ClassAffineNorm,
    Collapse,
    FeatureNorm,
    Hinge,
    PotentialEnergy,
)

__all__ = [
    "Functional",
    "WeightedSum",
    "OTDD",
    "PotentialEnergy",
    "FeatureNorm",
    "AffineNorm",
    "ClassAffineNorm",
    "Hinge",
    "BallConstraint",
    "Collapse",
    "PairwiseInteraction",
    "ClassRepulsion",
    "SquaredDistanceRepulsion",
    "Entropy",
    "MMDSW",
]
