"""Evaluating (frozen) classifiers on datasets or particles, and monitoring flows.

A *classifier* here is anything with ``predict_proba(x) -> (n, k)`` and ``classes`` (the
label values of the k columns): an `Oracle`, or an oracle composed with a
class-correspondence layer (`ComposedClassifier`).  Everything runs batched and without
gradients; label sets of data and classifier may differ (the confusion matrix is then
rectangular: rows are the data's classes, columns the classifier's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dsflow.data.container import LabeledData
# predictions and accuracy of any classifier live with the models (re-exported here)
from dsflow.models.evaluation import _xy, accuracy, predict  # noqa: F401


def confusion_matrix(y_true, y_pred, true_classes=None, pred_classes=None):
    """Counts ``C[i, j] = #{y_true == true_classes[i] and y_pred == pred_classes[j]}``.

    Labels outside the given class lists are an error.  Returns ``(C, true_classes,
    pred_classes)`` with ``C`` int64 and the class lists sorted int64 tensors.
    """
    y_true = torch.as_tensor(y_true).detach().cpu().long().flatten()
    y_pred = torch.as_tensor(y_pred).detach().cpu().long().flatten()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.numel()} labels but y_pred has {y_pred.numel()}")
    tc = torch.unique(y_true) if true_classes is None else torch.as_tensor(true_classes).cpu().long().flatten()
    pc = torch.unique(y_pred) if pred_classes is None else torch.as_tensor(pred_classes).cpu().long().flatten()
    tc, pc = torch.sort(tc).values, torch.sort(pc).values
    ti, pi = _positions(tc, y_true, "y_true"), _positions(pc, y_pred, "y_pred")
    counts = torch.bincount(ti * pc.numel() + pi, minlength=tc.numel() * pc.numel())
    return counts.reshape(tc.numel(), pc.numel()), tc, pc


def _positions(classes, values, what):
    """Row of every label in the sorted ``classes`` (`dsflow.ot.class_stats.class_index`)."""
    from dsflow.ot.class_stats import class_index

    return class_index(values, classes, what=what, fix="evaluate against classes that include every label value")[1]


@dataclass
class Evaluation:
    """Accuracy, per-class accuracy (recall) and confusion matrix of one evaluation."""

    accuracy: float
    per_class_accuracy: dict[int, float]
    confusion: Any  # (k_true, k_pred) int64 tensor
    true_classes: list[int]
    pred_classes: list[int]
    n: int
    names: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for loggers: ``{prefix}accuracy`` and ``{prefix}accuracy/<class>``."""
        out = {f"{prefix}accuracy": self.accuracy}
        out.update({f"{prefix}accuracy/{c}": a for c, a in self.per_class_accuracy.items()})
        return out


@torch.no_grad()
def evaluate(classifier, data, y=None, *, batch_size: int = 1024) -> Evaluation:
    """Evaluate ``classifier`` on a `LabeledData` (or ``x`` with labels ``y``).

    ``accuracy`` is the fraction of samples whose predicted label *value* equals the
    true one; ``per_class_accuracy[c]`` the same restricted to true class ``c``;
    ``confusion`` has the data's classes as rows and the classifier's as columns.
    """
    x, y = _xy(data, y)
    y = torch.as_tensor(y).detach().cpu().long()
    pred = predict(classifier, x, batch_size)
    true_classes = torch.unique(y)
    pred_classes = torch.unique(torch.cat([classifier.classes.detach().cpu().long(), pred]))
    conf, tc, pc = confusion_matrix(y, pred, true_classes, pred_classes)
    correct = pred == y
    counts = conf.sum(1)
    # per-class correct counts, vectorised via the position of each sample's class
    per_correct = torch.bincount(_positions(tc, y, "y"), weights=correct.double(), minlength=tc.numel())
    per_class = {int(c): float(per_correct[i] / counts[i]) for i, c in enumerate(tc.tolist())}
    names = {}
    if isinstance(data, LabeledData):
        names["true"] = [data.class_name(c) for c in tc.tolist()]
    return Evaluation(
        accuracy=float(correct.double().mean()), per_class_accuracy=per_class, confusion=conf,
        true_classes=tc.tolist(), pred_classes=pc.tolist(), n=int(y.numel()), names=names,
    )


class OracleMonitor:
    """Flow callback recording a frozen classifier's accuracy on the particles.

    Use as ``run_flow(..., callbacks=[OracleMonitor(oracle, every=10)])``; the engine calls
    ``cb(step, record, state)`` after each update.  Every ``every`` updates (and after the
    ``final_step``-th, when given) it evaluates the
    classifier on ``state.x`` against the *true* labels and writes ``record[key]`` (and
    ``record[f"{key}/<class>"]`` when ``per_class``).  True labels are, in order of
    preference: ``labels`` given here (e.g. the real labels of pseudo-labelled data),
    ``state.template.y`` (the dataset the particles started from), ``state.y``.

    The monitor keeps its own ``history`` (lists ``step``, ``accuracy`` and ``objective``
    when the record has one under ``objective_key``) for the figure-6/11 plots.  Each
    objective is F at the same particles as its accuracy: F(x_t) comes with the record of
    step t (evaluated before that update), and after the last step from
    `set_final_objective` (the app's ``objective_after``).
    """

    def __init__(self, oracle, every: int = 1, *, labels=None, key: str = "accuracy", per_class: bool = False,
                 batch_size: int = 1024, objective_key: str | None = None, final_step: int | None = None):
        if every is None or int(every) < 1:
            raise ValueError(f"OracleMonitor: every must be a positive number of steps, got {every}")
        self.oracle = oracle
        self.every = int(every)
        self.labels = None if labels is None else torch.as_tensor(labels).detach().cpu().long()
        self.key = key
        self.per_class = per_class
        self.batch_size = batch_size
        self.objective_key = objective_key
        self.final_step = final_step
        self.history: dict[str, list] = {"step": [], "accuracy": [], "objective": []}

    def _true_labels(self, state):
        if self.labels is not None:
            y = self.labels
        elif getattr(state, "template", None) is not None and state.template.n == state.n:
            y = state.template.y
        else:
            y = state.y
        if y.shape[0] != state.x.shape[0]:
            raise ValueError(f"OracleMonitor: {y.shape[0]} true labels for {state.x.shape[0]} particles")
        return y

    def _objective(self, record):
        keys = [self.objective_key] if self.objective_key else ["objective", "total", "loss", "value"]
        for k in keys:
            if k in record:
                try:
                    return float(record[k])
                except (TypeError, ValueError):
                    return None
        return None

    def evaluate_state(self, state, step: int, record: dict | None = None) -> Evaluation:
        """Evaluate now (e.g. before the flow, ``step=0``) and store the result."""
        ev = evaluate(self.oracle, state.x.detach(), self._true_labels(state), batch_size=self.batch_size)
        if record is not None:
            record[self.key] = ev.accuracy
            if self.per_class:
                record.update({f"{self.key}/{c}": a for c, a in ev.per_class_accuracy.items()})
        self.history["step"].append(int(step))
        self.history["accuracy"].append(ev.accuracy)
        # the objective at this state arrives with the next step's record (see __call__);
        # after the last step it is the final objective (`set_final_objective`)
        self.history["objective"].append(None)
        self.last = ev
        return ev

    def set_final_objective(self, value, step: int) -> None:
        """The objective at the final state (``objective_after``), for the last evaluation
        when it was made after ``step`` updates (no later record carries it)."""
        hist = self.history
        if hist["step"] and hist["step"][-1] == int(step) and hist["objective"][-1] is None and value is not None:
            hist["objective"][-1] = float(value)

    def __call__(self, step: int, record: dict, state) -> None:
        # The engine calls back after the update of step `step` (0-based): the particles have
        # then moved `state.step` (= step + 1) times; that count is what the history records.
        # The record's objective is F at the state *before* this update (x_step): it belongs to
        # the accuracy measured after `step` updates, not to the one measured now.
        hist = self.history
        if hist["step"] and hist["step"][-1] == int(step) and hist["objective"][-1] is None:
            hist["objective"][-1] = self._objective(record)
        done = int(getattr(state, "step", step + 1) or step + 1)
        if done % self.every != 0 and done != self.final_step:
            return None
        self.evaluate_state(state, done, record)
        return None
