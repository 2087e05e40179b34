"""Potential energies ``V(rho) = int V(z) d rho(z)`` (paper section 5, "Potential energy").

Each functional is the *average* over particles of a per-particle potential ``V(x_i, y_i)``,
so the gradient with respect to particle ``i`` is ``(1/n) grad V(x_i, y_i)`` (the base-class
convention; see `dsflow.functionals.base`).  Only features move under a potential: the
label state of a `ParticleState` (``state.labels``, e.g. jd Gaussians) is not used.

Parameters given as lists (Hydra configs) are turned into tensors on the particles'
device and dtype at first use and cached per (device, dtype).

Norms use ``torch.linalg.vector_norm``, whose gradient at the origin is the subgradient 0
(finite), so particles that reach the minimiser of a non-smooth potential stay finite.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from dsflow.data.common import to_plain
from dsflow.state import ParticleState
from dsflow.functionals.base import Functional


def _as_tensor(value, like, *, name: str, ndim: int | None = None):
    """``value`` (list, number, array or tensor) as a tensor on ``like``'s device/dtype."""
    import torch

    try:
        t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: cannot convert {value!r} to a numeric tensor ({err})") from None
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or Inf values")
    return t




class PotentialEnergy(Functional):
    """Base class: ``F(rho_N) = (1/n) sum_i V(x_i, y_i)``.

    Subclasses implement :meth:`potential` returning the ``(n,)`` per-particle values.
    """

    name = "potential"

    def __init__(self) -> None:
        self._cache: dict[tuple, Any] = {}

    def potential(self, x, y):  # pragma: no cover - abstract
        """Per-particle potential values, a ``(n,)`` tensor differentiable in ``x``."""
        raise NotImplementedError

    def __call__(self, state: ParticleState):
        return self.potential(state.x, state.y).mean()

    # -- helpers -----------------------------------------------------------------------
    def _param(self, key: str, value, like, *, ndim=None):
        """Cached tensor version of a constructor parameter on ``like``'s device/dtype."""
        ck = (key, like.device, like.dtype)
        if ck not in self._cache:
            self._cache[ck] = _as_tensor(value, like, name=f"{type(self).__name__}.{key}", ndim=ndim)
        return self._cache[ck]

    def _vector(self, key: str, value, x):
        """A length-d vector parameter; a scalar is broadcast to all dimensions."""
        t = self._param(key, value, x)
        if t.ndim == 0:
            return t.expand(x.shape[1])
        if t.shape != (x.shape[1],):
            raise ValueError(
                f"{type(self).__name__}.{key}: has shape {tuple(t.shape)} but the particles "
                f"have dimension d={x.shape[1]}; give a scalar or a length-{x.shape[1]} list"
            )
        return t


class FeatureNorm(PotentialEnergy):
    """``V(x) = ||x - c||_p`` (``c`` = ``center``, default the origin), optionally squared.

    Convex; its flow contracts every particle to ``c``.
    """

    name = "norm"

    def __init__(self, center=None, p: float = 2.0, squared: bool = False) -> None:
        super().__init__()
        self.center = to_plain(center)
        self.p = float(p)
        if self.p < 1:
            raise ValueError(f"FeatureNorm: p must be >= 1 (a norm), got {p}")
        self.squared = bool(squared)

    def potential(self, x, y):
        import torch

        if self.center is not None:
            x = x - self._vector("center", self.center, x)
        v = torch.linalg.vector_norm(x, ord=self.p, dim=1)
        return v.square() if self.squared else v


class AffineNorm(PotentialEnergy):
    """``V(x) = ||A x - b||`` with ``A`` of shape ``(m, d)`` and ``b`` of shape ``(m,)``.

    ``A=None`` means the identity (then ``V(x) = ||x - b||``); ``b=None`` means 0.
    """

    name = "affine"

    def __init__(self, A=None, b=None, squared: bool = False) -> None:
        super().__init__()
        self.A = to_plain(A)
        self.b = to_plain(b)
        self.squared = bool(squared)

    def potential(self, x, y):
        import torch

        if self.A is None:
            r = x
        else:
            A = self._param("A", self.A, x, ndim=2)
            if A.shape[1] != x.shape[1]:
                raise ValueError(
                    f"AffineNorm: A has shape {tuple(A.shape)} but the particles have d={x.shape[1]}; "
                    f"A must be (m, {x.shape[1]})"
                )
            r = x @ A.T
        if self.b is not None:
            b = self._param("b", self.b, x)
            if b.ndim == 0:
                b = b.expand(r.shape[1])
            if b.shape != (r.shape[1],):
                raise ValueError(f"AffineNorm: b has shape {tuple(b.shape)}, expected ({r.shape[1]},)")
            r = r - b
        v = torch.linalg.vector_norm(r, dim=1)
        return v.square() if self.squared else v


class ClassAffineNorm(PotentialEnergy):
    """``V(x, y) = ||A_y x - b_y||``: an affine constraint only on some classes.

    ``A`` and ``b`` map a label value to that class's matrix ``(m, d)`` / vector ``(m,)``.
    A class listed in only one of them uses the identity / zero for the other; particles of
    classes listed in neither have ``V = 0``.  Classes are looked up by label *value*, so
    under variable-label dynamics a relabelled particle follows its new class's constraint.
    """

    name = "class_affine"

    def __init__(self, A: Mapping | None = None, b: Mapping | None = None, squared: bool = False) -> None:
        super().__init__()
        A = to_plain(A) or {}
        b = to_plain(b) or {}
        if not isinstance(A, Mapping) or not isinstance(b, Mapping):
            raise TypeError(
                "ClassAffineNorm: A and b must be mappings {label: matrix} / {label: vector}, "
                f"got {type(A).__name__} and {type(b).__name__}"
            )
        if not A and not b:
            raise ValueError("ClassAffineNorm: give at least one class in A or b")
        self.A = {int(k): v for k, v in A.items()}
        self.b = {int(k): v for k, v in b.items()}
        self.squared = bool(squared)

    def potential(self, x, y):
        import torch

        out = x.new_zeros(x.shape[0])
        # One masked affine map per listed class: a loop over classes, never over samples.
        for label in sorted(set(self.A) | set(self.b)):
            mask = y == label
            xs = x[mask]
            r = xs
            if label in self.A:
                A = self._param(f"A[{label}]", self.A[label], x, ndim=2)
                if A.shape[1] != x.shape[1]:
                    raise ValueError(
                        f"ClassAffineNorm: A[{label}] has shape {tuple(A.shape)}, expected (m, {x.shape[1]})"
                    )
                r = xs @ A.T
            if label in self.b:
                bv = self._param(f"b[{label}]", self.b[label], x)
                if bv.ndim == 0:
                    bv = bv.expand(r.shape[1])
                if bv.shape != (r.shape[1],):
                    raise ValueError(
                        f"ClassAffineNorm: b[{label}] has shape {tuple(bv.shape)}, expected ({r.shape[1]},)"
                    )
                r = r - bv
            v = torch.linalg.vector_norm(r, dim=1)
            out = out.index_put((mask.nonzero(as_tuple=True)[0],), v.square() if self.squared else v)
        return out


class Hinge(PotentialEnergy):
    """Margin-inducing potential for binary data: ``V(x, y) = max{0, margin + s_y (x^T w - b)}``.

    This is the paper's ``max{0, y (x^T w - b)}`` (with ``margin=0``); it is convex and zero
    on the side of the hyperplane ``x^T w = b`` assigned to the class, so the flow pushes
    particles with ``s = +1`` to ``x^T w <= b - margin`` and particles with ``s = -1`` to
    ``x^T w >= b + margin``.  With ``margin > 0`` the two classes end up separated by a gap of
    width ``2 * margin / ||w||``.

    Labels are mapped to signs ``s``: particles whose label equals ``positive_label`` get
    ``+1`` and all others ``-1``.  ``positive_label=None`` requires at most two label values
    and takes the larger one as positive (so labels ``{-1, +1}`` and ``{0, 1}`` map as
    expected).
    """

    name = "hinge"

    def __init__(self, w, b: float = 0.0, margin: float = 0.0, positive_label: int | None = None) -> None:
        super().__init__()
        self.w = to_plain(w)
        self.b = float(b)
        self.margin = float(margin)
        if self.margin < 0:
            raise ValueError(f"Hinge: margin must be >= 0, got {margin}")
        self.positive_label = None if positive_label is None else int(positive_label)

    def signs(self, y):
        """``+1`` for the positive class, ``-1`` otherwise, as ``(n,)`` integers."""
        import torch

        positive = self.positive_label
        if positive is None:
            values = torch.unique(y)
            if values.numel() > 2:
                raise ValueError(
                    f"Hinge: needs binary labels but the particles have {values.numel()} classes "
                    f"({values.tolist()[:10]}); set positive_label to the class mapped to +1 "
                    "(all others get -1)"
                )
            positive = int(values.max())
        return torch.where(y == positive, 1, -1)

    def potential(self, x, y):
        import torch

        w = self._vector("w", self.w, x)
        s = self.signs(y).to(x.dtype)
        return torch.relu(self.margin + s * (x @ w - self.b))


class BallConstraint(PotentialEnergy):
    """``V(x) = (||x - x0|| - tau)_+``: zero inside the ball of radius ``tau`` around ``x0``.

    Figure 8(a) of the paper; particles outside move radially onto the sphere.
    """

    name = "ball"

    def __init__(self, radius: float = 1.0, center=0.0) -> None:
        super().__init__()
        self.radius = float(radius)
        if self.radius < 0:
            raise ValueError(f"BallConstraint: radius must be >= 0, got {radius}")
        self.center = to_plain(center)

    def potential(self, x, y):
        import torch

        r = torch.linalg.vector_norm(x - self._vector("center", self.center, x), dim=1)
        return torch.relu(r - self.radius)


class Collapse(PotentialEnergy):
    """``V(x) = sum_{d in dims} (x_d - c_d)^2``: flattens the data along chosen dimensions.

    ``dims=None`` uses every dimension; ``center`` is a scalar or one value per listed dim.
    """

    name = "collapse"

    def __init__(self, dims: Iterable[int] | None = None, center=0.0) -> None:
        super().__init__()
        dims = to_plain(dims)
        self.dims = None if dims is None else [int(d) for d in dims]
        if self.dims is not None and not self.dims:
            raise ValueError("Collapse: dims is empty; give at least one dimension or null for all")
        self.center = to_plain(center)

    def potential(self, x, y):
        if self.dims is not None:
            bad = [d for d in self.dims if not -x.shape[1] <= d < x.shape[1]]
            if bad:
                raise ValueError(f"Collapse: dims {bad} out of range for d={x.shape[1]}")
            x = x[:, self.dims]
        c = self._param("center", self.center, x)
        if c.ndim == 1 and c.shape[0] != x.shape[1]:
            raise ValueError(
                f"Collapse: center has {c.shape[0]} values for {x.shape[1]} collapsed dimensions"
            )
        return (x - c).square().sum(dim=1)


__all__: Sequence[str] = [
    "PotentialEnergy",
    "FeatureNorm",
    "AffineNorm",
    "ClassAffineNorm",
    "Hinge",
    "BallConstraint",
    "Collapse",
]
