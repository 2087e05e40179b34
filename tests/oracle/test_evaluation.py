import numpy as np
import pytest
import torch

from dsflow.data.container import LabeledData
from dsflow.flow.state import ParticleState
from dsflow.oracle import OracleMonitor, accuracy, confusion_matrix, evaluate
from dsflow.models.networks import Oracle


@pytest.fixture
def linear_oracle():
    """A toy linear classifier on 2-D points with non-contiguous classes {3, 7, 9}."""
    net = torch.nn.Linear(2, 3)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        net.bias.zero_()
    return Oracle(net, input_dim=2, classes=[3, 7, 9]).freeze()


def test_evaluation_matches_hand_computation(linear_oracle):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=gen)
    y = torch.tensor([3, 7, 9, 5])[torch.randint(0, 4, (200,), generator=gen)]  # label 5: never predicted
    scores = x.numpy() @ np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]).T
    pred = np.array([3, 7, 9])[scores.argmax(1)]
    ev = evaluate(linear_oracle, x, y)
    yn = y.numpy()
    assert ev.accuracy == pytest.approx(float((pred == yn).mean()), abs=1e-12)
    for c in (3, 5, 7, 9):
        assert ev.per_class_accuracy[c] == pytest.approx(float((pred[yn == c] == c).mean()), abs=1e-12)
    from sklearn.metrics import confusion_matrix as sk_confusion

    labels = [3, 5, 7, 9]
    assert ev.true_classes == labels and ev.pred_classes == [3, 7, 9]
    expected = sk_confusion(yn, pred, labels=labels)[:, [0, 2, 3]]
    assert np.array_equal(ev.confusion.numpy(), expected)
    assert accuracy(linear_oracle, LabeledData(x=x, y=y)) == ev.accuracy


def test_batched_equals_unbatched(digits_oracle, digits_split):
    _, test = digits_split
    a = evaluate(digits_oracle, test, batch_size=7)
    b = evaluate(digits_oracle, test, batch_size=10_000)
    assert a.accuracy == b.accuracy and torch.equal(a.confusion, b.confusion)


def test_confusion_matrix_rejects_unknown_labels():
    with pytest.raises(ValueError, match="not in classes"):
        confusion_matrix([0, 1, 2], [0, 1, 1], true_classes=[0, 1])
    with pytest.raises(ValueError, match="3 labels but y_pred has 2"):
        confusion_matrix([0, 1, 2], [0, 1])


def test_evaluation_runs_without_grad(linear_oracle):
    x = torch.randn(5, 2, requires_grad=True)
    ev = evaluate(linear_oracle, x, torch.tensor([3, 3, 7, 9, 9]))
    assert x.grad is None and 0.0 <= ev.accuracy <= 1.0


def test_monitor_records_every_k_steps(linear_oracle):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(60, 2, generator=gen)
    true_y = torch.tensor([3, 7, 9])[torch.randint(0, 3, (60,), generator=gen)]
    state = ParticleState(x=x.clone(), y=torch.zeros(60, dtype=torch.long))  # e.g. pseudo-labels
    monitor = OracleMonitor(linear_oracle, every=3, labels=true_y, final_step=7)
    records = []
    targets = linear_oracle.network.weight[torch.searchsorted(linear_oracle.classes, true_y)]
    for step in range(7):  # engine contract: called after update `step`, state.step = step + 1
        state.x = state.x + 0.3 * targets  # move every particle towards its class direction
        state.step = step + 1
        record = {"step": step, "objective": float(10 - step)}
        monitor(step, record, state)
        records.append(record)
    assert monitor.history["step"] == [3, 6, 7]
    assert [("accuracy" in r) for r in records] == [False, False, True, False, False, True, True]
    assert records[2]["accuracy"] == pytest.approx(accuracy(linear_oracle, x + 0.9 * targets, true_y))
    # each objective is F at the particles its accuracy was measured on: F(x_3) is the record
    # of step 3 (evaluated before update 3), not of step 2; after the last step it is the
    # final objective (objective_after), which no record carries (was [8, 5, 4]: one step early)
    assert monitor.history["objective"] == [7.0, 4.0, None]
    monitor.set_final_objective(3.0, 7)
    assert monitor.history["objective"] == [7.0, 4.0, 3.0]
    before = OracleMonitor(linear_oracle, every=3, labels=true_y)
    before.evaluate_state(ParticleState(x=x.clone(), y=state.y), 0)  # before the flow: F(x_0) is step 0's
    before(0, {"step": 0, "objective": 10.0}, state)
    assert before.history["step"] == [0] and before.history["objective"] == [10.0]
    assert monitor.history["accuracy"][-1] >= monitor.history["accuracy"][0]
    with pytest.raises(ValueError, match="every"):
        OracleMonitor(linear_oracle, every=0)


def test_monitor_defaults_to_template_labels(linear_oracle):
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0]])
    template = LabeledData(x=x, y=[3, 7, 9])
    state = ParticleState(x=x.clone(), y=torch.tensor([0, 0, 0]), template=template, step=1)
    monitor = OracleMonitor(linear_oracle, every=1)
    rec = {}
    monitor(0, rec, state)
    assert rec["accuracy"] == 1.0  # exact: a ratio of counts, 3/3


def test_plots_are_written(digits_oracle, digits_split, tmp_path):
    from dsflow.plotting.oracle import (
        plot_accuracy_curve,
        plot_confusion_matrix,
        plot_objective_vs_accuracy,
        plot_pushforward_samples,
    )

    _, test = digits_split
    ev = evaluate(digits_oracle, test)
    hist = {"step": [0, 5, 10], "accuracy": [0.1, 0.5, 0.9], "objective": [3.0, 2.0, None]}
    paths = [
        plot_confusion_matrix(ev, path=tmp_path / "c.png") and tmp_path / "c.png",
        plot_accuracy_curve({"lr=1": hist, "lr=2": hist}, path=tmp_path / "a.png") and tmp_path / "a.png",
        plot_objective_vs_accuracy(hist, path=tmp_path / "o.png") and tmp_path / "o.png",
        plot_pushforward_samples(test.x, test.x, test.x, (1, 8, 8), n=4, path=tmp_path / "p.png") and tmp_path / "p.png",
    ]
    for p in paths:
        assert p.stat().st_size > 1000
