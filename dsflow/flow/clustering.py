"""Re-finding discrete labels from per-particle label Gaussians (jd_vl dynamics).

The paper (section 6.1, appendix C) clusters the pairs ``(mu_i, Sigma_i)`` with k-means
(given k) or DBSCAN (``eps=5``, ``min_samples=4``).  Here a Gaussian is embedded in
Euclidean space as ``[mu, vech(Sigma)]`` where ``vech`` keeps the upper triangle with the
off-diagonal entries scaled by ``sqrt(2)``, so that Euclidean distances between embeddings
are ``sqrt(||mu - mu'||^2 + ||Sigma - Sigma'||_F^2)``.  ``Sigma = F F^T`` is used rather than
the factor ``F`` because ``F`` is only defined up to a rotation.  For large ``d`` the full
covariance has ``d(d+1)/2`` entries per particle; ``cov_features="diag"`` keeps only the
variances and ``"none"`` only the means (``"auto"``: full up to d=32, then diag).

New cluster ids are matched to the previous labels by maximum overlap (Hungarian
assignment on the contingency table), so a class keeps its label value when it survives
a reclustering, and new classes get fresh values above the largest previous one.
"""

from __future__ import annotations

import numpy as np

#: ``cov_features="auto"`` uses the full covariance up to this dimension.
AUTO_FULL_COV_MAX_DIM = 32


def gaussian_embedding(means, factors, cov_features: str = "auto"):
    """``(n, D)`` float64 numpy embedding of the Gaussians ``N(means[i], F_i F_i^T)``."""
    import torch

    with torch.no_grad():
        d = means.shape[1]
        mode = cov_features
        if mode == "auto":
            mode = "full" if d <= AUTO_FULL_COV_MAX_DIM else "diag"
        parts = [means.detach().double()]
        if mode == "full":
            F = factors.detach().double()
            cov = F @ F.mT  # (n, d, d)
            iu = torch.triu_indices(d, d, device=cov.device)
            scale = torch.where(iu[0] == iu[1], 1.0, 2.0**0.5).to(cov)
            parts.append(cov[:, iu[0], iu[1]] * scale)
        elif mode == "diag":
            parts.append(factors.detach().double().square().sum(dim=2))
        elif mode != "none":
            raise ValueError(f"cov_features must be 'auto', 'full', 'diag' or 'none', got {cov_features!r}")
        return torch.cat(parts, dim=1).cpu().numpy()


def cluster(
    features: np.ndarray,
    method: str,
    *,
    n_clusters: int | None = None,
    eps: float = 5.0,
    min_samples: int = 4,
    noise: str = "nearest",
    init_centers: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Cluster ids ``0..k-1`` (``(n,)`` int64) of the rows of ``features``.

    ``method="kmeans"`` needs ``n_clusters`` (warm-started from ``init_centers`` when they
    have the right shape, which keeps successive reclusterings consistent).
    ``method="dbscan"`` finds the number of clusters; its noise points (id ``-1``) are
    assigned to the cluster of the nearest clustered point (``noise="nearest"``) or grouped
    into one extra class of their own (``noise="own"``).  When DBSCAN finds no cluster at
    all every point is noise: all particles then form a single class.
    """
    n = features.shape[0]
    if method == "kmeans":
        from sklearn.cluster import KMeans

        if n_clusters is None or int(n_clusters) < 1:
            raise ValueError("kmeans clustering needs n_clusters >= 1")
        k = min(int(n_clusters), n)
        if init_centers is not None and init_centers.shape == (k, features.shape[1]):
            km = KMeans(n_clusters=k, init=init_centers, n_init=1, random_state=seed)
        else:
            km = KMeans(n_clusters=k, n_init=4, random_state=seed)
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            # Fewer distinct Gaussians than n_clusters (e.g. right after init, when every
            # particle of a class shares its class's Gaussian) is expected, not an error.
            warnings.simplefilter("ignore", ConvergenceWarning)
            ids = km.fit_predict(features).astype(np.int64)
        return np.unique(ids, return_inverse=True)[1].astype(np.int64)
    if method == "dbscan":
        from sklearn.cluster import DBSCAN

        ids = DBSCAN(eps=float(eps), min_samples=int(min_samples)).fit_predict(features).astype(np.int64)
        is_noise = ids < 0
        if not is_noise.any():
            return ids
        if is_noise.all():
            return np.zeros(n, dtype=np.int64)
        if noise == "nearest":
            from sklearn.neighbors import NearestNeighbors

            nn = NearestNeighbors(n_neighbors=1).fit(features[~is_noise])
            _, j = nn.kneighbors(features[is_noise])
            ids[is_noise] = ids[~is_noise][j[:, 0]]
        elif noise == "own":
            ids[is_noise] = ids.max() + 1
        else:
            raise ValueError(f"dbscan noise handling must be 'nearest' or 'own', got {noise!r}")
        return ids
    raise ValueError(f"clustering method must be 'kmeans' or 'dbscan', got {method!r}")


def match_labels(new_ids: np.ndarray, old_labels: np.ndarray) -> np.ndarray:
    """Label values for cluster ids ``new_ids`` that agree with ``old_labels`` where possible.

    Each new cluster is mapped to at most one old label value, maximising the number of
    particles that keep their label (Hungarian assignment); unmatched clusters get fresh
    values ``max(old) + 1, max(old) + 2, ...``.
    """
    from scipy.optimize import linear_sum_assignment

    new_values, new_inv = np.unique(new_ids, return_inverse=True)
    old_values, old_inv = np.unique(old_labels, return_inverse=True)
    table = np.zeros((new_values.size, old_values.size), dtype=np.int64)
    np.add.at(table, (new_inv, old_inv), 1)
    rows, cols = linear_sum_assignment(-table)
    mapping = np.zeros(new_values.size, dtype=np.int64)
    matched = np.zeros(new_values.size, dtype=bool)
    mapping[rows] = old_values[cols]
    matched[rows] = True
    fresh = int(old_values.max()) + 1
    for offset, r in enumerate(np.flatnonzero(~matched)):
        mapping[r] = fresh + offset
    return mapping[new_inv]


def cluster_centers(features: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Mean embedding per cluster id ``0..k-1`` (k-means warm start for the next call)."""
    k = int(ids.max()) + 1
    sums = np.zeros((k, features.shape[1]))
    np.add.at(sums, ids, features)
    counts = np.bincount(ids, minlength=k)[:, None]
    return sums / np.maximum(counts, 1)


__all__ = ["gaussian_embedding", "cluster", "match_labels", "cluster_centers", "AUTO_FULL_COV_MAX_DIM"]
