"""Real datasets read from tiny files in their real on-disk formats (see conftest.py writers)."""

import sys
import types

import numpy as np
import pytest
import torch

import dsflow.data as D


def assert_matches_raw(data, raw, *, scale=255.0, atol=1e-7):
    """Loaded samples equal the raw uint8 images / 255 and labels at ``meta['indices']``."""
    idx = np.asarray(data.meta["indices"])
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
    assert data.image_shape == tuple(raw.images.shape[1:])
    np.testing.assert_allclose(data.images().numpy(), raw.images[idx] / scale, rtol=0, atol=atol)
    np.testing.assert_array_equal(data.y.numpy(), raw.labels[idx])
    assert 0.0 <= float(data.x.min()) and float(data.x.max()) <= 1.0


# ---------------------------------------------------------------------------- MNIST family
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_mnist_family_gz_idx(tmp_path, writers, name, folder):
    raw = writers.idx_dataset(tmp_path, folder, "train", n=40)
    data = D.load_dataset(name, root=tmp_path)
    assert data.n == 40 and data.num_classes == 10 and data.name == name
    assert_matches_raw(data, raw)
    assert len(data.class_names) == 10 and data.meta["split"] == "train"


def test_mnist_uncompressed_test_split_only_and_subsampling(tmp_path, writers):
    raw = writers.idx_dataset(tmp_path, "MNIST", "t10k", n=50, gz=False)  # the root holds only the test split
    data = D.mnist(root=tmp_path, split="test", n_per_class=3, seed=1)
    assert data.n == 30 and bool((data.class_counts() == 3).all())
    assert_matches_raw(data, raw)
    again = D.mnist(root=tmp_path, split="test", n_per_class=3, seed=1)
    assert again.meta["indices"] == data.meta["indices"]
    subset = D.mnist(root=tmp_path, split="test", classes=[3, 8], max_samples=6, seed=0)
    assert subset.n == 6 and set(subset.y.tolist()) <= {3, 8}
    with pytest.raises(FileNotFoundError) as err:
        D.mnist(root=tmp_path, split="train")
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte") in message
    assert "download=true" in message


def test_rows_split_one_file_into_disjoint_contiguous_parts(tmp_path, writers):
    """``rows`` keeps a fixed range of the file (oracle on test 0-4999, flow toward 5000-9999)."""
    raw = writers.idx_dataset(tmp_path, "MNIST", "t10k", n=50)
    first = D.mnist(root=tmp_path, split="test", rows=[0, 20])
    rest = D.mnist(root=tmp_path, split="test", rows=[20, None])
    assert first.meta["indices"] == list(range(20)) and rest.meta["indices"] == list(range(20, 50))
    assert_matches_raw(rest, raw)
    # selection options act inside the range only
    inside = D.mnist(root=tmp_path, split="test", rows=[20, 50], max_samples=10, seed=0)
    assert inside.n == 10 and min(inside.meta["indices"]) >= 20
    for bad in ([5, 5], [0, 51], [-1, 3], [1], "0:5", ["a", 3]):
        with pytest.raises(ValueError, match=r"mnist: rows"):
            D.mnist(root=tmp_path, split="test", rows=bad)


def test_mnist_resize_channels_normalize(tmp_path, writers):
    raw = writers.idx_dataset(tmp_path, "MNIST", "train", n=20)
    data = D.mnist(root=tmp_path, resize=32, channels=3, normalize={"mean": [0.5, 0.5, 0.5], "std": [0.25]})
    assert data.image_shape == (3, 32, 32)
    plain = D.mnist(root=tmp_path, resize=32)
    imgs = data.images()
    torch.testing.assert_close(imgs[:, 0], imgs[:, 2])  # grey -> RGB copies the channel
    torch.testing.assert_close(imgs[:, :1] * 0.25 + 0.5, plain.images(), rtol=0, atol=1e-6)
    assert data.meta["normalize"] == {"mean": [0.5, 0.5, 0.5], "std": [0.25]}
    with pytest.raises(ValueError, match="normalize.mean has 2 values but the images have 1 channels"):
        D.mnist(root=tmp_path, normalize={"mean": [0.1, 0.2], "std": [1.0]})
    with pytest.raises(ValueError, match="channels must be 1, 3 or null"):
        D.mnist(root=tmp_path, channels=2)
    with pytest.raises(ValueError, match="resize: size must be a positive int"):
        D.mnist(root=tmp_path, resize="big")
    with pytest.raises(ValueError, match="split must be one of \\['train', 'test'\\]"):
        D.mnist(root=tmp_path, split="valid")
    assert raw.images.shape == (20, 1, 28, 28)


def test_root_from_environment(tmp_path, writers, monkeypatch):
    raw = writers.idx_dataset(tmp_path, "KMNIST", "train", n=10)
    monkeypatch.setenv("DSFLOW_DATA", str(tmp_path))
    assert_matches_raw(D.kmnist(), raw)


def test_download_is_delegated_to_torchvision(tmp_path, writers, monkeypatch):
    calls = []

    class FakeMNIST:  # stands in for torchvision.datasets.MNIST: "downloads" by writing the files
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            writers.idx_dataset(tmp_path, "MNIST", "train", n=10)

    fake = types.ModuleType("torchvision.datasets")
    fake.MNIST = FakeMNIST
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake)
    import torchvision

    monkeypatch.setattr(torchvision, "datasets", fake, raising=False)
    data = D.mnist(root=tmp_path, download=True)
    assert calls == [(str(tmp_path), True, True)] and data.n == 10
    D.mnist(root=tmp_path, download=True)  # files now present: no second download
    assert len(calls) == 1


def test_emnist_letters_labels_and_transpose(tmp_path, writers):
    raw = writers.idx_dataset(tmp_path, "EMNIST", "emnist-letters-train", n=52, n_classes=26, offset=1)
    data = D.emnist(root=tmp_path, transpose=False)
    assert data.classes.tolist() == list(range(26))  # raw 1..26 -> 0..25
    np.testing.assert_array_equal(data.y.numpy(), raw.labels[data.meta["indices"]] - 1)
    assert data.class_name(0) == "a" and data.class_name(25) == "z"
    np.testing.assert_allclose(data.images().numpy(), raw.images / 255.0, atol=1e-7)
    raw_labels = D.emnist(root=tmp_path, zero_based_labels=False)
    assert raw_labels.classes.tolist() == list(range(1, 27)) and raw_labels.class_name(1) == "a"
    upright = D.emnist(root=tmp_path)  # default: undo the raw transposition
    np.testing.assert_allclose(upright.images().numpy(), raw.images.transpose(0, 1, 3, 2) / 255.0, atol=1e-7)
    picked = D.emnist(root=tmp_path, classes=[0, 25], n_per_class=2, seed=0)
    assert picked.names == ["a", "z"] and picked.n == 4
    with pytest.raises(FileNotFoundError, match="emnist-letters-test-images-idx3-ubyte"):
        D.emnist(root=tmp_path, split="test")
    with pytest.raises(ValueError, match="subset must be one of"):
        D.emnist(root=tmp_path, subset="kanji")


def test_corrupt_idx_is_reported(tmp_path, writers):
    raw_dir = tmp_path / "MNIST" / "raw"
    writers.idx(raw_dir / "train-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8), gz=False)
    (raw_dir / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04rubbish")
    with pytest.raises(ValueError, match="not an IDX file"):
        D.mnist(root=tmp_path)


# ---------------------------------------------------------------------------- USPS
def test_usps_libsvm_bz2(tmp_path, writers):
    raw = writers.usps(tmp_path, n=30)
    writers.usps(tmp_path, "usps.t.bz2", n=20, seed=1)
    data = D.usps(root=tmp_path, resize=None)
    assert data.n == 30 and data.image_shape == (1, 16, 16) and data.classes.tolist() == list(range(10))
    assert_matches_raw(data, raw, scale=1.0, atol=1e-6)
    test = D.usps(root=tmp_path, split="test", resize=28, n_per_class=2, seed=0)
    assert test.image_shape == (1, 28, 28) and test.n == 20


def test_usps_missing_lists_both_places(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        D.usps(root=tmp_path, split="test")
    assert str(tmp_path / "usps.t.bz2") in str(err.value) and str(tmp_path / "USPS" / "usps.t.bz2") in str(err.value)


def test_usps_sparse_lines(tmp_path):
    import bz2

    with bz2.open(tmp_path / "usps.bz2", "wt") as f:
        f.write("3 1:1 256:0\n1 2:-0.5\n")  # libsvm may omit entries: missing values are 0 -> 0.5
    data = D.usps(root=tmp_path)
    img = data.x.numpy()
    assert data.y.tolist() == [2, 0]
    assert img[0, 0] == 1.0 and img[1, 1] == 0.25 and np.allclose(img[0, 1:], 0.5)


# ---------------------------------------------------------------------------- CIFAR-10
def test_cifar10_pickles(tmp_path, writers):
    raw = writers.cifar10(tmp_path, "train", per_batch=12)
    data = D.cifar10(root=tmp_path)
    assert data.n == 60 and data.image_shape == (3, 32, 32)
    assert_matches_raw(data, raw)
    assert data.class_name(4) == "class4"  # from batches.meta
    grey = D.cifar10(root=tmp_path, channels=1, max_samples=5, seed=0)
    idx = grey.meta["indices"]
    luma = (raw.images[idx] / 255.0 * np.array([0.299, 0.587, 0.114])[None, :, None, None]).sum(1, keepdims=True)
    np.testing.assert_allclose(grey.images().numpy(), luma, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py/test_batch"):
        D.cifar10(root=tmp_path, split="test")


def test_cifar10_test_only_without_meta(tmp_path, writers):
    raw = writers.cifar10(tmp_path, "test", per_batch=15, with_meta=False)
    data = D.cifar10(root=tmp_path, split="test", resize=16)
    assert data.n == 15 and data.image_shape == (3, 16, 16) and data.class_name(0) == "airplane"
    assert raw.images.shape == (15, 3, 32, 32)


# ---------------------------------------------------------------------------- STL-10
def test_stl10_binaries(tmp_path, writers):
    raw = writers.stl10(tmp_path, "test", n=20)
    data = D.stl10(root=tmp_path, split="test", n_per_class=1, seed=2)
    assert data.n == 10 and data.classes.tolist() == list(range(10))
    assert_matches_raw(data, raw)
    small = D.stl10(root=tmp_path, split="test", resize=32)
    assert small.image_shape == (3, 32, 32) and small.n == 20
    # antialiased bilinear 96 -> 32 of a uint8 image stays inside [0, 1] and near the 3x3 block means
    block_means = raw.images.reshape(20, 3, 32, 3, 32, 3).mean(axis=(3, 5)) / 255.0
    assert np.abs(small.images().numpy() - block_means).mean() < 0.1
    with pytest.raises(FileNotFoundError, match="stl10_binary/train_X.bin"):
        D.stl10(root=tmp_path)


def test_stl10_size_mismatch(tmp_path, writers):
    writers.stl10(tmp_path, "train", n=4)
    (tmp_path / "stl10_binary" / "train_y.bin").write_bytes(bytes([1, 2, 3]))
    with pytest.raises(ValueError, match="expected 3 images"):
        D.stl10(root=tmp_path)


# ---------------------------------------------------------------------------- PatchCamelyon
@pytest.mark.parametrize("split", ["train", "val"])
def test_camelyon_h5(tmp_path, writers, split):
    raw = writers.pcam(tmp_path, split, n=16)
    data = D.camelyon(root=tmp_path, split=split)
    assert data.n == 16 and data.image_shape == (3, 96, 96) and data.names == ["normal", "tumor"]
    assert_matches_raw(data, raw)
    sub = D.camelyon(root=tmp_path, split=split, n_per_class=3, seed=5, resize=32)
    assert sub.n == 6 and sub.image_shape == (3, 32, 32)
    exact = D.camelyon(root=tmp_path, split=split, n_per_class=3, seed=5)
    assert_matches_raw(exact, raw)


def test_chunked_decoding_gives_the_same_result(tmp_path, writers, monkeypatch):
    import dsflow.data.common as common

    writers.pcam(tmp_path, "test", n=16)
    writers.stl10(tmp_path, "test", n=20)
    whole = [D.camelyon(root=tmp_path, split="test", resize=24, max_samples=11, seed=0),
             D.stl10(root=tmp_path, split="test", channels=1, n_per_class=2, seed=0)]
    monkeypatch.setattr(common, "DECODE_CHUNK", 3)
    chunked = [D.camelyon(root=tmp_path, split="test", resize=24, max_samples=11, seed=0),
               D.stl10(root=tmp_path, split="test", channels=1, n_per_class=2, seed=0)]
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)


def test_camelyon_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        D.camelyon(root=tmp_path, split="val")
    for suffix in ("x", "y"):
        assert str(tmp_path / "pcam" / f"camelyonpatch_level_2_split_valid_{suffix}.h5") in str(err.value)
