"""Test-wide settings: no network, no files outside tmp dirs, headless plots; the tiny digits
data and one trained MLP shared by the model, oracle and task tests (trained once per session)."""

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """wandb offline with every directory in a temp dir; matplotlib headless.

    Session-wide so subprocesses started by tests inherit it too.
    """
    base = tmp_path_factory.mktemp("env")
    saved = dict(os.environ)
    os.environ.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(base / "wandb"),
        WANDB_CACHE_DIR=str(base / "wandb-cache"),
        WANDB_DATA_DIR=str(base / "wandb-data"),
        WANDB_CONFIG_DIR=str(base / "wandb-config"),
        MPLBACKEND="Agg",
        MPLCONFIGDIR=str(base / "mpl"),
    )
    os.environ.pop("HYDRA_FULL_ERROR", None)
    yield
    os.environ.clear()
    os.environ.update(saved)


#: test folders of tiny models (oracles, push-forward maps, tasks that train them)
SMALL_MODEL_TESTS = ("models", "oracle", "tasks")


@pytest.fixture(autouse=True, scope="module")
def _one_thread_for_small_models(request):
    """Tiny models on one intra-op thread: it avoids oversubscription on a busy 2-core machine
    (measured 20x faster); the previous setting is restored after the module."""
    if request.path.parent.name not in SMALL_MODEL_TESTS:
        yield
        return
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
    from dsflow.data.common import stratified_split

    tr, te = stratified_split(digits_data.y, 0.25, seed=0)
    return digits_data.subset(tr), digits_data.subset(te)


@pytest.fixture(scope="session")
def digits_oracle(digits_split, tmp_path_factory):
    from dsflow.models import get_oracle

    train, _ = digits_split
    return get_oracle("mlp", train=train, epochs=10, batch_size=64, seed=0, val_fraction=0.1,
                      cache_dir=tmp_path_factory.mktemp("oracle-cache"), device="cpu")
