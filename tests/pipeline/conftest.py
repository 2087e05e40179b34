"""Tiny fake *NIST / CIFAR-10 / STL-10 / PCam files in their real on-disk formats and a
helper composing the re-purposing experiments on them (few steps, tiny sizes)."""

import importlib.util
from pathlib import Path

import pytest
import torch

_WRITERS = Path(__file__).parents[1] / "data" / "conftest.py"


def _load_writers():
    # the format writers live in tests/data/conftest.py (independent of dsflow's readers)
    spec = importlib.util.spec_from_file_location("dsflow_test_data_writers", _WRITERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


writers = _load_writers()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread avoids oversubscription on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def nist_root(tmp_path_factory):
    """MNIST (target + oracle training), USPS, KMNIST and EMNIST letters, 28x28 (USPS 16x16)."""
    root = tmp_path_factory.mktemp("nist")
    for split, prefix in (("train", "train"), ("test", "t10k")):
        writers.make_idx_dataset(root, "MNIST", prefix, n=60, seed=1 if split == "train" else 2)
        writers.make_idx_dataset(root, "KMNIST", prefix, n=40, seed=3 if split == "train" else 4)
    for split in ("train", "test"):
        writers.make_idx_dataset(root, "EMNIST", f"emnist-letters-{split}", n=52, n_classes=26, offset=1,
                                 seed=5 if split == "train" else 6)
    writers.make_usps(root, "usps.bz2", n=40, seed=7)
    writers.make_usps(root, "usps.t.bz2", n=30, seed=8)
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory):
    """CIFAR-10 (5 batches x 12), STL-10 (40 train) and PCam (24) files."""
    root = tmp_path_factory.mktemp("cifar")
    writers.make_cifar10(root, "train", per_batch=12, seed=1)
    writers.make_cifar10(root, "test", per_batch=6, seed=2)
    writers.make_stl10(root, "train", n=40, seed=3)
    writers.make_stl10(root, "test", n=20, seed=4)
    writers.make_pcam(root, "train", n=24, seed=5)
    writers.make_pcam(root, "test", n=24, seed=6)
    return root
