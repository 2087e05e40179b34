"""Test-local helpers for the flow tests: tiny data and stand-in functionals.

The stand-ins replace the OTDD functional (written elsewhere) so that the engine and
dynamics can be tested on their own; they are *not* part of the package.
"""

from __future__ import annotations

import functools

import torch

from dsflow.data.container import LabeledData
from dsflow.functionals.base import Functional


def blobs(centres, n_per_class=30, std=0.3, seed=0, labels=None, dtype=torch.float32):
    """Labeled Gaussian blobs around ``centres`` (class j around centre j)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.as_tensor(centres, dtype=torch.float64)
    k, d = centres.shape
    x = centres.repeat_interleave(n_per_class, 0) + std * torch.randn(k * n_per_class, d, generator=g, dtype=torch.float64)
    y = torch.arange(k).repeat_interleave(n_per_class)
    if labels is not None:
        y = torch.as_tensor(labels)[y]
    return LabeledData(x.to(dtype), y)


def sgd(lr):
    return functools.partial(torch.optim.SGD, lr=lr)


def adam(lr):
    return functools.partial(torch.optim.Adam, lr=lr)


class FeatureSinkhorn(Functional):
    """Stand-in for an OTDD flow: Sinkhorn divergence between the features and a target's."""

    name = "feature_ot"

    def __init__(self, blur=0.1):
        self.blur = blur
        self.target = None
        self.resets = 0

    def bind(self, *, source=None, target=None):
        self.target = target
        return self

    def reset(self):
        self.resets += 1

    def __call__(self, state):
        from geomloss import SamplesLoss

        loss = SamplesLoss("sinkhorn", p=2, blur=self.blur, backend="tensorized")
        return loss(state.x, self.target.x.to(state.x))


class LabelGaussianSinkhorn(Functional):
    """Stand-in for a joint-driven OTDD: Sinkhorn divergence on ``[x, mu, vec(Sigma)]``.

    Each particle carries the Gaussian of its row ``label_index[i]`` (class row in jd_fl,
    its own in jd_vl); each target sample carries its class's mean and covariance.  The
    gradient reaches features, means and covariance factors.
    """

    name = "label_ot"

    def __init__(self, blur=0.1, cov_weight=1.0):
        self.blur = blur
        self.cov_weight = cov_weight
        self.target_points = None
        self.resets = 0

    def bind(self, *, source=None, target=None):
        x, y = target.x.double(), target.y
        classes, idx = torch.unique(y, return_inverse=True)
        means = torch.stack([x[idx == j].mean(0) for j in range(len(classes))])
        covs = torch.stack([torch.cov(x[idx == j].T).reshape(x.shape[1], x.shape[1]) for j in range(len(classes))])
        self.target_points = torch.cat(
            [x, means[idx], self.cov_weight * covs[idx].reshape(len(x), -1)], dim=1
        ).float()
        return self

    def reset(self):
        self.resets += 1

    def __call__(self, state):
        from geomloss import SamplesLoss

        mu = state.label_means[state.label_index]
        F = state.label_factors[state.label_index]
        cov = (F @ F.mT).reshape(state.n, -1)
        pts = torch.cat([state.x, mu, self.cov_weight * cov], dim=1)
        loss = SamplesLoss("sinkhorn", p=2, blur=self.blur, backend="tensorized")
        return loss(pts, self.target_points.to(pts))


class Scripted(Functional):
    """``0.5 * mean ||x||^2`` that turns NaN (value or gradient) at a chosen step."""

    name = "scripted"

    def __init__(self, bad_step=3, mode="value"):
        self.bad_step = bad_step
        self.mode = mode

    def __call__(self, state):
        v = 0.5 * state.x.square().sum(1).mean()
        if state.step >= self.bad_step:
            if self.mode == "value":
                return v * float("nan")
            # finite value, infinite gradient: d/dx sqrt(|x - x|) at 0
            return v + (state.x - state.x.detach()).abs().sqrt().sum()
        return v
