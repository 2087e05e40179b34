"""The rules a flow applies around the optimizer step: gradient clipping before it,
Brownian noise and the feature box after it.

Each rule is parsed from its option once (bad options fail before step 0, naming the
fix) and applied in place on the hot path with no allocation beyond the noise draw.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence


def plain(value):
    """OmegaConf containers as plain python (options may come from Hydra configs)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return value


def clip_gradients(params: Sequence, max_norm: float, mode: str) -> None:
    """Clip gradients in place.

    ``global``: rescale all gradients together so their joint L2 norm is <= ``max_norm``.
    ``per_particle``: rescale each row of each parameter (a particle's features, a
    particle's or a class's Gaussian) to L2 norm <= ``max_norm``.
    """
    import torch

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if mode == "global":
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)
        return
    for g in grads:
        rows = g.reshape(g.shape[0], -1)
        norms = torch.linalg.vector_norm(rows, dim=1)
        factor = (max_norm / (norms + 1e-12)).clamp(max=1.0)
        g.mul_(factor.view(-1, *([1] * (g.ndim - 1))))


class GradientClip:
    """``grad_clip``: ``None``; a number (global L2 clipping); ``{max_norm, mode:
    global|per_particle}``.  `parse` returns ``None`` when there is nothing to clip."""

    def __init__(self, max_norm: float, mode: str = "global") -> None:
        self.max_norm, self.mode = float(max_norm), str(mode)

    @classmethod
    def parse(cls, grad_clip) -> "GradientClip | None":
        grad_clip = plain(grad_clip)
        if grad_clip is None:
            return None
        if isinstance(grad_clip, (int, float)):
            max_norm, mode = float(grad_clip), "global"
        elif isinstance(grad_clip, Mapping):
            unknown = set(grad_clip) - {"max_norm", "mode"}
            if unknown or "max_norm" not in grad_clip:
                raise ValueError(f"grad_clip must be {{max_norm: float, mode: global|per_particle}}, got {grad_clip!r}")
            max_norm, mode = float(grad_clip["max_norm"]), str(grad_clip.get("mode", "global"))
        else:
            raise ValueError(f"grad_clip must be null, a number or a mapping, got {grad_clip!r}")
        if mode not in ("global", "per_particle"):
            raise ValueError(f"grad_clip mode must be 'global' or 'per_particle', got {mode!r}")
        if not max_norm > 0:
            raise ValueError(f"grad_clip max_norm must be > 0, got {max_norm}")
        return cls(max_norm, mode)

    def apply(self, params: Sequence) -> None:
        clip_gradients(params, self.max_norm, self.mode)


class Box:
    """``box: [lo, hi]`` (either may be null): the features are clamped to it after the
    noise (the Euclidean projection onto the box), e.g. ``[0, 1]`` for pixels."""

    def __init__(self, lo: float | None, hi: float | None) -> None:
        self.lo, self.hi = lo, hi

    @classmethod
    def parse(cls, box) -> "Box | None":
        box = plain(box)
        if box is None:
            return None
        if not isinstance(box, Sequence) or len(box) != 2:
            raise ValueError(f"box must be [lo, hi] (either may be null), got {box!r}")
        lo, hi = (None if b is None else float(b) for b in box)
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(f"box: lo must be < hi, got [{lo}, {hi}]")
        return cls(lo, hi)

    def apply(self, state) -> None:
        state.x.clamp_(min=self.lo, max=self.hi)


class BrownianNoise:
    """Entropy terms as noise: ``x += sqrt(2 T lr / divisor) * xi``, ``xi ~ N(0, I)`` from a
    generator seeded with ``seed`` (same seed, same noise; its state is checkpointed).

    ``divisor`` is 1 for ``noise_scale="lr"`` and the functional's velocity factor for
    ``"lr_over_n"`` (``n`` for a particle average): then the noise is that of the
    Euler-Maruyama step of time ``lr / n`` that plain SGD takes (docs/engine.md).
    """

    SCALES = ("lr", "lr_over_n")

    def __init__(self, temperature: float, *, seed: int, device, divisor=1) -> None:
        import torch

        self.temperature = float(temperature)
        self.divisor = divisor
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed))

    @classmethod
    def for_objective(cls, objective, state, *, seed: int, noise_scale: str) -> "BrownianNoise | None":
        """The noise of ``objective``'s temperature, or ``None`` when it is 0."""
        if noise_scale not in cls.SCALES:
            raise ValueError(f"run_flow: noise_scale must be 'lr' or 'lr_over_n', got {noise_scale!r}")
        temperature = float(objective.temperature or 0.0)
        if temperature < 0 or not math.isfinite(temperature):
            raise ValueError(f"run_flow: objective temperature must be finite and >= 0, got {temperature}")
        if temperature == 0:
            return None
        divisor = objective.velocity_factor(state.y) if noise_scale == "lr_over_n" else 1
        return cls(temperature, seed=seed, device=state.x.device, divisor=divisor)

    def apply(self, state, lr: float) -> None:
        import torch

        var = 2.0 * self.temperature * lr / self.divisor
        noise = torch.randn(state.x.shape, generator=self.generator, device=state.x.device, dtype=state.x.dtype)
        state.x.add_(noise, alpha=math.sqrt(var))


__all__ = ["GradientClip", "Box", "BrownianNoise", "clip_gradients", "plain"]
