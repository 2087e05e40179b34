"""Synthetic labeled point clouds: Gaussian blobs, swiss roll, two moons, concentric rings.

Every generator draws *balanced* classes: ``n_samples`` points split as evenly as possible
over the classes, or exactly ``n_per_class`` per class when that is given.  The common
``max_samples`` / ``classes`` options then subsample as for any other loader.  All draws
come from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dsflow.data.common import check_choice, check_positive_int, finish_vectors, select_indices, to_plain


def _class_sizes(n_samples: Any, n_per_class: Any, n_classes: int, loader: str) -> np.ndarray:
    """How many points each class gets (balanced)."""
    if n_per_class is not None:
        return np.full(n_classes, check_positive_int(n_per_class, "n_per_class", loader), dtype=np.int64)
    n_samples = check_positive_int(n_samples, "n_samples", loader, allow_none=False)
    if n_samples < n_classes:
        raise ValueError(f"{loader}: n_samples={n_samples} is smaller than the number of classes ({n_classes})")
    sizes = np.full(n_classes, n_samples // n_classes, dtype=np.int64)
    sizes[: n_samples % n_classes] += 1
    return sizes


def _finish(x, y, *, loader, name, max_samples, classes, seed, transform, meta):
    # n_per_class was consumed by generation; the other common options apply here.
    keep = select_indices(y, max_samples=max_samples, classes=classes, seed=seed, loader=loader)
    return finish_vectors(
        x[keep], y[keep], transform=transform, seed=seed, class_names=None, name=name or loader,
        meta={"dataset": loader, "indices": keep.tolist(), **meta},
    )


def _check_noise(noise: Any, loader: str) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"{loader}: noise must be a non-negative number, got {noise!r}")
    return float(noise)


def _gaussian_centres(layout: str, k: int, dim: int, radius: float, rng) -> np.ndarray:
    if layout == "circle":
        if dim < 2:
            raise ValueError("gaussians: layout 'circle' needs dim >= 2 (use 'line' for 1-D)")
        angles = 2 * math.pi * np.arange(k) / k
        centres = np.zeros((k, dim))
        centres[:, 0], centres[:, 1] = radius * np.cos(angles), radius * np.sin(angles)
        return centres
    if layout == "simplex":
        if dim < k:
            raise ValueError(f"gaussians: layout 'simplex' puts class j at radius*e_j and needs dim >= k ({dim} < {k})")
        return radius * np.eye(k, dim)
    if layout == "line":
        centres = np.zeros((k, dim))
        centres[:, 0] = radius * (np.arange(k) - (k - 1) / 2)
        return centres
    # "random": centres ~ N(0, radius^2 I), drawn from the same seeded stream
    return radius * rng.standard_normal((k, dim))


def gaussians(
    n_classes: int | None = None,
    k: int | None = None,
    dim: int = 2,
    std: float | None = None,
    spread: float | None = None,
    layout: str = "circle",
    radius: float = 4.0,
    centers: Any = None,
    n_samples: int = 600,
    n_per_class: int | None = None,
    max_samples: int | None = None,
    classes: Any = None,
    transform: Any = None,
    seed: int | None = 0,
    name: str | None = None,
):
    """``k`` isotropic Gaussian blobs in ``dim`` dimensions, class ``j`` around centre ``j``.

    ``n_classes`` / ``k`` (aliases, default 3) and ``std`` / ``spread`` (aliases, default 0.5)
    name the same thing.  Centres: explicit ``centers`` (k x dim), or ``layout``
    ``circle`` (evenly on a circle of ``radius`` in the first two coordinates), ``simplex``
    (``radius * e_j``), ``line`` (spacing ``radius`` along the first axis) or ``random``
    (``N(0, radius^2 I)``).
    """
    loader = "gaussians"
    if n_classes is not None and k is not None and n_classes != k:
        raise ValueError(f"{loader}: k and n_classes are the same option; got k={k}, n_classes={n_classes}")
    k_val = check_positive_int(n_classes if n_classes is not None else (k if k is not None else 3), "k", loader)
    if std is not None and spread is not None and std != spread:
        raise ValueError(f"{loader}: std and spread are the same option; got std={std}, spread={spread}")
    sigma = std if std is not None else (spread if spread is not None else 0.5)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or sigma < 0:
        raise ValueError(f"{loader}: std must be a non-negative number, got {sigma!r}")
    dim = check_positive_int(dim, "dim", loader, allow_none=False)
    rng = np.random.default_rng(seed)
    centers = to_plain(centers)
    if centers is not None:
        centres = np.asarray(centers, dtype=np.float64)
        if centres.shape != (k_val, dim):
            raise ValueError(f"{loader}: centers must have shape (k, dim) = ({k_val}, {dim}), got {centres.shape}")
    else:
        check_choice(layout, ("circle", "simplex", "line", "random"), "layout", loader)
        centres = _gaussian_centres(layout, k_val, dim, float(radius), rng)
    sizes = _class_sizes(n_samples, n_per_class, k_val, loader)
    y = np.repeat(np.arange(k_val), sizes)
    x = centres[y] + float(sigma) * rng.standard_normal((y.shape[0], dim))
    return _finish(
        x, y, loader=loader, name=name, max_samples=max_samples, classes=classes, seed=seed,
        transform=transform, meta={"centers": centres.tolist(), "std": float(sigma)},
    )


def swissroll(
    n_classes: int = 4,
    noise: float = 0.05,
    height: float = 21.0,
    n_samples: int = 600,
    n_per_class: int | None = None,
    max_samples: int | None = None,
    classes: Any = None,
    transform: Any = None,
    seed: int | None = 0,
    name: str | None = None,
):
    """3-D swiss roll (scikit-learn's parametrisation) with labels by position along the roll.

    ``t ~ U[1.5 pi, 4.5 pi]``; point ``(t cos t, h, t sin t) + noise``, ``h ~ U[0, height]``.
    Class ``j`` is the ``j``-th of ``n_classes`` equal-count segments of ``t``.
    """
    loader = "swissroll"
    k = check_positive_int(n_classes, "n_classes", loader)
    noise = _check_noise(noise, loader)
    sizes = _class_sizes(n_samples, n_per_class, k, loader)
    rng = np.random.default_rng(seed)
    n = int(sizes.sum())
    t = np.sort(1.5 * math.pi * (1 + 2 * rng.random(n)))
    y = np.repeat(np.arange(k), sizes)  # t is sorted, so consecutive blocks are segments of the roll
    x = np.stack([t * np.cos(t), float(height) * rng.random(n), t * np.sin(t)], axis=1)
    x = x + noise * rng.standard_normal(x.shape)
    return _finish(x, y, loader=loader, name=name, max_samples=max_samples, classes=classes, seed=seed,
                   transform=transform, meta={})


def moons(
    noise: float = 0.1,
    n_samples: int = 600,
    n_per_class: int | None = None,
    max_samples: int | None = None,
    classes: Any = None,
    transform: Any = None,
    seed: int | None = 0,
    name: str | None = None,
):
    """Two interleaving half circles (scikit-learn's ``make_moons`` geometry), labels 0 and 1."""
    loader = "moons"
    noise = _check_noise(noise, loader)
    sizes = _class_sizes(n_samples, n_per_class, 2, loader)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(2), sizes)
    t = math.pi * rng.random(y.shape[0])
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)
    lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.where(y[:, None] == 0, upper, lower) + noise * rng.standard_normal((y.shape[0], 2))
    return _finish(x, y, loader=loader, name=name, max_samples=max_samples, classes=classes, seed=seed,
                   transform=transform, meta={})


def rings(
    n_classes: int = 3,
    radius: float = 1.0,
    noise: float = 0.05,
    n_samples: int = 600,
    n_per_class: int | None = None,
    max_samples: int | None = None,
    classes: Any = None,
    transform: Any = None,
    seed: int | None = 0,
    name: str | None = None,
):
    """Concentric circles in 2-D; ring ``j`` (radius ``radius * (j+1) / n_classes``) is class ``j``."""
    loader = "rings"
    k = check_positive_int(n_classes, "n_classes", loader)
    noise = _check_noise(noise, loader)
    sizes = _class_sizes(n_samples, n_per_class, k, loader)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), sizes)
    r = float(radius) * (y + 1) / k
    angle = 2 * math.pi * rng.random(y.shape[0])
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1) + noise * rng.standard_normal((y.shape[0], 2))
    return _finish(x, y, loader=loader, name=name, max_samples=max_samples, classes=classes, seed=seed,
                   transform=transform, meta={"radii": (float(radius) * np.arange(1, k + 1) / k).tolist()})
