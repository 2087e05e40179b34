"""The app's figures: objective curve, 2-D/3-D scatter, image grids, labelled heat maps.

Every function takes plain data (records, `LabeledData`, arrays), writes one PNG and
returns its path.  Figures are built with `matplotlib.figure.Figure` (no pyplot), so they
are safe to make in a loop or a multirun without leaking open figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

MAX_LEGEND_CLASSES = 20


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_objective(records: Sequence[Mapping[str, Any]], path: str | Path, *,
                   title: str = "objective", final: tuple[int, float] | None = None,
                   final_parts: Mapping[str, float] | None = None, ylabel: str = "objective") -> Path:
    """Objective (and its parts, when there are several) against the flow step.

    ``records`` are ``metrics.jsonl`` rows: ``{"step", "objective", "parts": {...}}``; row
    ``t`` holds F at the particles *before* update ``t``, so the curve would stop one step
    short of the end: ``final = (steps, objective_after)`` (and ``final_parts``) adds the
    objective evaluated at the final particles as the last point.  Step ticks are integers;
    ``ylabel`` names the functional (e.g. ``OTDD²``).  Non-finite values are dropped; the y
    axis is logarithmic when every value is positive and they span more than a decade.
    """
    import math

    if not records:
        raise ValueError("plot_objective: no records to plot (did the flow run any step?)")
    series: dict[str, tuple[list[float], list[float]]] = {}

    def add(name, step, value):
        if isinstance(value, (int, float)) and math.isfinite(value):
            xs, ys = series.setdefault(name, ([], []))
            xs.append(step)
            ys.append(float(value))

    rows = list(records)
    if final is not None and final[1] is not None and not any(r.get("step") == final[0] for r in rows):
        rows.append({"step": int(final[0]), "objective": final[1], "parts": dict(final_parts or {})})
    for rec in rows:
        step = rec.get("step", 0)
        add("objective", step, rec.get("objective"))
        parts = rec.get("parts") or {}
        if len(parts) > 1:
            for name, value in parts.items():
                if name not in ("objective", "total"):
                    add(name, step, value)
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, label=name, lw=2 if name == "objective" else 1)
    values = [v for _, ys in series.values() for v in ys]
    if values and min(values) > 0 and max(values) > 10 * min(values):  # log only over decades
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # flow steps are whole numbers
    ax.set_xlabel("flow step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return _save(fig, path)


def _class_colors(labels):
    """A stable colour per label value (shared by every panel)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {int(c): cmap(i % cmap.N) for i, c in enumerate(labels)}


def plot_scatter(panels: Mapping[str, Any], path: str | Path, *, max_points: int = 3000,
                 seed: int = 0) -> Path:
    """Side-by-side scatter plots of 2-D or 3-D labeled datasets, coloured by class.

    ``panels`` maps a title (``"source (t=0)"``, ``"flowed"``, ``"target"``) to a
    `LabeledData`.  All panels share axis limits so that motion is visible.
    """
    import numpy as np

    datasets = list(panels.items())
    if not datasets:
        raise ValueError("plot_scatter: nothing to plot")
    dims = {data.d for _, data in datasets}
    if len(dims) != 1 or dims.pop() not in (2, 3):
        raise ValueError(
            f"plot_scatter needs 2-D or 3-D features in every panel, got "
            f"{[(t, data.d) for t, data in datasets]}"
        )
    d = datasets[0][1].d
    rng = np.random.default_rng(seed)
    arrays = []
    for title, data in datasets:
        x, y = data.numpy()
        if len(x) > max_points:  # keep plots light for big runs
            keep = rng.choice(len(x), max_points, replace=False)
            x, y = x[keep], y[keep]
        arrays.append((title, data, x, y))
    all_x = np.concatenate([a[2] for a in arrays])
    finite = np.isfinite(all_x).all(axis=1)
    lo, hi = all_x[finite].min(axis=0), all_x[finite].max(axis=0)
    pad = 0.05 * (hi - lo + 1e-12)
    labels = np.unique(np.concatenate([a[3] for a in arrays]))
    colors = _class_colors(labels)
    fig = _figure(4.2 * len(arrays), 4.2)
    for i, (title, data, x, y) in enumerate(arrays):
        kw = {"projection": "3d"} if d == 3 else {}
        ax = fig.add_subplot(1, len(arrays), i + 1, **kw)
        c = np.array([colors[int(v)] for v in y]) if len(y) else None
        ax.scatter(*x.T, c=c, s=6, alpha=0.7, linewidths=0)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        if d == 3:
            ax.set_zlim(lo[2] - pad[2], hi[2] + pad[2])
        else:
            ax.set_aspect("equal", adjustable="box")
        ax.set_title(f"{title}\n{data.name}: n={data.n}, {data.num_classes} classes", fontsize=9)
    if len(labels) <= MAX_LEGEND_CLASSES:
        from matplotlib.lines import Line2D

        names = {}
        for _, data, _, _ in arrays:
            for c in data.classes.tolist():
                names.setdefault(int(c), data.class_name(int(c)))
        handles = [Line2D([], [], ls="", marker="o", color=colors[int(c)], label=names.get(int(c), str(c)))
                   for c in labels]
        fig.legend(handles=handles, loc="outside right center", fontsize=8, title="class")
    return _save(fig, path)


def image_mosaic(data, *, per_class: int = 8, max_classes: int = 10):
    """One array ``(rows*H, cols*W[, C])``: a row of up to ``per_class`` images per class.

    Missing images (a class with fewer samples) stay blank (NaN, drawn transparent).
    """
    import numpy as np

    images = data.images().detach().cpu().float().numpy()  # (n, C, H, W)
    _, C, H, W = images.shape
    y = data.y.detach().cpu().numpy()
    classes = np.unique(y)[:max_classes]
    mosaic = np.full((len(classes) * H, per_class * W, C), np.nan, dtype=np.float32)
    for r, c in enumerate(classes):  # loop over classes only
        chosen = images[y == c][:per_class]  # (k, C, H, W)
        k = len(chosen)
        row = chosen.transpose(2, 0, 3, 1).reshape(H, k * W, C)  # side by side
        mosaic[r * H:(r + 1) * H, : k * W] = row
    return (mosaic[..., 0] if C == 1 else mosaic), [data.class_name(int(c)) for c in classes]


def plot_image_grid(panels: Mapping[str, Any], path: str | Path, *, per_class: int = 8,
                    max_classes: int = 10) -> Path:
    """Image grids side by side (e.g. before / after / target), one row per class.

    Intensities of every panel are shown on the value range of the *last* panel (the
    target), so that a flowed image that matches the target also looks like it.
    """
    import numpy as np

    datasets = list(panels.items())
    for title, data in datasets:
        if not data.is_image:
            raise ValueError(f"plot_image_grid: panel {title!r} ({data.name}) is not image data")
    mosaics = [(title, data, *image_mosaic(data, per_class=per_class, max_classes=max_classes))
               for title, data in datasets]
    ref = mosaics[-1][2]
    vmin, vmax = float(np.nanmin(ref)), float(np.nanmax(ref))
    if not vmax > vmin:
        vmax = vmin + 1.0
    fig = _figure(3.2 * len(mosaics), 3.6)
    for i, (title, data, mosaic, names) in enumerate(mosaics):
        ax = fig.add_subplot(1, len(mosaics), i + 1)
        if mosaic.ndim == 3:  # RGB: imshow has no vmin/vmax, rescale by hand
            shown = np.clip((mosaic - vmin) / (vmax - vmin), 0, 1)
            ax.imshow(np.nan_to_num(shown, nan=1.0), interpolation="nearest")
        else:
            ax.imshow(mosaic, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        H = data.image_shape[1]
        ax.set_yticks([(r + 0.5) * H for r in range(len(names))], names, fontsize=7)
        ax.set_xticks([])
        ax.set_title(f"{title}\n{data.name}", fontsize=9)
    return _save(fig, path)


def plot_heatmap(matrix, path: str | Path, *, row_names: Sequence[str], col_names: Sequence[str],
                 title: str = "", row_label: str = "source class", col_label: str = "target class",
                 annotate: bool | None = None, fmt: str = ".2g", cmap: str = "viridis") -> Path:
    """A labelled heat map (label-to-label distances, class-to-class transport plans)."""
    import numpy as np

    m = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=float)
    if m.ndim != 2 or m.shape != (len(row_names), len(col_names)):
        raise ValueError(
            f"plot_heatmap: matrix of shape {m.shape} does not match {len(row_names)} row names "
            f"and {len(col_names)} column names"
        )
    if annotate is None:
        annotate = m.size <= 15 * 15
    fig = _figure(1.2 + 0.55 * max(len(col_names), 4), 1.0 + 0.5 * max(len(row_names), 4))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap=cmap, aspect="auto")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xticks(range(len(col_names)), [str(n) for n in col_names], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_names)), [str(n) for n in row_names], fontsize=8)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    if title:
        ax.set_title(title)
    if annotate:
        finite = m[np.isfinite(m)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7,
                    color="black" if v > mid else "white")
    return _save(fig, path)
