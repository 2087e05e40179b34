"""`ParticleState`: the particles a flow moves, one per sample, and their label state.

This module sits below both `dsflow.flow` (which moves states) and `dsflow.functionals`
(which evaluate them), so that neither has to import the other: a functional needs the
state, not the engine, and the engine needs the `Functional` interface, not the state's
home.

A labeled dataset is discretised as particles ``z_i = (x_i, v_i)`` where ``x_i`` are
features and ``v_i`` is the particle's label representation.  What ``v_i`` is belongs to
the dynamics (paper section 6.1), and the state holds it in one typed slot,
``state.labels``:

* feature-driven (``fd``): ``labels is None``; ``v_i`` is the class of ``y_i`` and class
  statistics are recomputed from the particles by whoever needs them.
* joint-driven fixed-label (``jd_fl``): `GaussianLabels`, one Gaussian ``N(mu_j, F_j F_j^T)``
  per class, moved by its own gradient; ``index[i]`` is the row of particle ``i``'s class.
* joint-driven variable-label (``jd_vl``): `GaussianLabels` with one Gaussian per particle
  (``index = arange(n)``); the discrete labels ``y`` are the clusters the dynamics find in
  them (its clustering bookkeeping lives in ``state.meta``).

Functionals read the slot through its declared interface (``labels.kind`` and the fields
of that kind), never by guessing the dynamics from which fields happen to be set.  A new
flow family (e.g. Wasserstein-over-Wasserstein) adds a `LabelState` subclass with its own
``kind``; functionals that do not know the kind refuse it by name.

Covariances are parametrised by a factor ``F`` (``Sigma = F F^T``) so that a gradient
step can never leave the positive semi-definite cone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from dsflow.data.container import LabeledData


class LabelState:
    """The label representation a dynamics moves or maintains besides the features.

    Subclasses name their ``kind`` and list their tensors under stable keys: the keys are
    what checkpoints store and what the NaN guard checks, so renaming one breaks resuming
    older checkpoints.
    """

    #: What the representation is (``"gaussian"``); functionals dispatch on it.
    kind: ClassVar[str] = "label_state"

    def tensors(self) -> dict[str, Any]:
        """The tensors of the representation under their checkpoint keys."""
        raise NotImplementedError(f"{type(self).__name__} must implement tensors()")

    def set_tensor(self, key: str, value) -> None:
        """Replace the tensor stored under ``key`` (a key of `tensors`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement set_tensor()")

    def detached(self) -> "LabelState":
        """A copy with detached, cloned tensors (snapshots of the last finite state)."""
        raise NotImplementedError(f"{type(self).__name__} must implement detached()")


@dataclass
class GaussianLabels(LabelState):
    """One Gaussian ``N(means[j], factors[j] @ factors[j].mT)`` per row; particle ``i``
    carries row ``index[i]`` (per class under jd_fl, per particle under jd_vl).

    ``factors`` may be ``None`` (point masses: only means).  The checkpoint keys are the
    historical ``label_means`` / ``label_factors`` / ``label_index``, so checkpoints written
    before the label state had a slot of its own still resume.
    """

    means: Any  # (k, d) per class (jd_fl) or (n, d) per particle (jd_vl)
    factors: Any = None  # (k, d, r) or (n, d, r): Sigma = F @ F.mT
    index: Any = None  # (n,) row of ``means`` used by particle i

    kind: ClassVar[str] = "gaussian"
    _KEYS: ClassVar[dict[str, str]] = {"label_means": "means", "label_factors": "factors", "label_index": "index"}

    def __post_init__(self) -> None:
        if self.means is None:
            raise ValueError("GaussianLabels: means are required (a (k, d) or (n, d) tensor)")

    def tensors(self) -> dict[str, Any]:
        return {key: getattr(self, attr) for key, attr in self._KEYS.items() if getattr(self, attr) is not None}

    def set_tensor(self, key: str, value) -> None:
        try:
            setattr(self, self._KEYS[key], value)
        except KeyError:
            raise KeyError(f"GaussianLabels has no tensor {key!r}; its keys are {sorted(self._KEYS)}") from None

    def detached(self) -> "GaussianLabels":
        copy = lambda t: None if t is None else t.detach().clone()  # noqa: E731
        return GaussianLabels(means=copy(self.means), factors=copy(self.factors), index=copy(self.index))


class ParticleState:
    """Features ``x`` (a leaf that requires grad while it moves), current discrete labels
    ``y``, the dynamics' label state ``labels`` (`LabelState` or ``None``), the dataset the
    particles started from (``template``: names, image shape), the step reached and the
    dynamics' bookkeeping (``meta``, e.g. k-means centres).

    ``ParticleState(x, y, label_means=..., label_factors=..., label_index=...)`` and the
    ``label_means``/``label_factors``/``label_index`` attributes are kept as the spelling of
    a `GaussianLabels` state for callers written before ``labels`` existed.
    """

    def __init__(self, x, y, label_means=None, label_factors=None, label_index=None,
                 template: LabeledData | None = None, step: int = 0, meta: dict | None = None,
                 *, labels: LabelState | None = None) -> None:
        if labels is not None and (label_means is not None or label_factors is not None or label_index is not None):
            raise ValueError("ParticleState: give either labels=GaussianLabels(...) or label_means/label_factors/"
                             "label_index, not both")
        if labels is None and label_means is not None:
            labels = GaussianLabels(means=label_means, factors=label_factors, index=label_index)
        elif labels is None and (label_factors is not None or label_index is not None):
            raise ValueError("ParticleState: label_factors/label_index need label_means (the Gaussians' means)")
        if labels is not None and not isinstance(labels, LabelState):
            raise TypeError(f"ParticleState: labels must be a LabelState (e.g. GaussianLabels), "
                            f"got {type(labels).__name__}")
        self.x = x
        self.y = y
        self.labels = labels
        self.template = template
        self.step = int(step)
        self.meta: dict[str, Any] = {} if meta is None else meta

    # -- the Gaussian spelling of ``labels`` (kept for existing callers) ----------------
    def _gaussian(self, attr: str):
        labels = self.labels
        return getattr(labels, attr) if isinstance(labels, GaussianLabels) else None

    def _set_gaussian(self, attr: str, value) -> None:
        if isinstance(self.labels, GaussianLabels):
            setattr(self.labels, attr, value)
        elif value is not None:
            raise AttributeError(f"this state has no Gaussian label state (labels={type(self.labels).__name__}); "
                                 "set state.labels = GaussianLabels(means, factors, index) instead")

    label_means = property(lambda self: self._gaussian("means"),
                           lambda self, v: self._set_gaussian("means", v))
    label_factors = property(lambda self: self._gaussian("factors"),
                             lambda self, v: self._set_gaussian("factors", v))
    label_index = property(lambda self: self._gaussian("index"),
                           lambda self, v: self._set_gaussian("index", v))

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
        if self.labels is not None:
            out.update(self.labels.tensors())
        return out

    def set_tensor(self, key: str, value) -> None:
        """Replace the tensor under ``key`` (a key of `tensors`): restoring a checkpoint or a backup."""
        if key in ("x", "y"):
            setattr(self, key, value)
        elif self.labels is None:
            raise KeyError(f"cannot set {key!r}: this state has no label state (feature-driven dynamics)")
        else:
            self.labels.set_tensor(key, value)

    def is_finite(self) -> bool:
        import torch

        return all(
            bool(torch.isfinite(v).all()) for v in self.tensors().values() if torch.is_floating_point(v)
        )

    def snapshot(self) -> "ParticleState":
        """A detached copy (e.g. the last finite state before a divergence)."""
        return ParticleState(x=self.x.detach().clone(), y=self.y.detach().clone(),
                             labels=None if self.labels is None else self.labels.detached(),
                             template=self.template, step=self.step, meta=dict(self.meta))

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

    def __repr__(self) -> str:
        labels = "None" if self.labels is None else type(self.labels).__name__
        return f"ParticleState(n={self.n}, d={self.d}, labels={labels}, step={self.step})"


__all__ = ["ParticleState", "LabelState", "GaussianLabels"]
