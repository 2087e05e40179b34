"""Oracle figures: confusion matrix, accuracy through a flow (paper fig. 6), objective vs
accuracy (fig. 11) and push-forward samples (fig. 9).  matplotlib with the Agg backend.

Every function returns the figure and, when ``path`` is given, also saves it there
(parent folders are created) and closes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        _plt().close(fig)
    return fig


def confusion_layout(ev, *, names=None, true_names=None, pred_origin=None):
    """``(matrix, row labels, column labels)`` of an `Evaluation` with the diagonal where a
    reader looks: columns are the true classes in row order (a class never predicted gets an
    empty column), then any other predicted class, so cell ``(i, i)`` counts the correct
    predictions of class ``i``.  Both axes name a label value the same way: ``names``
    (``{value: name}``), else ``true_names`` (one per true class) / the evaluation's names,
    else the value; ``pred_origin`` (``{value: text}``) adds where a predicted value comes
    from, e.g. the oracle class the correspondence maps to it."""
    import numpy as np

    tc, pc = [int(c) for c in ev.true_classes], [int(c) for c in ev.pred_classes]
    labels = {}
    given = true_names or ev.names.get("true")
    if given:
        labels.update({c: str(n) for c, n in zip(tc, given)})
    if names:
        labels.update({int(k): str(v) for k, v in dict(names).items()})
    order = tc + [c for c in pc if c not in tc]
    raw = np.asarray(ev.confusion, dtype=float)
    mat = np.zeros((len(tc), len(order)))
    for j, c in enumerate(order):
        if c in pc:
            mat[:, j] = raw[:, pc.index(c)]
    rows = [labels.get(c, str(c)) for c in tc]
    cols = [labels.get(c, str(c)) for c in order]
    if pred_origin:
        cols = [f"{name} ({pred_origin[c]})" if c in pred_origin else name for name, c in zip(cols, order)]
    return mat, rows, cols


def plot_confusion_matrix(evaluation_or_matrix, *, true_names: Sequence[str] | None = None,
                          pred_names: Sequence[str] | None = None, names=None, pred_origin=None,
                          normalize: bool = True, title: str | None = None, xlabel: str = "predicted class",
                          ylabel: str = "true class", path=None):
    """Heat map of a confusion matrix (rows: true classes, columns: predicted classes).

    Accepts an `dsflow.oracle.Evaluation` (laid out by `confusion_layout`: same class names
    on both axes, the diagonal is the correct cells) or a matrix (with ``true_names`` /
    ``pred_names``); ``normalize`` divides each row by its count (rows then read as
    per-class recall).
    """
    import numpy as np

    plt = _plt()
    ev = evaluation_or_matrix
    if hasattr(ev, "confusion"):
        mat, true_names, layout_cols = confusion_layout(ev, names=names, true_names=true_names, pred_origin=pred_origin)
        pred_names = pred_names or layout_cols
        title = title or f"accuracy {ev.accuracy:.3f} (n={ev.n})"
    else:
        mat = np.asarray(getattr(ev, "numpy", lambda: ev)(), dtype=float)
    if normalize:
        mat = mat / np.maximum(mat.sum(1, keepdims=True), 1)
    k, kp = mat.shape
    fig, ax = plt.subplots(figsize=(1.6 + 0.5 * kp, 1.4 + 0.45 * k))
    im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(kp), labels=pred_names or [str(i) for i in range(kp)], rotation=90)
    ax.set_yticks(range(k), labels=true_names or [str(i) for i in range(k)])
    if k * kp <= 400:
        for i in range(k):
            for j in range(kp):
                if mat[i, j] > 0:
                    ax.text(j, i, f"{mat[i, j]:.2f}" if normalize else f"{int(mat[i, j])}", ha="center",
                            va="center", fontsize=6, color="white" if mat[i, j] > 0.5 * mat.max() else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def _curves(data):
    """``{label: (x, y)}`` from a monitor history dict or a mapping of them."""
    if isinstance(data, dict) and "step" in data:
        return {"": data}
    return dict(data)


def plot_accuracy_curve(history, *, title: str = "oracle accuracy through the flow", path=None):
    """Accuracy vs flow step (fig. 6).  ``history``: an `OracleMonitor.history` or
    ``{label: history}`` for several runs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, h in _curves(history).items():
        ax.plot(h["step"], h["accuracy"], marker=".", label=label or None)
    ax.set_xlabel("flow step")
    ax.set_ylabel("oracle accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if any(_curves(history)):
        ax.legend(fontsize=8)
    ax.set_title(title)
    return _finish(fig, path)


def plot_objective_vs_accuracy(history, *, title: str = "objective vs oracle accuracy", xlabel: str = "objective",
                               path=None):
    """Flow objective against oracle accuracy (fig. 11), each pair at the same particles
    (`OracleMonitor.history`); points without an objective are skipped.  ``xlabel`` names
    the functional (e.g. ``OTDD²``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, h in _curves(history).items():
        pairs = [(o, a) for o, a in zip(h["objective"], h["accuracy"]) if o is not None]
        if pairs:
            o, a = zip(*pairs)
            ax.plot(o, a, marker=".", label=label or None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("oracle accuracy")
    ax.grid(alpha=0.3)
    if any(_curves(history)):
        ax.legend(fontsize=8)
    ax.set_title(title)
    return _finish(fig, path)


def plot_pushforward_samples(x0, xT, mapped, image_shape, *, n: int = 8, path=None):
    """Rows: initial particles, flowed particles, push-forward of the initial ones (fig. 9)."""
    import numpy as np

    plt = _plt()
    rows = [("x_0", x0), ("x_T (flow)", xT), ("h(x_0)", mapped)]
    n = min(n, len(x0))
    fig, axes = plt.subplots(3, n, figsize=(1.2 * n, 3.8), squeeze=False)
    c = int(image_shape[0])
    for r, (name, x) in enumerate(rows):
        arr = np.asarray(x[:n].detach().cpu() if hasattr(x, "detach") else x[:n], dtype=float)
        for i in range(n):
            img = arr[i].reshape(image_shape)
            img = img[0] if c == 1 else np.clip(np.transpose(img, (1, 2, 0)), 0, 1)
            axes[r, i].imshow(img, cmap="gray" if c == 1 else None)
            axes[r, i].axis("off")
        axes[r, 0].set_title(name, fontsize=8, loc="left")
    return _finish(fig, path)
