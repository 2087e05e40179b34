"""OTDD engine: costs, Gaussian/Bures label model, label distances, Sinkhorn, outer OT, `otdd`.

Importing this package imports torch (it is only imported lazily by ``dsflow``).
"""

from dsflow.ot.costs import ground_cost, sqdist
from dsflow.ot.gaussian import (
    GaussianStats,
    bures_w2,
    bures_w2_factors,
    choose_bures_method,
    class_gaussians,
    class_index,
    cross_nuclear,
    diagonal_bures_w2,
)
from dsflow.ot.labels import LabelDistances, gaussian_label_distances, label_distances
from dsflow.ot.otdd import OTDDResult, otdd
from dsflow.ot.outer import OuterResult, augmented_cost, augmented_ot
from dsflow.ot.sinkhorn import SinkhornPotentials, log_sinkhorn, sinkhorn_potentials, sinkhorn_value

__all__ = [
    "GaussianStats", "LabelDistances", "OTDDResult", "OuterResult", "SinkhornPotentials",
    "augmented_cost", "augmented_ot", "bures_w2", "bures_w2_factors", "choose_bures_method",
    "class_gaussians", "class_index", "cross_nuclear", "diagonal_bures_w2", "gaussian_label_distances",
    "ground_cost", "label_distances", "log_sinkhorn", "otdd", "sinkhorn_potentials", "sinkhorn_value", "sqdist",
]
