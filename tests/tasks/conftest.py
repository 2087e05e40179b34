"""The task tests run tiny models on one thread (the data and the trained MLP: tests/conftest.py)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The task tests use tiny models: one intra-op thread avoids oversubscription on a
    busy 2-core machine (measured 20x faster); the previous setting is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
