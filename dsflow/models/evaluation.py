"""Predictions and accuracy of any classifier (an `Oracle` or anything with ``predict_proba``
and ``classes``).

Here, below `dsflow.oracle`, because training (validation accuracy) and the push-forward
report need them too, and the models must not import the oracle library built on them.
`dsflow.oracle.evaluation` re-exports both and adds confusion matrices and the monitor.
"""

from __future__ import annotations

import torch

from dsflow.data.container import LabeledData


def _xy(data, y=None):
    if isinstance(data, LabeledData):
        if y is not None:
            raise ValueError("pass either a LabeledData or (x, y), not both")
        return data.x, data.y
    if hasattr(data, "x") and hasattr(data, "y") and y is None:  # e.g. a ParticleState
        return data.x, data.y
    if y is None:
        raise ValueError("evaluation needs true labels: pass a LabeledData or a tensor x with labels y")
    x, y = torch.as_tensor(data), torch.as_tensor(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]} labels")
    return x, y


@torch.no_grad()
def predict(classifier, x, batch_size: int = 1024):
    """Predicted label values (int64, CPU) of ``classifier`` on rows ``x``, batched."""
    x = torch.as_tensor(x).detach()
    proba = classifier.predict_proba(x, batch_size=batch_size)
    return classifier.classes.detach().cpu()[proba.argmax(1).cpu()]


def accuracy(classifier, data, y=None, *, batch_size: int = 1024) -> float:
    """Fraction of correctly classified samples (label values compared)."""
    x, y = _xy(data, y)
    pred = predict(classifier, x, batch_size)
    return float((pred == torch.as_tensor(y).detach().cpu().long()).double().mean())
