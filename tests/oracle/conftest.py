"""Shared tiny data and one trained MLP oracle for the oracle tests (trained once per session)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The oracle tests use tiny models: one intra-op thread avoids oversubscription on a
    busy 2-core machine (measured 20x faster); the previous setting is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_data():
    from sklearn.datasets import load_digits

    from dsflow.data.container import LabeledData

    x, y = load_digits(return_X_y=True)
    return LabeledData(x=torch.tensor(x / 16.0, dtype=torch.float32), y=y, image_shape=(1, 8, 8), name="digits")


@pytest.fixture(scope="session")
def digits_split(digits_data):
    from dsflow.oracle import stratified_split

    tr, te = stratified_split(digits_data.y, 0.25, seed=0)
    return digits_data.subset(tr), digits_data.subset(te)


@pytest.fixture(scope="session")
def digits_oracle(digits_split, tmp_path_factory):
    from dsflow.oracle import get_oracle

    train, _ = digits_split
    return get_oracle("mlp", train=train, epochs=10, batch_size=64, seed=0, val_fraction=0.1,
                      cache_dir=tmp_path_factory.mktemp("oracle-cache"), device="cpu")
