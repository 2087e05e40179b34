"""Plots that read right (issue 9, section 6): the confusion matrix's diagonal is the correct
cells with the same class names on both axes; objective.png ends at the final objective, with
integer step ticks and the functional's name on the y axis."""

import numpy as np
import torch

from dsflow.oracle.evaluation import Evaluation


def _evaluation():
    # true classes 3 and 7; the classifier also predicts 0; 3 -> 3 (4x), 3 -> 0 (1x), 7 -> 7 (5x)
    conf = torch.tensor([[1, 4, 0], [0, 0, 5]])
    return Evaluation(accuracy=0.9, per_class_accuracy={3: 0.8, 7: 1.0}, confusion=conf, true_classes=[3, 7],
                      pred_classes=[0, 3, 7], n=10, names={"true": ["three", "seven"]})


def test_confusion_diagonal_is_the_correct_cells_and_axes_share_names(tmp_path):
    from dsflow.plotting.oracle import confusion_layout, plot_confusion_matrix

    mat, rows, cols = confusion_layout(_evaluation(), pred_origin={3: "oracle 5"})
    assert rows == ["three", "seven"] and cols == ["three (oracle 5)", "seven", "0"]
    np.testing.assert_array_equal(mat, [[4, 0, 1], [0, 5, 0]])  # counts: exact
    assert np.trace(mat) == 9  # the correct predictions, 0.9 x 10
    fig = plot_confusion_matrix(_evaluation())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["three", "seven"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["three", "seven", "0"]  # was 0, 3, 7: indices


def test_objective_plot_ends_at_the_final_objective_with_integer_ticks(monkeypatch, tmp_path):
    from dsflow.plotting import core

    figures = []
    monkeypatch.setattr(core, "_save", lambda fig, path: figures.append(fig) or path)
    records = [{"step": t, "objective": 10.0 - t, "parts": {"otdd": 10.0 - t}} for t in range(3)]
    core.plot_objective(records, tmp_path / "o.png", final=(3, 6.5), ylabel="OTDD²")
    ax = figures[0].axes[0]
    xs, ys = ax.lines[0].get_data()
    assert list(xs) == [0, 1, 2, 3] and ys[-1] == 6.5  # the last point is F at the final particles
    assert ax.get_ylabel() == "OTDD²"
    ticks = [t for t in ax.get_xticks() if 0 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_run_objective_plot_uses_objective_after_and_the_functional_label(monkeypatch, tmp_path):
    from hydra import compose, initialize_config_module

    from dsflow.app import run
    from dsflow.plotting import core

    captured = {}
    original = core.plot_objective

    def spy(records, path, **kw):
        captured.update(kw, records=list(records))
        return original(records, path, **kw)

    monkeypatch.setattr(core, "plot_objective", spy)
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "dataset@source=gaussians", "dataset@target=moons", "source.n_per_class=10", "target.n_samples=30",
            "steps=3", "optimizer.lr=10", "progress=false", "logger=none"])
    summary = run(cfg, run_dir=tmp_path)
    assert captured["final"] == (3, summary["objective_after"]) and captured["ylabel"] == "OTDD²"
    assert [r["step"] for r in captured["records"]] == [0, 1, 2]  # F before each update: one short
