"""Paper presets in the paper's units (dsflow/units.py): the mapping, checked against an
independent solver in the authors' convention, and every paper preset checked against it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from dsflow.units import IMAGENET_STD, NIST_STD, lr_from_time_step, paper_entreg, paper_time_step, squared_distance_scale

PAPER_PRESETS = ["nist_to_mnist", "nist_to_mnist_test_splits", "repurpose_camelyon", "repurpose_stl10"]


def _compose(overrides):
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose("config", overrides=overrides)


def _mean_sqdist(x: np.ndarray) -> float:
    return float(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).mean())


def _images(n: int, channels: int, seed: int = 0) -> np.ndarray:
    # channels with different brightness and contrast, so the per-channel stds matter
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.6, 1.0, channels)[None, :, None]
    return np.clip(rng.random((n, channels, 36)) * scale, 0, 1).reshape(n, -1)


def test_one_channel_mapping_is_two_lambda_std_squared():
    assert paper_entreg(100, 0.3081) == pytest.approx(2 * 100 * 0.3081**2, rel=1e-12)
    assert paper_entreg(100, [0.3081]) == pytest.approx(18.985122, rel=1e-6)
    assert paper_time_step(0.1) == pytest.approx(0.05)


@pytest.mark.parametrize("std", [NIST_STD, IMAGENET_STD], ids=["nist", "imagenet"])
def test_effective_eps_relative_to_squared_distances_equals_the_papers(std):
    """eps / (typical cost) is what shapes the plan: dsflow's (pixels, cost |x-x'|^2) equals the
    authors' (standardised pixels, cost |x-x'|^2 / 2, eps = lambda).  Exact for one channel; for
    ImageNet statistics the per-channel stds differ by 2 %, so 3 % is the stated bound."""
    channels = len(std)
    x = _images(60, channels)
    mean = np.repeat(np.linspace(0.4, 0.5, channels), 36)
    x_std = (x - mean) / np.repeat(np.asarray(std), 36)
    lam = 100.0
    ours = paper_entreg(lam, std) / _mean_sqdist(x)
    theirs = lam / (_mean_sqdist(x_std) / 2)
    assert ours == pytest.approx(theirs, rel=1e-6 if channels == 1 else 0.03)


@pytest.mark.parametrize("inner", ["none", "means"])
def test_plan_in_dsflow_units_is_the_plan_of_the_authors_convention(inner):
    """The same entropic plan: dsflow's solver on pixels with entreg = paper_entreg(lambda, s)
    against POT's log-domain Sinkhorn on standardised pixels, cost (|x-x'|^2 + d_label^2)/2,
    reg = lambda.  ``means``: the label distance (squared distance of class means, which
    scales with the data like the features) is in the cost too."""
    import ot

    from dsflow import LabeledData, otdd

    rng = np.random.default_rng(3)
    s, lam = 0.3081, 5.0
    xs, xt = rng.random((24, 16)), rng.random((30, 16)) * 0.8 + 0.1
    ys, yt = np.arange(24) % 2, np.arange(30) % 3
    src = LabeledData(torch.tensor(xs), torch.tensor(ys))
    tgt = LabeledData(torch.tensor(xt), torch.tensor(yt))
    ours = otdd(src, tgt, inner=inner, outer="sinkhorn", entreg=paper_entreg(lam, s), tol=1e-9,
                return_coupling=True).coupling.numpy()
    zs, zt = (xs - 0.13) / s, (xt - 0.13) / s
    cost = ot.dist(zs, zt)
    if inner == "means":
        ms = np.stack([zs[ys == c].mean(0) for c in range(2)])
        mt = np.stack([zt[yt == c].mean(0) for c in range(3)])
        cost = cost + ot.dist(ms, mt)[ys][:, yt]
    ref = ot.sinkhorn(np.full(24, 1 / 24), np.full(30, 1 / 30), cost / 2, reg=lam, method="sinkhorn_log",
                      numItermax=100000, stopThr=1e-12)
    # both converged to 1e-9 on the marginals: the plans agree to solver precision
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_presets_state_the_paper_values_and_map_them(preset):
    cfg = _compose([f"+experiment={preset}", "logger=none"])
    paper = cfg.paper
    assert paper["lambda"] == 100  # appendix C (Table 1) and figure 6
    assert paper.step_size == pytest.approx(0.1)
    expected_std = NIST_STD if "nist" in preset else IMAGENET_STD
    assert tuple(np.atleast_1d(np.asarray(paper.data_std, dtype=float))) == pytest.approx(expected_std)
    assert cfg.functional.entreg == pytest.approx(paper_entreg(100, expected_std))
    assert cfg.time_step == pytest.approx(0.05)
    # the preset does not also pin a raw lr: time_step decides it for whatever n flows
    assert cfg.optimizer.lr == _compose(["+experiment=base", "logger=none"]).optimizer.lr


def test_sweeping_the_papers_lambda_changes_entreg():
    cfg = _compose(["+experiment=nist_to_mnist", "paper.lambda=20", "logger=none"])
    assert cfg.functional.entreg == pytest.approx(2 * 20 * 0.3081**2)


def test_lr_from_time_step_is_tau_times_n_and_refuses_adam():
    assert lr_from_time_step(0.05, 2007, "SGD") == pytest.approx(100.35)
    with pytest.raises(ValueError, match="optimizer=sgd"):
        lr_from_time_step(0.05, 100, "Adam")
    with pytest.raises(ValueError, match="momentum"):
        lr_from_time_step(0.05, 100, "SGD", momentum=0.9)
    with pytest.raises(ValueError, match="time_step"):
        lr_from_time_step("abc", 100, "SGD")
    with pytest.raises(ValueError, match="std"):
        squared_distance_scale([0.2, -1])


def test_time_step_sets_lr_for_the_particles_that_flow(tmp_path):
    from dsflow.app import run

    cfg = _compose(["dataset@source=moons", "dataset@target=rings", "logger=none", "steps=1", "plot=false",
                    "time_step=0.25", "source.n_samples=40", "task=repurpose", "task.holdout=10"])
    summary = run(cfg, run_dir=tmp_path)
    assert summary["n"] == 30  # 10 of the 40 held out: lr follows the particles that flow
    assert summary["lr"] == pytest.approx(0.25 * 30)
    assert summary["time_step"] == pytest.approx(0.25)
