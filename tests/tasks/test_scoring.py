"""The shared scoring helpers of the transfer and distillation tasks: the classifier spec, the
test-split variant of a dataset config, the k-shot overlap removal and mean ± std."""

import math

import pytest
import torch

from dsflow.data import digits
from dsflow.tasks.scoring import (classifier_spec, dataset_variant, drop_overlap, epochs_for, format_mean_std,
                                  mean_std, train_and_score)


def test_mean_std_is_the_sample_std_and_skips_non_numbers():
    m, s, n = mean_std([0.5, 0.7, None, float("nan"), "x", True])
    assert (m, n) == (pytest.approx(0.6), 2) and s == pytest.approx(math.sqrt(0.02))  # ddof = 1
    assert mean_std([0.9]) == (0.9, 0.0, 1) and mean_std([]) is None
    assert format_mean_std([0.5, 0.7]) == "60.0 ± 14.1" and format_mean_std([]) == ""


def test_classifier_spec_checks_and_min_updates():
    spec = classifier_spec({"architecture": "LogReg", "epochs": 2, "batch_size": 10, "min_updates": 30})
    assert spec["architecture"] == "logreg" and spec["lr"] == 1e-3  # appendix C defaults for the rest
    assert epochs_for(spec, 25) == 10 and epochs_for(spec, 1000) == 2  # 3 batches/epoch -> 10 epochs
    for bad, key in (({"epochs": 2.5}, "epochs"), ({"lr": 0}, "lr"), ({"depth": 3}, "unknown key"),
                     ({"architecture": "vgg"}, "architecture")):
        with pytest.raises(ValueError, match=key):
            classifier_spec(bad)


def test_logreg_is_one_linear_layer_and_learns_the_digits():
    from dsflow.tasks.scoring import build_classifier

    train, test = digits(split="train"), digits(split="test", max_samples=300)
    spec = classifier_spec({"architecture": "logreg", "epochs": 30, "lr": 1e-2, "batch_size": 256})
    model = build_classifier(spec, train, train.classes, seed=0)
    assert [type(m).__name__ for m in model.network.layers] == ["Linear"]
    acc = train_and_score(spec, train, test, seed=0)
    assert acc > 0.9 and acc == train_and_score(spec, train, test, seed=0)


def test_test_split_variant_and_overlap_removal():
    node = {"_target_": "dsflow.data.digits", "split": "train", "n_per_class": 3, "max_samples": None, "seed": 0,
            "transform": None}
    kshot = dataset_variant(node, None, keep_selection=True)
    rest = dataset_variant(node, {"split": "train", "rows": None})  # a null for an option digits lacks: ignored
    assert kshot.n == 30 and rest.n == 901
    kept, removed = drop_overlap(rest, kshot)
    assert removed == 30 and kept.n == 871
    assert not set(kept.meta["indices"]) & set(kshot.meta["indices"])
    other, none = drop_overlap(dataset_variant(node, {"split": "test"}), kshot)
    assert none == 0 and other.n == 896  # another split shares no sample
    with pytest.raises(ValueError, match="not options of the dataset"):
        dataset_variant(node, {"rows": [0, 10]})
    assert torch.equal(kept.y, rest.y[[i for i, j in enumerate(rest.meta["indices"])
                                       if j not in set(kshot.meta["indices"])]])
