"""tqdm bars for oracle training and push-forward fits: on a terminal only, off on request."""

import io
import sys

import pytest
import torch

from dsflow.data import LabeledData
from dsflow.models import make_oracle
from dsflow.models.pushforward import fit_pushforward
from dsflow.models.training import fit_classifier, show_progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def on_terminal(monkeypatch):
    """sys.stderr replaced by one that says it is a terminal (inside the test: pytest puts its
    own capture back on sys.stderr between fixture setup and the test call)."""
    fake = Terminal()
    monkeypatch.setattr(sys, "stderr", fake)
    return fake


def tiny():
    g = torch.Generator().manual_seed(0)
    return LabeledData(torch.randn(40, 5, generator=g), torch.arange(40) % 2, name="tiny")


def train(**kwargs):
    data = tiny()
    oracle = make_oracle("mlp", input_dim=5, image_shape=None, classes=data.classes, seed=0, hidden=[8])
    return fit_classifier(oracle, data, epochs=3, batch_size=16, device="cpu", **kwargs)


def test_oracle_training_shows_epochs_on_a_terminal(monkeypatch):
    terminal = on_terminal(monkeypatch)
    history = train()
    text = terminal.getvalue()
    assert "oracle training" in text and "0/3 " in text and len(history["loss"]) == 3


@pytest.mark.parametrize("how", ["argument", "context"])
def test_oracle_training_bar_can_be_turned_off(monkeypatch, how):
    terminal = on_terminal(monkeypatch)
    if how == "argument":
        train(progress=False)
    else:
        with show_progress(False):  # what a task does with the run's progress=false
            train()
    assert terminal.getvalue() == ""


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch):
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    train()
    fit_pushforward(torch.randn(20, 3), torch.randn(20, 3), epochs=2, restarts=1, device="cpu")
    assert plain.getvalue() == ""


def test_pushforward_bar_counts_restarts_times_epochs(monkeypatch):
    terminal = on_terminal(monkeypatch)
    x0 = torch.randn(30, 3, generator=torch.Generator().manual_seed(1))
    fit_pushforward(x0, x0 + 1, epochs=2, restarts=2, device="cpu")
    text = terminal.getvalue()
    assert "push-forward fit" in text and "0/4 " in text  # total = restarts x epochs
    before = len(text)
    fit_pushforward(x0, x0 + 1, epochs=2, restarts=2, device="cpu", progress=False)
    assert len(terminal.getvalue()) == before


def test_bars_do_not_change_the_result(monkeypatch):
    on_terminal(monkeypatch)
    with_bar = train()
    without = train(progress=False)
    assert with_bar == without  # same seed, same epochs: the bar only reports
