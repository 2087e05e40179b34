"""Kernels between distributions built on sliced Wasserstein (the WoW flows' MMD kernels).

Each kernel is a pure function of a matrix of ``SW_p^p`` values (`dsflow.ot.sliced`), so one
SW computation serves the three blocks of an MMD.  Defaults are the WoW paper's
(``../shared/reference/wow-method-notes.md``):

=========  ==============================  ====  ==========================
name       K(mu, nu)                        p     default
=========  ==============================  ====  ==========================
riesz      ``-SW_2^r``                       2     ``r = 1`` (the paper's MMDSW)
gaussian   ``exp(-SW_2^2 / (2 h))``          2     ``h = 0.1``
laplace    ``exp(-SW_1 / h)``                1     ``h = 0.5``
imq        ``(h + SW_2^2)^(-1/2)``           2     ``h = 1``
=========  ==============================  ====  ==========================

``SW_2 = sqrt(SW_2^2)`` has an infinite derivative at 0 (a class against itself, or a flow
that reached its target): `safe_root` defines it as 0 there, so the gradient is finite.
"""

from __future__ import annotations

import torch

#: name -> (the p of the SW_p^p matrix it reads, default parameters)
KERNELS = {
    "riesz": (2, {"r": 1.0}),
    "gaussian": (2, {"h": 0.1}),
    "laplace": (1, {"h": 0.5}),
    "imq": (2, {"h": 1.0}),
}


def safe_root(s: torch.Tensor, power: float = 0.5) -> torch.Tensor:
    """``s ** power`` for ``s >= 0`` with gradient 0 (not inf/NaN) where ``s == 0``; negative
    round-off (``s`` a difference of sums) is treated as 0."""
    positive = s > 0
    safe = torch.where(positive, s, torch.ones_like(s))  # the other branch never sees 0
    return torch.where(positive, safe.pow(power), torch.zeros_like(s))


def _positive(name: str, value) -> float:
    value = float(value)
    if not value > 0:
        raise ValueError(f"sw kernel: {name} must be > 0, got {value}")
    return value


def riesz(sw2: torch.Tensor, r: float = 1.0) -> torch.Tensor:
    """``-SW_2^r`` from ``SW_2^2`` (``0 < r < 2``: conditionally positive definite)."""
    r = _positive("r", r)
    if r >= 2:
        raise ValueError(f"sw kernel: the Riesz exponent r must lie in (0, 2), got {r}")
    return -safe_root(sw2, r / 2)


def gaussian(sw2: torch.Tensor, h: float = 0.1) -> torch.Tensor:
    return torch.exp(-sw2.clamp_min(0) / (2 * _positive("h", h)))


def laplace(sw1: torch.Tensor, h: float = 0.5) -> torch.Tensor:
    return torch.exp(-sw1.clamp_min(0) / _positive("h", h))


def imq(sw2: torch.Tensor, h: float = 1.0) -> torch.Tensor:
    return (_positive("h", h) + sw2.clamp_min(0)).rsqrt()


_FUNCTIONS = {"riesz": riesz, "gaussian": gaussian, "laplace": laplace, "imq": imq}


def sw_kernel(name: str, sw: torch.Tensor, **params) -> torch.Tensor:
    """Kernel ``name`` applied to a ``SW_p^p`` matrix (``p = KERNELS[name][0]``); ``params``
    override the defaults (``r`` for riesz, ``h`` for the others)."""
    if name not in KERNELS:
        raise ValueError(f"sw kernel: unknown kernel {name!r}; choose one of {sorted(KERNELS)}")
    defaults = KERNELS[name][1]
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"sw kernel {name!r}: unknown parameters {sorted(unknown)}; it takes {sorted(defaults)}")
    return _FUNCTIONS[name](sw, **{**defaults, **params})


__all__ = ["KERNELS", "sw_kernel", "safe_root", "riesz", "gaussian", "laplace", "imq"]
