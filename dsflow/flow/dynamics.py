"""Label dynamics (config group ``dynamics``; paper section 6.1, algorithms 1-3).

Each dynamics owns the label state of its particles (``state.labels``, `dsflow.state`):
it builds it in ``init_state``, says which of its tensors move in ``param_groups`` and
updates it in ``after_step``; functionals only read it through its declared kind.

* `FeatureDriven` (``fd``): only features move; labels are fixed and class statistics
  are recomputed from the particles by the functional (``state.labels is None``).
* `JointDrivenFixedLabel` (``jd_fl``): features and one Gaussian per class
  ``N(mu_j, F_j F_j^T)`` (`GaussianLabels`) move by their own gradients; labels are fixed
  and ``labels.index[i]`` is the class row of particle ``i``.
* `JointDrivenVariableLabel` (``jd_vl``): one Gaussian per particle (initialised from its
  class's statistics) moves; every ``recluster_every`` steps the discrete labels (the
  cluster labels ``state.y``) are recomputed by clustering the Gaussians, so the number of
  classes can change.

Covariances are parametrised by a factor ``F`` (``Sigma = F F^T``), initialised from an
eigendecomposition of the (ridged) class covariance keeping the ``rank`` largest
eigenpairs, so a gradient step never leaves the PSD cone.
"""

from __future__ import annotations

from dsflow.data.container import LabeledData
from dsflow.flow.dynamics_base import Dynamics
from dsflow.state import GaussianLabels, ParticleState

#: Refuse per-particle factor tensors larger than this many elements (1 GiB in float32).
MAX_FACTOR_ELEMENTS = 1 << 28


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _features_and_labels(data: LabeledData, device, dtype):
    import torch

    if not isinstance(data, LabeledData):
        raise TypeError(f"init_state expects a LabeledData, got {type(data).__name__}")
    x = data.x.to(device=device, dtype=dtype if dtype is not None else data.x.dtype)
    if not torch.is_floating_point(x):
        raise TypeError(f"features must be floating point, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{data.name}: features contain NaN or Inf; clean the data before flowing it")
    return x, data.y.to(device=device)


def class_gaussian_factors(x, y, *, rank: int | None = None, ridge: float = 1e-6):
    """Per-class Gaussian parameters of ``(x, y)``.

    Returns ``(classes (k,), index (n,), means (k, d), factors (k, d, r))`` with
    ``factors[j] @ factors[j].T`` the best rank-``r`` approximation of
    ``cov_j + ridge * I`` (unbiased sample covariance; a class with one sample has
    covariance 0, hence factor ``sqrt(ridge) I``).
    """
    import torch

    n, d = x.shape
    r = d if rank is None else int(rank)
    if not 1 <= r <= d:
        raise ValueError(f"rank must be between 1 and d={d}, got {rank}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    from dsflow.ot.class_stats import class_counts, class_covariances, class_index, class_means

    classes, index = class_index(y)
    classes, k = classes.to(y.device), classes.numel()
    xd = x.detach()
    means = class_means(xd, index, class_counts(index, k))
    factors = torch.empty(k, d, r, dtype=xd.dtype, device=xd.device)
    eye = torch.eye(d, dtype=torch.float64, device=xd.device)
    # One eigendecomposition per class (k is small; a loop over classes, not samples).
    for j, cov in class_covariances(xd, index, means, ddof=1):
        evals, evecs = torch.linalg.eigh(cov + ridge * eye)
        top = slice(d - r, d)
        factors[j] = (evecs[:, top] * evals[top].clamp_min(0).sqrt()).to(xd.dtype)
    return classes, index, means, factors


class FeatureDriven(Dynamics):
    """``fd``: only features move; labels fixed (algorithm 1)."""

    name = "fd"
    variable_labels = False
    label_state = None

    def init_state(self, data: LabeledData, *, device=None, dtype=None) -> ParticleState:
        x, y = _features_and_labels(data, device, dtype)
        return ParticleState(x=_leaf(x), y=y.clone(), template=data)

    def param_groups(self, state: ParticleState) -> list[dict]:
        return [{"params": [state.x], "name": "features"}]


class JointDrivenFixedLabel(Dynamics):
    """``jd_fl``: features and per-class Gaussians move; labels fixed (algorithm 2).

    Parameters
    ----------
    rank:
        Rank of the covariance factors (``None``: full, ``d``).
    ridge:
        Added to the diagonal of each class covariance before factorisation.
    label_lr_scale:
        Step size of the label Gaussians relative to the features' (``lr * scale``).
    """

    name = "jd_fl"
    variable_labels = False
    label_state = GaussianLabels

    def __init__(self, rank: int | None = None, ridge: float = 1e-6, label_lr_scale: float = 1.0) -> None:
        self.rank = None if rank is None else int(rank)
        self.ridge = float(ridge)
        self.label_lr_scale = float(label_lr_scale)
        if not self.label_lr_scale >= 0:
            raise ValueError(f"label_lr_scale must be >= 0, got {label_lr_scale}")

    def init_state(self, data: LabeledData, *, device=None, dtype=None) -> ParticleState:
        x, y = _features_and_labels(data, device, dtype)
        _, index, means, factors = class_gaussian_factors(x, y, rank=self.rank, ridge=self.ridge)
        return ParticleState(
            x=_leaf(x), y=y.clone(), labels=GaussianLabels(means=_leaf(means), factors=_leaf(factors), index=index),
            template=data,
        )

    def param_groups(self, state: ParticleState) -> list[dict]:
        return [
            {"params": [state.x], "name": "features"},
            {"params": [state.labels.means, state.labels.factors], "name": "labels",
             "lr_scale": self.label_lr_scale},
        ]


class JointDrivenVariableLabel(JointDrivenFixedLabel):
    """``jd_vl``: per-particle Gaussians move; labels re-found by clustering (algorithm 3).

    Parameters
    ----------
    clustering:
        ``"kmeans"`` (``n_clusters`` fixed; ``None`` = the initial number of classes) or
        ``"dbscan"`` (``eps``, ``min_samples``; paper defaults 5 and 4), see
        `dsflow.flow.clustering`.
    noise:
        DBSCAN noise points: ``"nearest"`` (join the cluster of the nearest clustered
        particle) or ``"own"`` (together they form one extra class).
    recluster_every:
        Recluster after every this many steps (1 = every step, as in algorithm 3).
    cov_features:
        Covariance part of the clustering embedding: ``"auto"``, ``"full"``, ``"diag"``,
        ``"none"``.
    seed:
        k-means random state (the first clustering; later ones are warm-started).
    """

    name = "jd_vl"
    variable_labels = True

    def __init__(
        self,
        clustering: str = "dbscan",
        n_clusters: int | None = None,
        eps: float = 5.0,
        min_samples: int = 4,
        noise: str = "nearest",
        recluster_every: int = 1,
        cov_features: str = "auto",
        rank: int | None = None,
        ridge: float = 1e-6,
        label_lr_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(rank=rank, ridge=ridge, label_lr_scale=label_lr_scale)
        if clustering not in ("kmeans", "dbscan"):
            raise ValueError(f"jd_vl: clustering must be 'kmeans' or 'dbscan', got {clustering!r}")
        if noise not in ("nearest", "own"):
            raise ValueError(f"jd_vl: noise must be 'nearest' or 'own', got {noise!r}")
        if cov_features not in ("auto", "full", "diag", "none"):
            raise ValueError(f"jd_vl: cov_features must be auto/full/diag/none, got {cov_features!r}")
        if int(recluster_every) < 1:
            raise ValueError(f"jd_vl: recluster_every must be >= 1, got {recluster_every}")
        if n_clusters is not None and int(n_clusters) < 1:
            raise ValueError(f"jd_vl: n_clusters must be >= 1 or null, got {n_clusters}")
        self.clustering = clustering
        self.n_clusters = None if n_clusters is None else int(n_clusters)
        self.eps = float(eps)
        self.min_samples = int(min_samples)
        self.noise = noise
        self.recluster_every = int(recluster_every)
        self.cov_features = cov_features
        self.seed = int(seed)

    def init_state(self, data: LabeledData, *, device=None, dtype=None) -> ParticleState:
        import torch

        x, y = _features_and_labels(data, device, dtype)
        r = x.shape[1] if self.rank is None else self.rank
        if x.shape[0] * x.shape[1] * r > MAX_FACTOR_ELEMENTS:
            raise ValueError(
                f"jd_vl keeps a {x.shape[1]}x{r} covariance factor per particle: "
                f"{x.shape[0]}*{x.shape[1]}*{r} values is too many; set dynamics.rank "
                f"(e.g. rank=8) to use low-rank covariances"
            )
        classes, index, means, factors = class_gaussian_factors(x, y, rank=self.rank, ridge=self.ridge)
        meta = {"n_clusters": self.n_clusters or int(classes.numel())}
        return ParticleState(
            x=_leaf(x), y=y.clone(), template=data, meta=meta,
            labels=GaussianLabels(means=_leaf(means[index]), factors=_leaf(factors[index]),
                                  index=torch.arange(x.shape[0], device=x.device)),
        )

    def recluster(self, state: ParticleState) -> bool:
        """Recompute ``state.y`` from the per-particle Gaussians; True if any label changed."""
        import numpy as np
        import torch

        from dsflow.flow import clustering as cl

        feats = cl.gaussian_embedding(state.labels.means, state.labels.factors, self.cov_features)
        centers = state.meta.get("cluster_centers")
        ids = cl.cluster(
            feats, self.clustering, n_clusters=state.meta.get("n_clusters", self.n_clusters),
            eps=self.eps, min_samples=self.min_samples, noise=self.noise,
            init_centers=None if centers is None else np.asarray(centers), seed=self.seed,
        )
        if self.clustering == "kmeans":
            state.meta["cluster_centers"] = cl.cluster_centers(feats, ids)
        old = state.y.detach().cpu().numpy()
        new = cl.match_labels(ids, old)
        if np.array_equal(new, old):
            return False
        state.y = torch.as_tensor(new, dtype=state.y.dtype, device=state.y.device)
        return True

    def after_step(self, state: ParticleState, step: int) -> bool:
        if (step + 1) % self.recluster_every:
            return False
        return self.recluster(state)


#: Short names used in configs and docs.
DYNAMICS = {"fd": FeatureDriven, "jd_fl": JointDrivenFixedLabel, "jd_vl": JointDrivenVariableLabel}


def make_dynamics(name: str, **options) -> Dynamics:
    """Dynamics by short name (``fd``, ``jd_fl``, ``jd_vl``)."""
    try:
        cls = DYNAMICS[name]
    except KeyError:
        raise ValueError(f"unknown dynamics {name!r}; choose one of {sorted(DYNAMICS)}") from None
    return cls(**options)


__all__ = [
    "FeatureDriven",
    "JointDrivenFixedLabel",
    "JointDrivenVariableLabel",
    "class_gaussian_factors",
    "make_dynamics",
    "DYNAMICS",
]
