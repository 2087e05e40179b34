import itertools

import numpy as np

import pytest
import torch

from dsflow.data.container import LabeledData
from dsflow.oracle import ComposedClassifier, accuracy, class_correspondence, correspondence_from_data
from dsflow.oracle.pseudo_labels import label_costs


def test_coupling_is_optimal_against_brute_force():
    gen = torch.Generator().manual_seed(0)
    W = torch.rand(5, 5, generator=gen, dtype=torch.float64)
    corr = class_correspondence(W)
    # uniform marginals: an optimal plan is a permutation / k (Birkhoff); enumerate them all
    best = min(sum(float(W[i, p[i]]) for i in range(5)) for p in itertools.permutations(range(5))) / 5
    assert float((corr.coupling.double() * W).sum()) == pytest.approx(best, abs=1e-6)
    assert torch.allclose(corr.transfer.sum(1), torch.ones(5))


def test_rectangular_marginals_and_row_stochastic_transfer():
    W = torch.tensor([[0.0, 4.0], [1.0, 3.0], [5.0, 0.5]])
    a, b = torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0.6, 0.4])
    corr = class_correspondence(W, source_classes=[1, 4, 6], target_classes=[0, 9], source_weights=a, target_weights=b)
    assert corr.coupling.shape == (3, 2) and corr.transfer.shape == (2, 3)
    assert torch.allclose(corr.coupling.sum(1), a, atol=1e-6) and torch.allclose(corr.coupling.sum(0), b, atol=1e-6)
    assert torch.allclose(corr.transfer.sum(1), torch.ones(2))
    # transfer[j, i] = coupling[i, j] / b[j]: target 9 is mostly source 6
    assert torch.allclose(corr.transfer, (corr.coupling / b).T, atol=1e-6)
    assert corr.class_map() == {0: 4, 9: 6} or corr.class_map()[9] == 6
    p = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    assert torch.allclose(corr(p).sum(1), torch.ones(2))


def test_zero_mass_target_class_maps_to_nearest_source():
    W = torch.tensor([[0.0, 9.0, 2.0], [9.0, 0.0, 1.0]])
    corr = class_correspondence(W, target_weights=[0.5, 0.5, 0.0])
    assert corr.transfer[2].tolist() == [0.0, 1.0]


def test_bad_inputs():
    with pytest.raises(ValueError, match="k x k' matrix"):
        class_correspondence(torch.zeros(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        class_correspondence(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="non-negative"):
        class_correspondence(torch.zeros(2, 2), source_weights=[1.0, -1.0])


def _permuted(data, perm):
    return data.with_(y=perm[data.y], name="permuted")


@pytest.mark.parametrize("source_of", ["means", "otdd"])
def test_permuted_label_set_is_mapped_back(digits_oracle, digits_split, source_of):
    train, test = digits_split
    perm = torch.tensor([3, 0, 7, 1, 9, 2, 8, 4, 6, 5]) + 20  # source label of target class j: perm[j]
    source = _permuted(test, perm)
    if source_of == "means":  # an independent label-to-label cost (squared distance of class means)
        corr = correspondence_from_data(source, train, label_distances=label_costs(source.x, source.y, train, "means"))
    else:  # the OTDD's own label distances (Gaussian inner model)
        corr = correspondence_from_data(source, train, inner="gaussian")
    assert corr.class_map() == {j: int(perm[j]) for j in range(10)}
    composed = ComposedClassifier(digits_oracle, corr)
    assert composed.classes.tolist() == sorted(perm.tolist())
    assert accuracy(composed, source) == accuracy(digits_oracle, test)
    assert accuracy(digits_oracle, test) > 0.9
    assert torch.equal(composed.predict(source.x), perm[digits_oracle.predict(test.x)])
    logp = composed(source.x[:5])
    assert torch.allclose(logp.exp().sum(1), torch.ones(5), atol=1e-5)


def test_fewer_source_classes_than_oracle_classes(digits_oracle, digits_split):
    train, test = digits_split
    keep = (test.y == 1) | (test.y == 7) | (test.y == 0)
    sub = test.subset(torch.nonzero(keep).flatten())
    source = sub.with_(y=(sub.y == 1) * 101 + (sub.y == 7) * 107 + (sub.y == 0) * 100)  # 3 classes vs 10
    corr = correspondence_from_data(source, train, label_distances=label_costs(source.x, source.y, train, "means"))
    assert corr.transfer.shape == (10, 3)
    composed = ComposedClassifier(digits_oracle, corr)
    assert accuracy(composed, source) >= 0.9


def test_composition_checks_class_sets(digits_oracle):
    corr = class_correspondence(torch.rand(3, 4), target_classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="must equal the oracle's classes"):
        ComposedClassifier(digits_oracle, corr)


def test_shape_mismatch_of_given_distances(digits_split):
    train, test = digits_split
    with pytest.raises(ValueError, match="shape"):
        correspondence_from_data(test, train, label_distances=torch.zeros(3, 10))


def test_label_distances_are_those_of_otdd():
    from dsflow import otdd
    from dsflow.oracle import otdd_label_distances

    gen = torch.Generator().manual_seed(0)
    src = LabeledData(x=torch.randn(30, 3, generator=gen), y=torch.arange(30) % 3)
    tgt = LabeledData(x=torch.randn(24, 3, generator=gen) + 1, y=(torch.arange(24) % 2) * 5)
    full = otdd(src, tgt, inner="gaussian", return_label_distances=True).label_distances
    assert torch.allclose(otdd_label_distances(src, tgt), torch.as_tensor(full).double().cpu(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- matchings (oracle.matching)
def _permuted_blobs(perm, n=12, d=3, seed=0, shift=0.05):
    """Target: 4 well separated classes; source: the same points, moved a little, class c of the
    source sitting on target class perm[c]."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(4, d, dtype=torch.float64) * 10
    yt = torch.arange(4).repeat_interleave(n)
    xt = centres[yt] + torch.randn(len(yt), d, generator=g, dtype=torch.float64)
    inv = {t: c for c, t in enumerate(perm)}
    ys = torch.tensor([inv[int(t)] for t in yt])
    xs = xt + shift * torch.randn(xt.shape, generator=g, dtype=torch.float64)
    return LabeledData(x=xs, y=ys), LabeledData(x=xt, y=yt)


@pytest.mark.parametrize("matching", ["otdd", "w2", "nn_vote"])
def test_every_matching_recovers_a_permutation_of_the_classes(matching):
    from dsflow.oracle.correspondence import correspondence_by

    perm = [2, 0, 3, 1]  # source class c sits on target class perm[c]
    source, target = _permuted_blobs(perm)
    corr = correspondence_by(matching, source, target)
    assert corr.class_map() == {perm[c]: c for c in range(4)}  # target class -> source class


def test_w2_matching_is_exact_ot_on_the_exact_class_w2_with_uniform_weights():
    import ot

    from dsflow.oracle.correspondence import correspondence_by

    g = torch.Generator().manual_seed(3)
    source = LabeledData(x=torch.randn(17, 2, generator=g, dtype=torch.float64), y=torch.arange(17) % 3)
    target = LabeledData(x=torch.randn(13, 2, generator=g, dtype=torch.float64) + 0.5, y=torch.arange(13) % 3)
    corr = correspondence_by("w2", source, target)
    W = np.array([[ot.emd2([], [], ot.dist(source.x[source.y == i].numpy(), target.x[target.y == j].numpy()))
                   for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(corr.label_distances.numpy(), W, rtol=1e-5)  # buffers are float32
    plan = ot.emd(np.full(3, 1 / 3), np.full(3, 1 / 3), W)
    np.testing.assert_allclose(corr.coupling.numpy(), plan, atol=1e-7)


def test_nn_votes_count_each_particles_nearest_target_class():
    from dsflow.oracle.correspondence import nearest_target_votes

    target = LabeledData(x=torch.tensor([[0.0], [10.0]]), y=torch.tensor([0, 1]))
    source = LabeledData(x=torch.tensor([[1.0], [2.0], [9.0], [8.0], [7.0]]), y=torch.tensor([0, 0, 0, 1, 1]))
    assert nearest_target_votes(source, target).tolist() == [[2.0, 1.0], [0.0, 2.0]]


def test_an_unknown_matching_is_named():
    from dsflow.oracle.correspondence import correspondence_by

    source, target = _permuted_blobs([0, 1, 2, 3])
    with pytest.raises(ValueError, match="oracle.matching"):
        correspondence_by("hungarian", source, target)
