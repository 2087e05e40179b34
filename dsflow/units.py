"""Paper hyper-parameters in dsflow's units: the one rule every paper preset follows.

dsflow keeps image data in pixel units (``[0, 1]``, what the oracles and the plots read) and
its OTDD ground cost is ``|x - x'|^2 + W_2^2`` (no 1/2).  The authors' code (the OTDD
library, on geomloss) instead

* standardises the pixels of a dataset, ``(x - mean) / std`` per channel (``0.1307/0.3081``
  for the *NIST family, ImageNet statistics ``0.229, 0.224, 0.225`` for CIFAR-10, STL-10 and
  CAMELYON), so every squared distance is ``1 / std^2`` times ours;
* uses geomloss' cost ``|x - x'|^2 / 2 + W_2^2 / 2`` with ``blur = lambda^(1/2)``, i.e.
  entropic ``eps = lambda`` on *half* our cost;
* moves each particle by ``x -= step_size * n * grad``, the gradient of the half-cost
  objective: a time step ``step_size`` of the flow of ``OTDD^2 / 2``.

A paper's ``lambda`` (on standardised data, half cost) is therefore, in dsflow's
``functional.entreg``, ``2 * lambda * s^2`` with ``s^2 = 1 / mean_c(1 / std_c^2)`` (the
factor by which standardising scales a squared distance; for several channels it is exact
when the channels carry equal squared differences, and within 3 % for ImageNet's
statistics whatever they carry).  The Sinkhorn plan, and so the flow's direction, is then
the paper's exactly.  A paper's ``step_size`` on ``OTDD^2 / 2`` is a time step of
``step_size / 2`` on dsflow's ``OTDD^2`` (top-level ``time_step``; the app turns it into
``optimizer.lr = time_step * n``, see `lr_from_time_step`).

The resolvers ``${dsflow.paper_entreg:LAMBDA,STD}`` and ``${dsflow.paper_time_step:STEP}``
write that mapping into the configs, so ``dsflow --cfg job`` shows where a number came from
and a sweep over ``paper.lambda`` sweeps the paper's own parameter.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

#: the authors' per-channel standardisation (OTDD library ``DATASET_NORMALIZATION``)
NIST_STD = (0.3081,)
IMAGENET_STD = (0.229, 0.224, 0.225)


def squared_distance_scale(std: float | Sequence[float]) -> float:
    """``s^2``: how much smaller a squared distance is in pixel units than after standardising
    by ``std`` (one value, or one per channel), ``1 / mean_c(1 / std_c^2)``."""
    values = [float(std)] if isinstance(std, (int, float)) else [float(v) for v in std]
    if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError(f"paper units: std must be positive numbers (one per channel), got {std!r}")
    return 1.0 / (sum(1.0 / v**2 for v in values) / len(values))


def paper_entreg(lam: float, std: float | Sequence[float] = 1.0) -> float:
    """dsflow's ``entreg`` for a paper's entropic ``lambda`` on data standardised by ``std``:
    ``2 * lambda * s^2`` (half cost -> full cost, standardised -> pixel units)."""
    lam = float(lam)
    if not (lam > 0 and math.isfinite(lam)):
        raise ValueError(f"paper units: lambda must be a positive number, got {lam!r}")
    return 2.0 * lam * squared_distance_scale(std)


def paper_time_step(step_size: float) -> float:
    """dsflow's ``time_step`` for a paper's flow step on ``OTDD^2 / 2``: ``step_size / 2``."""
    step_size = float(step_size)
    if not (step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"paper units: step_size must be a positive number, got {step_size!r}")
    return step_size / 2.0


def lr_from_time_step(time_step: Any, n: int, optimizer_name: str, momentum: float = 0.0, *,
                      velocity_factor: Any = None) -> float:
    """``optimizer.lr`` that makes one step a time step ``time_step`` of the flow.

    Plain gradient descent moves particle ``i`` by ``lr * grad_i``, and its velocity is
    ``velocity_factor * grad_i``, so one step advances the flow by ``lr / velocity_factor``:
    ``lr = time_step * velocity_factor``.  The functional declares the factor
    (`dsflow.functionals.base.Functional.velocity_factor`); ``None`` means a particle
    average over the ``n`` particles (OTDD, potentials, double averages for interactions): the
    factor is ``n``; a class-mass functional (``mmd_sw``) has its gradients divided by the
    particles' masses in the engine and declares 1.  A factor that differs between particles
    cannot be one ``lr``: refused.  Adam normalises the
    gradient away, so a time step means nothing to it: refused; so is SGD with momentum,
    whose steady step is ``lr / (1 - momentum)`` (10x the time step at 0.9), not ``lr``.
    """
    try:
        tau = float(time_step)
    except (TypeError, ValueError):
        raise ValueError(f"time_step={time_step!r}: give a positive number (the flow's time step) or null") from None
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"time_step={time_step!r}: give a positive number (the flow's time step) or null")
    if optimizer_name not in ("SGD",):
        raise ValueError(
            f"time_step={tau} sets the step of plain gradient descent (optimizer=sgd), but the "
            f"optimizer is {optimizer_name}, whose step is not a time step; use optimizer=sgd, or set "
            "optimizer.lr and time_step=null"
        )
    if float(momentum or 0.0) != 0.0:
        raise ValueError(
            f"time_step={tau} is the step of plain gradient descent, but optimizer.momentum={momentum} makes "
            f"each step about lr / (1 - momentum) = {1 / (1 - float(momentum)):.3g}x longer; use optimizer=sgd "
            "with time_step, or keep momentum and set optimizer.lr with time_step=null"
        )
    factor = int(n) if velocity_factor is None else velocity_factor
    if not isinstance(factor, (int, float)):
        values = {float(v) for v in (factor.reshape(-1).tolist() if hasattr(factor, "reshape") else factor)}
        if len(values) != 1:
            raise ValueError(
                f"time_step={tau}: the functional's particles move at different rates per unit gradient "
                f"({len(values)} distinct velocity factors), so no single optimizer.lr is a time step; set "
                "optimizer.lr with time_step=null"
            )
        factor = values.pop()
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"time_step={tau}: the functional's velocity factor must be a positive number, got {factor!r}")
    return tau * factor


def register_resolvers() -> None:
    """Register ``dsflow.paper_entreg`` and ``dsflow.paper_time_step`` with OmegaConf (idempotent)."""
    from omegaconf import OmegaConf

    for name, fn in (("dsflow.paper_entreg", paper_entreg), ("dsflow.paper_time_step", paper_time_step)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


__all__ = ["paper_entreg", "paper_time_step", "squared_distance_scale", "lr_from_time_step",
           "register_resolvers", "NIST_STD", "IMAGENET_STD"]
