"""Synthetic point clouds: shapes, balance, the geometry that defines each label, seeds, errors."""

import math

import numpy as np
import pytest
import torch

from dsflow.data import gaussians, moons, rings, swissroll


@pytest.mark.parametrize("loader, dim, k", [(gaussians, 2, 3), (swissroll, 3, 4), (moons, 2, 2), (rings, 2, 3)])
def test_shapes_dtypes_balance_and_determinism(loader, dim, k):
    data = loader(n_samples=121, seed=0)
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64 and data.x.device.type == "cpu"
    assert data.x.shape == (121, dim) and data.num_classes == k
    counts = data.class_counts()
    assert int(counts.max() - counts.min()) <= 1  # balanced up to the remainder
    torch.testing.assert_close(loader(n_samples=121, seed=0).x, data.x, rtol=0, atol=0)
    assert not torch.equal(loader(n_samples=121, seed=1).x, data.x)
    per_class = loader(n_per_class=9, seed=0)
    assert per_class.n == 9 * k and bool((per_class.class_counts() == 9).all())


def test_common_options_after_generation():
    data = rings(n_classes=4, n_samples=80, max_samples=30, classes=[1, 3], seed=2)
    assert data.n == 30 and set(data.y.tolist()) <= {1, 3}
    shifted = rings(n_samples=40, transform=[{"name": "shift", "offset": [10.0, 0.0]}], seed=0)
    torch.testing.assert_close(shifted.x - torch.tensor([10.0, 0.0]), rings(n_samples=40, seed=0).x)


def test_gaussians_means_match_centres():
    data = gaussians(n_classes=4, dim=5, std=0.2, layout="simplex", radius=3.0, n_per_class=2000, seed=0)
    centres = 3.0 * np.eye(4, 5)
    for j in range(4):
        mean = data.x[data.y == j].double().mean(0).numpy()
        # standard error 0.2 / sqrt(2000) = 0.0045 per coordinate; allow 5 standard errors
        np.testing.assert_allclose(mean, centres[j], atol=0.023)
        std = data.x[data.y == j].double().std(0).numpy()
        np.testing.assert_allclose(std, 0.2, rtol=0.05)


def test_gaussians_layouts_aliases_and_errors():
    circle = gaussians(k=6, std=0.0, radius=2.0, n_per_class=2, seed=0)
    np.testing.assert_allclose(circle.x.norm(dim=1).numpy(), 2.0, rtol=1e-6)
    explicit = gaussians(n_classes=2, dim=3, spread=0.0, centers=[[1, 2, 3], [4, 5, 6]], n_per_class=3)
    np.testing.assert_allclose(explicit.x[explicit.y == 1].numpy(), np.tile([4.0, 5.0, 6.0], (3, 1)))
    line = gaussians(k=3, std=0.0, layout="line", radius=1.5, n_per_class=1, dim=1)
    np.testing.assert_allclose(sorted(line.x[:, 0].tolist()), [-1.5, 0.0, 1.5], atol=1e-6)
    with pytest.raises(ValueError, match="k and n_classes are the same option"):
        gaussians(k=3, n_classes=4)
    with pytest.raises(ValueError, match="std and spread are the same option"):
        gaussians(std=0.1, spread=0.2)
    with pytest.raises(ValueError, match="needs dim >= k"):
        gaussians(k=4, dim=2, layout="simplex")
    with pytest.raises(ValueError, match="layout must be one of"):
        gaussians(layout="hexagon")
    with pytest.raises(ValueError, match=r"centers must have shape \(k, dim\) = \(2, 2\)"):
        gaussians(k=2, centers=[[0, 0, 0], [1, 1, 1]])


def test_rings_radius_per_class():
    data = rings(n_classes=3, radius=3.0, noise=0.0, n_samples=90, seed=0)
    r = data.x.double().norm(dim=1)
    for j in range(3):
        np.testing.assert_allclose(r[data.y == j].numpy(), 3.0 * (j + 1) / 3, rtol=1e-6)


def test_moons_lie_on_their_half_circles():
    data = moons(noise=0.0, n_samples=100, seed=0).x.double()
    y = moons(noise=0.0, n_samples=100, seed=0).y
    upper, lower = data[y == 0], data[y == 1]
    np.testing.assert_allclose(upper.norm(dim=1).numpy(), 1.0, rtol=1e-6)
    assert float(upper[:, 1].min()) >= -1e-6
    np.testing.assert_allclose((lower - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1).numpy(), 1.0,
                               rtol=1e-6)


def test_swissroll_labels_are_segments_along_the_roll():
    data = swissroll(n_classes=4, noise=0.0, n_samples=200, seed=0)
    t = torch.sqrt(data.x[:, 0].double() ** 2 + data.x[:, 2].double() ** 2)  # |(t cos t, t sin t)| = t
    assert float(t.min()) >= 1.5 * math.pi - 1e-4 and float(t.max()) <= 4.5 * math.pi + 1e-4
    for j in range(3):
        assert float(t[data.y == j].max()) <= float(t[data.y == j + 1].min())


def test_bad_generation_options():
    with pytest.raises(ValueError, match="n_samples=2 is smaller than the number of classes \\(3\\)"):
        rings(n_samples=2)
    with pytest.raises(ValueError, match="noise must be a non-negative number"):
        moons(noise=-1)
