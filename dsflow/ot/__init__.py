"""OTDD engine: class statistics, label models, costs, Bures, Sinkhorn, outer OT, the problem, `otdd`;
sliced Wasserstein between class distributions (`sliced`, for the WoW flows).

Importing this package imports torch (it is only imported lazily by ``dsflow``).
"""

from dsflow.ot.class_stats import GaussianStats, class_gaussians, class_index
from dsflow.ot.costs import ground_cost, sqdist
from dsflow.ot.gaussian import bures_w2, bures_w2_factors, choose_bures_method, cross_nuclear, diagonal_bures_w2
from dsflow.ot.label_models import LabelDistances, LabelModel, label_distances, make_label_model
from dsflow.ot.labels import gaussian_label_distances
from dsflow.ot.otdd import OTDDResult, otdd
from dsflow.ot.outer import OuterResult, augmented_cost, augmented_ot
from dsflow.ot.problem import OTDDProblem, make_problem
from dsflow.ot.sinkhorn import SinkhornPotentials, log_sinkhorn, sinkhorn_potentials, sinkhorn_value
from dsflow.ot.sliced import random_directions, sliced_wasserstein, sliced_wasserstein_blocks, sliced_wasserstein_classes

__all__ = [
    "GaussianStats", "LabelDistances", "LabelModel", "OTDDProblem", "OTDDResult", "OuterResult",
    "SinkhornPotentials", "augmented_cost", "augmented_ot", "bures_w2", "bures_w2_factors",
    "choose_bures_method", "class_gaussians", "class_index", "cross_nuclear", "diagonal_bures_w2",
    "gaussian_label_distances", "ground_cost", "label_distances", "log_sinkhorn", "make_label_model",
    "make_problem", "otdd", "random_directions", "sinkhorn_potentials", "sinkhorn_value", "sliced_wasserstein",
    "sliced_wasserstein_blocks", "sliced_wasserstein_classes", "sqdist",
]
