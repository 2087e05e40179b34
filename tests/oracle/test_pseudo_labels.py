import itertools

import numpy as np
import pytest
import torch

from dsflow.data.container import LabeledData
from dsflow.oracle import (
    align_clusters,
    gaussian_w2_costs,
    idealized_cluster_accuracy,
    kmeans_pseudo_labels,
    pseudo_label,
)


def blobs(centres, n_per, seed, scale=0.3, labels=None):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.as_tensor(centres, dtype=torch.float32)
    k, d = centres.shape
    y = torch.arange(k).repeat_interleave(n_per)
    x = centres[y] + scale * torch.randn(k * n_per, d, generator=gen)
    lab = y if labels is None else torch.as_tensor(labels)[y]
    return LabeledData(x=x, y=lab)


CENTRES = 4.0 * torch.eye(5)[:4] + torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])


def test_kmeans_is_seeded_and_finds_separated_clusters():
    data = blobs(CENTRES, 30, seed=0)
    a = kmeans_pseudo_labels(data, 4, seed=1, n_init=3)
    b = kmeans_pseudo_labels(data.x, 4, seed=1, n_init=3)
    assert torch.equal(a.labels, b.labels) and a.centers.shape == (4, 5)
    acc, _ = idealized_cluster_accuracy(a.labels, data.y)
    assert acc == 1.0  # exact: a ratio of counts (120/120)
    with pytest.raises(ValueError, match="k must be between 1 and n=120"):
        kmeans_pseudo_labels(data.x, 0)


@pytest.mark.parametrize("method,cost", [("hungarian", "means"), ("ot", "means"), ("hungarian", "gaussian"),
                                         ("ot", "otdd")])
def test_alignment_recovers_a_known_permutation(method, cost):
    target_labels = [10, 20, 30, 40]
    target = blobs(CENTRES, 25, seed=1, labels=target_labels)
    # unlabeled source: the same classes, slightly shifted, true labels only used to check
    source = blobs(CENTRES + 0.2, 30, seed=2, labels=target_labels)
    perm = torch.tensor([2, 0, 3, 1])  # cluster id of true class i is perm[i]
    true_index = torch.searchsorted(torch.tensor(target_labels), source.y)
    clusters = perm[true_index]
    al = align_clusters(source.x, clusters, target, method=method, cost=cost)
    assert al.mapping == {int(perm[i]): target_labels[i] for i in range(4)}
    assert torch.equal(al.labels, source.y)


def test_kmeans_then_alignment_labels_every_sample_correctly():
    target_labels = [10, 20, 30, 40]
    target = blobs(CENTRES, 25, seed=1, labels=target_labels)
    source = blobs(CENTRES + 0.2, 30, seed=2, labels=target_labels)
    clusters = kmeans_pseudo_labels(source.x, 4, seed=0, n_init=3).labels
    al = align_clusters(source.x, clusters, target)
    assert torch.equal(al.labels, source.y)


def test_more_clusters_than_classes_take_nearest_class():
    target = blobs(CENTRES[:2], 20, seed=1, labels=[0, 1])
    source = blobs(CENTRES[:2], 20, seed=2, labels=[0, 1])
    half = (torch.arange(40) % 2)  # split class 0 and class 1 each into two arbitrary "clusters"
    clusters = source.y * 2 + half
    al = align_clusters(source.x, clusters, target)
    assert al.mapping == {0: 0, 1: 0, 2: 1, 3: 1}


def test_gaussian_costs_match_closed_form():
    from scipy.linalg import sqrtm

    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(40, 3, generator=gen, dtype=torch.float64) @ torch.tensor([[1.0, 0.3, 0], [0, 0.5, 0], [0, 0, 2]]).double()
    xt = torch.randn(50, 3, generator=gen, dtype=torch.float64) * 0.7 + 1.0
    ys, yt = torch.arange(40) % 2, torch.zeros(50, dtype=torch.long)
    C = gaussian_w2_costs(xs, ys, xt, yt)
    for i in range(2):
        a, b = xs[ys == i].numpy(), xt.numpy()
        S1, S2 = np.cov(a.T, bias=True), np.cov(b.T, bias=True)
        r = sqrtm(S1)
        w2 = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(S1 + S2 - 2 * np.real(sqrtm(r @ S2 @ r)))
        assert float(C[i, 0]) == pytest.approx(w2, rel=1e-8, abs=1e-10)


def test_idealized_accuracy_matches_brute_force():
    gen = np.random.default_rng(0)
    true = gen.integers(0, 4, 200)
    clusters = np.array([2, 0, 3, 1])[true]
    noisy = np.where(gen.random(200) < 0.2, gen.integers(0, 4, 200), clusters)
    acc, mapping = idealized_cluster_accuracy(torch.tensor(noisy), torch.tensor(true))
    brute = max(np.mean(np.array(p)[noisy] == true) for p in itertools.permutations(range(4)))
    assert acc == pytest.approx(brute, abs=1e-12)
    assert mapping == {2: 0, 0: 1, 3: 2, 1: 3}


def test_pseudo_label_keeps_true_labels_aside():
    target = blobs(CENTRES, 20, seed=1, labels=[5, 6, 7, 8])
    source = blobs(CENTRES, 20, seed=3, labels=[5, 6, 7, 8])
    out = pseudo_label(source, 4, seed=0, n_init=2, target=target)
    assert torch.equal(out.meta["true_y"], source.y)
    assert torch.equal(out.y, source.y)
    unaligned = pseudo_label(source.x, 4, seed=0, n_init=2)
    assert set(unaligned.y.tolist()) == {0, 1, 2, 3}


def test_alignment_rejects_bad_costs():
    target = blobs(CENTRES, 5, seed=1)
    with pytest.raises(ValueError, match="unknown cost"):
        align_clusters(target.x, target.y, target, cost="cosine")
    with pytest.raises(ValueError, match="cost matrix must be 4 x 4"):
        align_clusters(target.x, target.y, target, cost=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="unknown alignment method"):
        align_clusters(target.x, target.y, target, method="greedy")
