"""Figures of flows: particle trajectories (2-D / 3-D), GIF animations, objective parts,
class counts.  matplotlib (Agg) and imageio-free: GIFs use matplotlib's pillow writer.

Data with more than 3 dimensions are shown in the plane of their first two principal
components (computed over source, flowed and target points together).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _np(a):
    if a is None:
        return None
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _projection(arrays: Sequence[np.ndarray], dim: int):
    """``(f, k)``: a function mapping points to ``k <= 3`` plotting coordinates."""
    d = arrays[0].shape[-1]
    if d <= 3:
        return (lambda a: np.asarray(a, dtype=np.float64)), d
    pts = np.concatenate([a.reshape(-1, d) for a in arrays]).astype(np.float64)
    mean = pts.mean(0)
    _, _, vt = np.linalg.svd(pts[:: max(1, len(pts) // 20000)] - mean, full_matrices=False)
    basis = vt[:dim].T
    return (lambda a: (np.asarray(a, dtype=np.float64) - mean) @ basis), dim


def _class_colors(labels: np.ndarray):
    import matplotlib

    values = np.unique(labels)
    cmap = matplotlib.colormaps["tab10" if len(values) <= 10 else "tab20"]
    lookup = {v: cmap(i % cmap.N) for i, v in enumerate(values)}
    return np.array([lookup[v] for v in labels])


def _subsample(n: int, max_particles: int | None, seed: int = 0) -> np.ndarray:
    if max_particles is None or n <= max_particles:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_particles, replace=False))


def _check_traj(traj) -> np.ndarray:
    from dsflow.flow.trajectory import load_trajectory

    traj = np.asarray(load_trajectory(traj)) if isinstance(traj, (str, Path)) else _np(traj)
    if traj.ndim != 3 or traj.shape[0] < 1:
        raise ValueError(f"trajectory must be an array (T, n, d), got shape {traj.shape}")
    return traj


def plot_trajectories(
    traj,
    y,
    target_x=None,
    target_y=None,
    path: str | Path = "trajectories.png",
    *,
    y_end=None,
    max_particles: int | None = 400,
    title: str | None = None,
    seed: int = 0,
) -> Path:
    """Scatter of a flow: start (coloured by class, hollow), end (filled), paths, target.

    Parameters
    ----------
    traj:
        ``(T, n, d)`` array (or the ``.npy`` path written by the engine); ``traj[0]`` is the
        source, ``traj[-1]`` the flowed particles.
    y:
        ``(n,)`` labels at the start; ``y_end`` (optional) labels at the end (jd_vl).
    target_x, target_y:
        Target dataset (grey crosses, or coloured by ``target_y``); optional.
    """
    plt = _figure()
    traj = _check_traj(traj)
    y = _np(y)
    y_end = y if y_end is None else _np(y_end)
    tx, ty = _np(target_x), _np(target_y)
    arrays = [traj] + ([tx] if tx is not None else [])
    proj, k = _projection(arrays, 3 if traj.shape[-1] == 3 else 2)
    keep = _subsample(traj.shape[1], max_particles, seed)
    paths = proj(traj[:, keep])  # (T, m, k)
    fig = plt.figure(figsize=(7, 6))
    ax = fig.add_subplot(111, projection="3d" if k == 3 else None)
    if k == 1:
        paths = np.concatenate([paths, np.zeros_like(paths)], axis=-1)
        k = 2

    def scatter(points, **kw):
        if k == 3:
            ax.scatter(points[:, 0], points[:, 1], points[:, 2], **kw)
        else:
            ax.scatter(points[:, 0], points[:, 1], **kw)

    if tx is not None:
        tp = proj(tx)
        if tp.shape[1] == 1:
            tp = np.concatenate([tp, np.zeros_like(tp)], axis=1)
        tcol = "0.6" if ty is None else _class_colors(ty)
        scatter(tp, marker="x", s=14, c=tcol, alpha=0.5, linewidths=0.8, label="target")
    if traj.shape[0] > 1:
        for i in range(paths.shape[1]):  # one line per plotted particle (<= max_particles)
            ax.plot(*[paths[:, i, j] for j in range(k)], color="0.35", alpha=0.25, linewidth=0.6)
    start_col = _class_colors(y[keep])
    scatter(paths[0], facecolors="none", edgecolors=start_col, s=22, linewidths=0.9, label="source (t=0)")
    scatter(paths[-1], c=_class_colors(y_end[keep]), s=18, edgecolors="k", linewidths=0.3,
            label=f"flowed (frame {traj.shape[0] - 1})")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or f"flow of {traj.shape[1]} particles")
    if traj.shape[-1] > 3:
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def animate_trajectories(
    traj,
    y,
    target_x=None,
    target_y=None,
    path: str | Path = "trajectories.gif",
    *,
    steps: Sequence[int] | None = None,
    labels_over_time: Sequence[Any] | None = None,
    max_frames: int = 60,
    max_particles: int | None = 1000,
    fps: int = 8,
    title: str | None = None,
) -> Path:
    """GIF of the particles moving (2-D / 3-D data; higher dimensions use 2 PCs).

    ``steps`` labels the frames with their flow step; ``labels_over_time`` (a ``(T, n)``
    sequence) recolours particles whose labels change (jd_vl).  At most ``max_frames``
    evenly spaced frames (always including the first and last) are drawn.
    """
    plt = _figure()
    from matplotlib.animation import FuncAnimation, PillowWriter

    traj = _check_traj(traj)
    y = _np(y)
    tx, ty = _np(target_x), _np(target_y)
    T = traj.shape[0]
    frames = np.unique(np.linspace(0, T - 1, min(T, max_frames)).round().astype(int))
    keep = _subsample(traj.shape[1], max_particles)
    proj, k = _projection([traj] + ([tx] if tx is not None else []), 3 if traj.shape[-1] == 3 else 2)
    pts = proj(traj[:, keep])
    if pts.shape[-1] == 1:
        pts = np.concatenate([pts, np.zeros_like(pts)], axis=-1)
        k = 2
    lab_t = None if labels_over_time is None else np.asarray([_np(v) for v in labels_over_time])
    fig = plt.figure(figsize=(6, 5.5))
    ax = fig.add_subplot(111, projection="3d" if k == 3 else None)
    lo = pts.reshape(-1, k).min(0)
    hi = pts.reshape(-1, k).max(0)
    if tx is not None:
        tp = proj(tx)
        if tp.shape[1] == 1:
            tp = np.concatenate([tp, np.zeros_like(tp)], axis=1)
        lo, hi = np.minimum(lo, tp.min(0)), np.maximum(hi, tp.max(0))
        tcol = "0.6" if ty is None else _class_colors(ty)
        ax.scatter(*[tp[:, j] for j in range(k)], marker="x", s=12, c=tcol, alpha=0.4, linewidths=0.7)
    pad = 0.05 * (hi - lo + 1e-9)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    if k == 3:
        ax.set_zlim(lo[2] - pad[2], hi[2] + pad[2])
    first = pts[0]
    scat = ax.scatter(*[first[:, j] for j in range(k)], c=_class_colors(y[keep]), s=14)
    label = ax.set_title(title or "")

    def update(frame_index):
        f = frames[frame_index]
        p = pts[f]
        if k == 3:
            scat._offsets3d = (p[:, 0], p[:, 1], p[:, 2])
        else:
            scat.set_offsets(p)
        if lab_t is not None and f < len(lab_t):
            scat.set_facecolors(_class_colors(lab_t[f][keep]))
        step = steps[f] if steps is not None and f < len(steps) else f
        label.set_text(f"{title + ' - ' if title else ''}step {step}")
        return (scat,)

    anim = FuncAnimation(fig, update, frames=len(frames), blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=PillowWriter(fps=fps))
    plt.close(fig)
    return path


def plot_objective_parts(history: Sequence[dict], path: str | Path = "objective_parts.png", *, title=None) -> Path:
    """One curve per logged part (and the total) against the step; log scale if positive."""
    plt = _figure()
    if not history:
        raise ValueError("plot_objective_parts: the history is empty")
    steps = np.array([h["step"] for h in history])
    names: list[str] = []
    for h in history:
        for k in h.get("parts", {}):
            if k not in names:
                names.append(k)
    if not names:
        names = ["objective"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    all_positive = True
    for name in names:
        vals = np.array([h.get("parts", {}).get(name, h.get("objective") if name == "objective" else np.nan)
                         for h in history], dtype=float)
        all_positive &= bool(np.all(vals[np.isfinite(vals)] > 0))
        ax.plot(steps, vals, label=name, linewidth=2.0 if name == "total" else 1.2)
    if all_positive:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.legend(fontsize=8)
    ax.set_title(title or "objective and parts")
    ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_class_count(history: Sequence[dict], path: str | Path = "class_count.png", *, title=None) -> Path:
    """Number of classes against the step (changes under jd_vl reclustering)."""
    plt = _figure()
    if not history:
        raise ValueError("plot_class_count: the history is empty")
    steps = np.array([h["step"] for h in history])
    counts = np.array([h.get("n_classes", np.nan) for h in history], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.step(steps, counts, where="post")
    ax.set_xlabel("step")
    ax.set_ylabel("number of classes")
    finite = counts[np.isfinite(counts)]
    if finite.size:
        ax.set_ylim(0, finite.max() + 1)
        ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title or "classes during the flow")
    ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["plot_trajectories", "animate_trajectories", "plot_objective_parts", "plot_class_count"]
