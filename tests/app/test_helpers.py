"""Run-level helpers: device/dtype parsing, seeding, feature-space check, class coupling."""

import random

import numpy as np
import pytest
import torch

from dsflow.app import check_same_feature_space, resolve_device, resolve_dtype, seed_everything
from dsflow.data.container import LabeledData
from dsflow.distance_app import class_coupling


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("AUTO").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available.*device=auto"):
            resolve_device("cuda:0")


def test_resolve_dtype():
    assert resolve_dtype("float32") is torch.float32 and resolve_dtype("float64") is torch.float64
    with pytest.raises(ValueError, match="float32, float64"):
        resolve_dtype("half")


def test_seed_everything_makes_all_generators_repeat():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(3)
    first = draw()
    seed_everything(3)
    assert draw() == first
    seed_everything(4)
    assert draw() != first


def test_feature_space_mismatch_suggests_resize():
    small = LabeledData(torch.zeros(4, 1, 8, 8), torch.zeros(4), name="digits")
    big = LabeledData(torch.zeros(4, 1, 28, 28), torch.zeros(4), name="mnist")
    with pytest.raises(ValueError, match=r"d=64.*d=784.*resize=\[28,28\]"):  # the hints: tests/data/test_compat.py
        check_same_feature_space(small, big)
    with pytest.raises(ValueError, match="same dimension"):
        check_same_feature_space(LabeledData(torch.zeros(4, 2), torch.zeros(4)),
                                 LabeledData(torch.zeros(4, 3), torch.zeros(4)))
    check_same_feature_space(small, small)  # same space: no error


def test_class_coupling_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    P = torch.rand(7, 5, generator=g, dtype=torch.float64)
    ys = torch.tensor([3, 1, 3, 7, 1, 1, 7])  # non-contiguous labels
    yt = torch.tensor([0, 2, 2, 0, 5])
    cs, ct = [1, 3, 7], [0, 2, 5]
    C = class_coupling(P, ys, yt, cs, ct)
    brute = torch.zeros(3, 3, dtype=torch.float64)
    for i in range(7):
        for j in range(5):
            brute[cs.index(int(ys[i])), ct.index(int(yt[j]))] += P[i, j]
    torch.testing.assert_close(C, brute, rtol=1e-12, atol=1e-12)
    assert float(C.sum()) == pytest.approx(float(P.sum()))
    with pytest.raises(ValueError, match="expected"):
        class_coupling(P.T, ys, yt, cs, ct)
