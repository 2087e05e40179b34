"""Label dynamics: fd keeps labels, jd_fl moves PSD Gaussians, jd_vl changes the class count."""

import numpy as np
import pytest
import torch
from flow_helpers import FeatureSinkhorn, LabelGaussianSinkhorn, adam, blobs

from dsflow.flow.clustering import cluster, gaussian_embedding, match_labels
from dsflow.flow.dynamics import (
    FeatureDriven,
    JointDrivenFixedLabel,
    JointDrivenVariableLabel,
    class_gaussian_factors,
    make_dynamics,
)
from dsflow.flow.engine import run_flow


def test_class_gaussian_factors_match_numpy_covariances():
    data = blobs([[0, 0, 0], [3, 1, 0]], n_per_class=25, labels=[7, 2], dtype=torch.float64)
    classes, index, means, factors = class_gaussian_factors(data.x, data.y, ridge=1e-3)
    assert classes.tolist() == [2, 7]
    x, y = data.x.numpy(), data.y.numpy()
    for j, c in enumerate([2, 7]):
        xs = x[y == c]
        assert np.allclose(means[j].numpy(), xs.mean(0), atol=1e-12)
        cov = np.cov(xs.T) + 1e-3 * np.eye(3)
        F = factors[j].numpy()
        assert np.allclose(F @ F.T, cov, atol=1e-10)
    assert (classes[index] == data.y).all()
    # rank-1 factor: the best rank-1 approximation (top eigenpair)
    _, _, _, f1 = class_gaussian_factors(data.x, data.y, rank=1, ridge=0.0)
    w, v = np.linalg.eigh(np.cov(x[y == 2].T))
    assert np.allclose(f1[0].numpy() @ f1[0].numpy().T, w[-1] * np.outer(v[:, -1], v[:, -1]), atol=1e-10)
    with pytest.raises(ValueError, match="rank"):
        class_gaussian_factors(data.x, data.y, rank=4)


def test_fd_moves_only_features_and_keeps_labels():
    src = blobs([[0, 0], [0, 3]], n_per_class=20, seed=1)
    tgt = blobs([[4, 0], [4, 3]], n_per_class=20, seed=2)
    dyn = FeatureDriven()
    st = dyn.init_state(src)
    assert st.label_means is None and [g["params"] for g in dyn.param_groups(st)] == [[st.x]]
    x0 = st.x.detach().clone()
    res = run_flow(st, FeatureSinkhorn().bind(target=tgt), dyn, adam(0.05), steps=15, progress=False)
    assert torch.equal(st.y, src.y)
    assert (st.x.detach() - x0).abs().max() > 0.3
    assert all(h["n_classes"] == 2 for h in res.history)
    assert res.history[-1]["objective"] < res.history[0]["objective"]


def test_jd_fl_moves_gaussians_and_keeps_them_psd():
    src = blobs([[0, 0], [0, 3]], n_per_class=20, std=0.3, seed=1)
    tgt = blobs([[4, 0], [4, 3]], n_per_class=20, std=1.0, seed=2)
    dyn = JointDrivenFixedLabel(rank=2)
    st = dyn.init_state(src)
    assert st.label_means.shape == (2, 2) and st.label_factors.shape == (2, 2, 2)
    assert st.label_index.tolist() == [0] * 20 + [1] * 20
    m0, f0 = st.label_means.detach().clone(), st.label_factors.detach().clone()
    obj = LabelGaussianSinkhorn().bind(target=tgt)
    res = run_flow(st, obj, dyn, adam(0.05), steps=30, progress=False)
    assert torch.equal(st.y, src.y)
    assert (st.label_means.detach() - m0).abs().max() > 0.5  # means moved toward x = 4
    assert (st.label_factors.detach() - f0).abs().max() > 0.05
    cov = st.label_factors.detach() @ st.label_factors.detach().mT
    assert torch.linalg.eigvalsh(cov).min() >= -1e-6
    assert res.history[-1]["objective"] < 0.5 * res.history[0]["objective"]


def test_jd_vl_kmeans_splits_two_classes_into_three():
    src = blobs([[0, 0], [0, 4]], n_per_class=30, seed=1)
    tgt = blobs([[5, -4], [5, 0], [5, 4]], n_per_class=20, seed=2)
    dyn = JointDrivenVariableLabel(clustering="kmeans", n_clusters=3, cov_features="none")
    st = dyn.init_state(src)
    assert st.label_means.shape == (60, 2) and st.label_index.tolist() == list(range(60))
    obj = LabelGaussianSinkhorn().bind(target=tgt)
    res = run_flow(st, obj, dyn, adam(0.15), steps=25, progress=False)
    assert src.num_classes == 2 and res.history[-1]["n_classes"] == 3 == st.num_classes
    assert any(h["labels_changed"] for h in res.history)
    assert obj.resets >= 1  # the engine dropped caches after a relabel
    # the three label groups sit at the three target class means (y = -4, 0, 4)
    mu = st.label_means.detach()
    centres = sorted(float(mu[st.y == c, 1].mean()) for c in torch.unique(st.y))
    assert np.allclose(centres, [-4, 0, 4], atol=1.0)  # 4 apart; 25 Adam steps get within 1


def test_jd_vl_dbscan_merges_two_classes_into_one():
    src = blobs([[0, 0], [0, 6]], n_per_class=30, seed=1)
    tgt = blobs([[3, 3]], n_per_class=40, seed=2)
    dyn = JointDrivenVariableLabel(clustering="dbscan", eps=1.0, min_samples=4)
    st = dyn.init_state(src)
    obj = LabelGaussianSinkhorn().bind(target=tgt)
    res = run_flow(st, obj, dyn, adam(0.2), steps=40, progress=False)
    counts = [h["n_classes"] for h in res.history]
    assert counts[0] == 2 and counts[-1] == 1


def test_clustering_helpers():
    feats = np.array([[0.0, 0], [0.1, 0], [0, 0.1], [0.1, 0.1], [5, 5], [5.1, 5], [5, 5.1], [5.1, 5.1], [20, 20]])
    ids = cluster(feats, "dbscan", eps=0.5, min_samples=3, noise="nearest")
    assert len(set(ids[:4])) == 1 and len(set(ids[4:8])) == 1 and ids[8] == ids[4]
    ids_own = cluster(feats, "dbscan", eps=0.5, min_samples=3, noise="own")
    assert len(set(ids_own.tolist())) == 3
    # labels survive a reclustering when the clusters are the same sets
    old = np.array([7, 7, 7, 7, 3, 3, 3, 3, 3])
    assert match_labels(np.array([1, 1, 1, 1, 0, 0, 0, 0, 0]), old).tolist() == old.tolist()
    # a new cluster gets a fresh label above the old ones
    assert match_labels(np.array([0, 0, 0, 0, 1, 1, 1, 1, 2]), old).tolist() == [7] * 4 + [3] * 4 + [8]
    # Gaussian embedding: distance = sqrt(|dmu|^2 + |dSigma|_F^2)
    mu = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    F = torch.stack([torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 1.0]])])
    e = gaussian_embedding(mu, F, "full")
    S0, S1 = (F[0] @ F[0].T).numpy(), (F[1] @ F[1].T).numpy()
    assert np.linalg.norm(e[0] - e[1]) == pytest.approx(np.sqrt(1 + np.sum((S0 - S1) ** 2)))


def test_bad_dynamics_options():
    with pytest.raises(ValueError, match="clustering"):
        JointDrivenVariableLabel(clustering="spectral")
    with pytest.raises(ValueError, match="recluster_every"):
        JointDrivenVariableLabel(recluster_every=0)
    with pytest.raises(ValueError, match="unknown dynamics"):
        make_dynamics("jd")
    big = blobs([[0.0] * 40], n_per_class=2)
    with pytest.raises(ValueError, match="set dynamics.rank"):
        JointDrivenVariableLabel().init_state(big.with_(x=torch.zeros(200000, 40), y=torch.zeros(200000)))
