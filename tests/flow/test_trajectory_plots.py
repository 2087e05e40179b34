"""Trajectory figures: PNGs and GIFs are written, readable and not blank."""

import numpy as np
import pytest
from PIL import Image

from dsflow.plotting.trajectories import (
    animate_trajectories,
    plot_class_count,
    plot_objective_parts,
    plot_trajectories,
)


def _traj(d, T=5, n=30, seed=0):
    rng = np.random.default_rng(seed)
    start = rng.normal(size=(n, d))
    end = start + 3.0
    w = np.linspace(0, 1, T)[:, None, None]
    return ((1 - w) * start + w * end).astype(np.float32), np.arange(n) % 3


def _not_blank(path):
    img = np.asarray(Image.open(path).convert("L"), dtype=float)
    return img.std() > 5


@pytest.mark.parametrize("d", [2, 3, 6])
def test_plot_trajectories(tmp_path, d):
    traj, y = _traj(d)
    target = np.random.default_rng(1).normal(size=(20, d)) + 3
    out = plot_trajectories(traj, y, target, np.arange(20) % 2, tmp_path / f"t{d}.png", y_end=(y + 1) % 3)
    assert out.exists() and _not_blank(out)


def test_plot_trajectories_from_npy_path(tmp_path):
    traj, y = _traj(2)
    np.save(tmp_path / "traj.npy", traj)
    assert _not_blank(plot_trajectories(tmp_path / "traj.npy", y, path=tmp_path / "p.png"))
    with pytest.raises(ValueError, match="\\(T, n, d\\)"):
        plot_trajectories(traj[0], y, path=tmp_path / "bad.png")


@pytest.mark.parametrize("d", [2, 3])
def test_animation_has_frames(tmp_path, d):
    traj, y = _traj(d, T=7)
    labels = [y] * 3 + [np.zeros_like(y)] * 4
    out = animate_trajectories(traj, y, path=tmp_path / "a.gif", steps=list(range(0, 70, 10)),
                               labels_over_time=labels, max_frames=5)
    gif = Image.open(out)
    assert gif.n_frames == 5


def test_objective_parts_and_class_count(tmp_path):
    history = [{"step": t, "objective": 2.0 / (t + 1), "parts": {"otdd": 1.0 / (t + 1), "ball": 1.0 / (t + 1),
                                                               "total": 2.0 / (t + 1)},
                "n_classes": 2 + (t > 5)} for t in range(10)]
    assert _not_blank(plot_objective_parts(history, tmp_path / "parts.png"))
    assert _not_blank(plot_class_count(history, tmp_path / "k.png"))
    with pytest.raises(ValueError, match="empty"):
        plot_class_count([], tmp_path / "x.png")
