"""Seeded, stratified subsampling, class subsets, roots and the loader registry."""

import numpy as np
import pytest
import torch

import dsflow.data as D
from dsflow.data.common import ranks_in_class, resolve_root, select_indices, stratified_split

# 5 classes with uneven sizes: label v appears 10 + 2v times, shuffled.
LABELS = np.random.default_rng(1).permutation(np.repeat(np.arange(5), 10 + 2 * np.arange(5)))


def test_no_option_keeps_everything_in_order():
    np.testing.assert_array_equal(select_indices(LABELS), np.arange(LABELS.size))


def test_n_per_class_is_stratified_exact_and_sorted():
    idx = select_indices(LABELS, n_per_class=7, seed=3)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    values, counts = np.unique(LABELS[idx], return_counts=True)
    np.testing.assert_array_equal(values, np.arange(5))
    np.testing.assert_array_equal(counts, np.full(5, 7))


def test_same_seed_same_subset_other_seed_other_subset():
    a = select_indices(LABELS, n_per_class=5, seed=11)
    b = select_indices(LABELS, n_per_class=5, seed=11)
    c = select_indices(LABELS, n_per_class=5, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    m1 = select_indices(LABELS, max_samples=20, seed=0)
    np.testing.assert_array_equal(m1, select_indices(LABELS, max_samples=20, seed=0))
    assert not np.array_equal(m1, select_indices(LABELS, max_samples=20, seed=1))


def test_stratified_draw_covers_every_member_of_a_class():
    # Over many seeds every sample of a class must be drawable (no bias to a fixed block).
    seen = np.zeros(LABELS.size, dtype=bool)
    for seed in range(60):
        seen[select_indices(LABELS, n_per_class=3, seed=seed)] = True
    assert seen.all()


def test_max_samples_unique_and_within_classes():
    idx = select_indices(LABELS, max_samples=25, classes=[1, 3], seed=0)
    assert idx.size == 25 and np.unique(idx).size == 25
    assert set(LABELS[idx].tolist()) <= {1, 3}


def test_classes_subset_keeps_only_those_values():
    idx = select_indices(LABELS, classes=[4, 0])
    assert set(LABELS[idx].tolist()) == {0, 4}
    assert idx.size == (LABELS == 0).sum() + (LABELS == 4).sum()
    assert select_indices(LABELS, classes=2).size == (LABELS == 2).sum()


def test_errors_are_explicit():
    with pytest.raises(ValueError, match="either n_per_class .* or max_samples .*not both"):
        select_indices(LABELS, n_per_class=2, max_samples=3)
    with pytest.raises(ValueError, match=r"unknown classes \[7, 9\]; the label values present are \[0, 1, 2, 3, 4\]"):
        select_indices(LABELS, classes=[0, 7, 9])
    with pytest.raises(ValueError, match=r"n_per_class=13 is larger than some classes .*\{0: 10, 1: 12\}"):
        select_indices(LABELS, n_per_class=13)
    with pytest.raises(ValueError, match="max_samples=1000 but only 70 samples"):
        select_indices(LABELS, max_samples=1000)
    with pytest.raises(ValueError, match="n_per_class must be a positive integer"):
        select_indices(LABELS, n_per_class=0)
    with pytest.raises(ValueError, match="classes must be a non-empty list"):
        select_indices(LABELS, classes=[])


def test_root_resolution(monkeypatch, tmp_path):
    assert resolve_root(tmp_path) == tmp_path
    monkeypatch.setenv("DSFLOW_DATA", str(tmp_path / "env"))
    assert resolve_root(None) == tmp_path / "env"
    monkeypatch.delenv("DSFLOW_DATA")
    assert str(resolve_root(None)) == "data"


def test_load_dataset_by_name_and_unknown_name():
    data = D.load_dataset("moons", n_samples=20, seed=0)
    assert data.n == 20 and data.name == "moons"
    with pytest.raises(ValueError, match=r"unknown dataset 'mnsit'; valid names: \[.*'mnist'.*\]"):
        D.load_dataset("mnsit")


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, dsflow.data; bad = [m for m in ('torch', 'sklearn', 'h5py', 'torchvision') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_stratified_split_is_deterministic_disjoint_and_stratified():
    y = torch.tensor([0] * 40 + [1] * 20 + [5] * 8)
    tr, te = stratified_split(y, 0.25, seed=3)
    tr2, te2 = stratified_split(y, 0.25, seed=3)
    assert torch.equal(tr, tr2) and torch.equal(te, te2)
    assert set(tr.tolist()).isdisjoint(te.tolist())
    assert sorted(tr.tolist() + te.tolist()) == list(range(68))
    assert torch.bincount(y[te]).tolist()[:2] == [10, 5] and int((y[te] == 5).sum()) == 2
    assert not torch.equal(stratified_split(y, 0.25, seed=4)[1], te)


def test_stratified_splits_keep_their_draws():
    """Pinned from the implementations before they shared `ranks_in_class` (oracle/training.py
    and data/embedded.py): a moved split must select the same samples."""
    y = torch.tensor([0] * 40 + [1] * 20 + [5] * 8)
    assert stratified_split(y, 0.25, seed=3)[1].tolist() == [2, 7, 9, 14, 17, 19, 26, 30, 33, 38, 45, 46, 50,
                                                             53, 55, 60, 67]
    datasets = pytest.importorskip("sklearn.datasets")
    from dsflow.data.embedded import digits_split_indices

    test = digits_split_indices(datasets.load_digits().target, "test")
    assert (len(test), test[:12].tolist(), int(test.sum())) == (896, [2, 3, 4, 5, 7, 8, 10, 12, 13, 14, 15, 18],
                                                                786759)


def test_ranks_in_class_groups_by_class_in_the_given_order():
    labels = np.array([2, 0, 2, 1, 0, 2])
    order, rank = ranks_in_class(labels, np.array([5, 4, 3, 2, 1, 0]))
    assert order.tolist() == [4, 1, 3, 5, 2, 0] and rank.tolist() == [0, 1, 0, 0, 1, 2]


def test_oracle_reexports_the_data_split():
    from dsflow import oracle

    assert oracle.stratified_split is stratified_split
