"""Class statistics (dsflow/ot/class_stats.py): lookups, means, covariances, Gaussian fits, padding."""

import numpy as np
import pytest
import torch

from dsflow.ot.class_stats import (
    class_counts,
    class_covariances,
    class_gaussians,
    class_index,
    class_means,
    gaussians_by_index,
    pad_by_class,
)


def test_class_gaussians_match_numpy_and_noncontiguous_labels():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, dtype=torch.float64, generator=g)
    y = torch.tensor([7, 3, 11, 3] * 10)
    st = class_gaussians(x, y)
    assert st.classes.tolist() == [3, 7, 11]
    assert st.counts.tolist() == [20, 10, 10]
    for row, c in enumerate([3, 7, 11]):
        xc = x[y == c].numpy()
        np.testing.assert_allclose(st.means[row].numpy(), xc.mean(0), rtol=1e-12)
        np.testing.assert_allclose(st.covariances()[row].numpy(), np.cov(xc.T), rtol=1e-10, atol=1e-12)


def test_singleton_class_raises_clearly_or_falls_back():
    x = torch.randn(5, 2)
    y = torch.tensor([0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="single sample"):
        class_gaussians(x, y)
    st = class_gaussians(x, y, allow_singletons=True)
    # exact: a singleton's factor is zero padding (written, not computed)
    assert float(st.covariances()[2].abs().max()) == 0.0
    with pytest.raises(ValueError, match="not in classes"):
        class_gaussians(x, y, classes=[0, 1])


def test_class_index_names_whose_labels_and_the_fix():
    classes, idx = class_index(torch.tensor([5, 2, 5, 9]))
    assert classes.tolist() == [2, 5, 9] and idx.tolist() == [1, 0, 1, 2]
    with pytest.raises(ValueError, match=r"y_pred: labels \[4\] are not in classes \[2, 5\]; relabel"):
        class_index(torch.tensor([2, 4]), [2, 5], what="y_pred", fix="relabel")
    classes, idx = class_index(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert classes.numel() == 0 and idx.numel() == 0


def test_means_and_covariances_match_numpy_biased_and_unbiased():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, dtype=torch.float64, generator=g)
    y = torch.tensor([1, 4, 4] * 10)
    classes, idx = class_index(y)
    counts = class_counts(idx, classes.numel())
    means = class_means(x, idx, counts)
    for ddof in (0, 1):
        for j, S in class_covariances(x, idx, means, ddof=ddof):
            xc = x[y == classes[j]].numpy()
            np.testing.assert_allclose(means[j].numpy(), xc.mean(0), rtol=1e-12)
            np.testing.assert_allclose(S.numpy(), np.cov(xc.T, ddof=ddof), rtol=1e-10, atol=1e-12)
    biased = gaussians_by_index(x, idx, classes, ddof=0).covariances()
    np.testing.assert_allclose(biased[0].numpy(), np.cov(x[y == 1].numpy().T, ddof=0), rtol=1e-10, atol=1e-12)


def test_pad_by_class_keeps_sample_order_and_renormalises_weights():
    x = torch.arange(10.0).reshape(5, 2)
    idx = torch.tensor([1, 0, 1, 1, 0])
    X, W = pad_by_class(x, idx, 2, torch.tensor([1.0, 1.0, 1.0, 2.0, 3.0]))
    assert X[0, :2].tolist() == [[2.0, 3.0], [8.0, 9.0]] and X[1].tolist() == [[0, 1], [4, 5], [6, 7]]
    torch.testing.assert_close(W, torch.tensor([[0.25, 0.75, 0.0], [0.25, 0.25, 0.5]]))
