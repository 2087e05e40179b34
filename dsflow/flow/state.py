"""`ParticleState`: the particles a flow moves, one per sample.

A labeled dataset is discretised as particles ``z_i = (x_i, v_i)`` where ``x_i`` are
features and ``v_i`` is the particle's label representation.  What ``v_i`` is depends
on the dynamics (paper section 6.1):

* feature-driven (``fd``): ``v_i`` is the class of ``y_i``; class statistics are
  recomputed from the particles, so ``label_means``/``label_factors`` stay ``None``.
* joint-driven fixed-label (``jd_fl``): one Gaussian ``N(mu_j, F_j F_j^T)`` per class,
  moved by its own gradient; ``label_index[i]`` is the row of particle ``i``'s class.
* joint-driven variable-label (``jd_vl``): one Gaussian per particle
  (``label_index = arange(n)``); discrete labels ``y`` are re-found by clustering.

Covariances are parametrised by a factor ``F`` (``Sigma = F F^T``) so that a gradient
step can never leave the positive semi-definite cone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dsflow.data.container import LabeledData


@dataclass
class ParticleState:
    x: Any  # (n, d) features; a leaf tensor that requires grad while it moves
    y: Any  # (n,) int64 current discrete labels
    label_means: Any = None  # (k, d) per class (jd_fl) or (n, d) per particle (jd_vl)
    label_factors: Any = None  # (k, d, r) or (n, d, r): Sigma = F @ F.mT
    label_index: Any = None  # (n,) row of label_means used by particle i
    template: LabeledData | None = None  # the dataset the particles started from (names, shapes)
    step: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def d(self) -> int:
        return int(self.x.shape[1])

    @property
    def num_classes(self) -> int:
        import torch

        return int(torch.unique(self.y).numel())

    def tensors(self) -> dict[str, Any]:
        """The tensors that define the state (for checkpoints and NaN checks)."""
        out = {"x": self.x, "y": self.y}
        for k in ("label_means", "label_factors", "label_index"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out

    def is_finite(self) -> bool:
        import torch

        return all(
            bool(torch.isfinite(v).all()) for v in self.tensors().values() if torch.is_floating_point(v)
        )

    def snapshot(self) -> "ParticleState":
        """A detached copy (e.g. the last finite state before a divergence)."""
        kw = {k: v.detach().clone() for k, v in self.tensors().items()}
        return ParticleState(template=self.template, step=self.step, meta=dict(self.meta), **kw)

    def to_data(self, name: str | None = None) -> LabeledData:
        """The current particles as a `LabeledData` (detached, same names and shape)."""
        t = self.template
        return LabeledData(
            x=self.x.detach(),
            y=self.y.detach(),
            class_names=(t.class_names if t is not None else None),
            image_shape=(t.image_shape if t is not None else None),
            name=name or (t.name if t is not None else "particles"),
        )
