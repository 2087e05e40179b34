"""Channel conversion on every image loader, the npz loader included (issue 13's MNIST-M case)."""

import inspect
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import dsflow.data as D
from dsflow.data.common import config_prefix, convert_channels

DATASET_DIR = Path(str(files("dsflow.configs"))) / "dataset"
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2


def mnist_m_like(path, n=40, seed=0):
    """An .npz as a new user stores 32x32 RGB digits: (n, H, W, C) uint8 under x, labels under y."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = np.arange(n) % 10
    np.savez(path, x=x, y=y)
    return x, y


def test_convert_channels_against_the_luma_formula():
    rng = np.random.default_rng(0)
    rgb = rng.random((5, 3, 4, 6))
    grey = convert_channels(torch.from_numpy(rgb), 1).numpy()
    assert grey.shape == (5, 1, 4, 6)
    assert np.allclose(grey[:, 0], np.tensordot(LUMA, rgb, axes=([0], [1])), rtol=0, atol=1e-12)
    back = convert_channels(torch.from_numpy(grey), 3).numpy()
    assert back.shape == (5, 3, 4, 6) and all(np.array_equal(back[:, c], grey[:, 0]) for c in range(3))
    assert convert_channels(torch.from_numpy(rgb), None) is not None  # null keeps the images
    with pytest.raises(ValueError, match="cannot convert 4 channels to 3"):
        convert_channels(torch.zeros(1, 4, 2, 2), 3)


def test_channels_transform():
    data = D.digits(max_samples=20)
    rgb = D.apply_transforms(data, [{"name": "channels", "channels": 3}])
    assert rgb.image_shape == (3, 8, 8) and torch.equal(rgb.images()[:, 2], data.images()[:, 0])
    grey = D.apply_transforms(rgb, [{"name": "channels", "channels": 1}])
    assert torch.allclose(grey.x, data.x, atol=1e-6)  # the weights sum to 1
    with pytest.raises(ValueError, match="needs image data"):
        D.apply_transforms(D.moons(n_samples=10), [{"name": "channels", "channels": 1}])


def test_npz_of_rgb_digits_loads_as_3x32x32_in_unit_range_and_converts(tmp_path):
    x, y = mnist_m_like(tmp_path / "mnist_m.npz")
    data = D.npz(tmp_path / "mnist_m.npz")
    assert data.image_shape == (3, 32, 32) and data.n == 40
    assert np.array_equal(data.images().numpy(), (x.transpose(0, 3, 1, 2) / np.float32(255)).astype(np.float32))
    assert 0.0 <= float(data.x.min()) and float(data.x.max()) <= 1.0
    grey = D.npz(tmp_path / "mnist_m.npz", channels=1)
    assert grey.image_shape == (1, 32, 32)
    assert np.allclose(grey.images().numpy()[:, 0], x.astype(np.float64) @ LUMA / 255, atol=1e-6)
    small = D.npz(tmp_path / "mnist_m.npz", channels=1, resize=[28, 28], n_per_class=2, seed=3)
    assert small.image_shape == (1, 28, 28) and small.n == 20
    norm = D.npz(tmp_path / "mnist_m.npz", channels=1, normalize={"mean": [0.5], "std": [0.25]})
    assert torch.allclose(norm.x, (grey.x - 0.5) / 0.25, atol=1e-6)


def test_npz_image_options_on_flat_features_hint_works(tmp_path):
    np.savez(tmp_path / "flat.npz", x=np.random.default_rng(0).random((6, 64)), y=np.arange(6) % 2)
    with config_prefix("source"), pytest.raises(ValueError) as info:
        D.npz(tmp_path / "flat.npz", channels=3)
    message = str(info.value)
    assert "channels need image data, but 'x' holds flat features (64,) with no image_shape" in message
    assert message.split("`")[-2] == "source.image_shape=[1,8,8]"
    assert D.npz(tmp_path / "flat.npz", channels=3, image_shape=[1, 8, 8]).image_shape == (3, 8, 8)


def test_npz_missing_key_hint_works(tmp_path):
    np.savez(tmp_path / "keys.npz", images=np.zeros((4, 2, 2), np.uint8), labels=np.arange(4), names=np.zeros(2))
    for role, expected in (("x_key", "source.x_key=images"), ("y_key", "source.y_key=labels")):
        kwargs = {"x_key": "images"} if role == "y_key" else {"y_key": "labels"}
        with config_prefix("source"), pytest.raises(ValueError) as info:
            D.npz(tmp_path / "keys.npz", **kwargs)
        assert str(info.value).split("`")[-2] == expected
    assert D.npz(tmp_path / "keys.npz", x_key="images", y_key="labels").image_shape == (1, 2, 2)


IMAGE_LOADERS = ("digits", "digits_rotated", "npz", "image_folder", "csv", "mnist", "usps", "fashion_mnist", "kmnist",
                 "emnist", "cifar10", "stl10", "camelyon")


@pytest.mark.parametrize("name", IMAGE_LOADERS)
def test_every_image_loader_takes_channels_resize_and_normalize(name):
    cfg = OmegaConf.load(DATASET_DIR / f"{name}.yaml")
    loader = getattr(D, cfg._target_.rsplit(".", 1)[1])
    params = inspect.signature(loader).parameters
    for key in ("channels", "resize", "normalize"):
        assert key in cfg and key in params, f"{name}: no {key} option"


def test_oracle_training_data_hints_name_oracle_train(tmp_path, writers):
    from hydra.errors import InstantiationException

    from dsflow.models.training import load_training_data

    cfg = {"_target_": "dsflow.data.mnist", "root": str(tmp_path / "empty")}
    with pytest.raises(InstantiationException, match=r"oracle.train.root=/path/to/data.*oracle.train.download=true"):
        load_training_data(cfg)
    writers.idx_dataset(tmp_path / "files", "MNIST", "train", n=20)
    assert load_training_data({**cfg, "root": str(tmp_path / "files")}).n == 20  # what oracle.train.root=... sets
