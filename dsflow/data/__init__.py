"""Datasets as `LabeledData`: embedded, synthetic, user files (npz, image folders, CSV) and torchvision sets.

Every loader is a plain function returning a CPU float32 :class:`LabeledData`; dataset
configs (``configs/dataset/*.yaml``) name one as ``_target_`` and list its keyword
arguments.  :func:`load_dataset` finds a loader by name.  Heavy libraries (torch,
scikit-learn, h5py, torchvision) are imported inside the loaders.
"""

from __future__ import annotations

from typing import Any, Callable

from dsflow.data.container import LabeledData
from dsflow.data.embedded import digits, npz
from dsflow.data.files import image_folder, pixel_csv
from dsflow.data.synthetic import gaussians, moons, rings, swissroll
from dsflow.data.transforms import TRANSFORMS, apply_transforms, register_transform
from dsflow.data.vision import camelyon, cifar10, emnist, fashion_mnist, kmnist, mnist, stl10, usps

LOADERS: dict[str, Callable[..., LabeledData]] = {
    "digits": digits,
    "gaussians": gaussians,
    "swissroll": swissroll,
    "moons": moons,
    "rings": rings,
    "npz": npz,
    "image_folder": image_folder,
    "csv": pixel_csv,
    "mnist": mnist,
    "usps": usps,
    "fashion_mnist": fashion_mnist,
    "kmnist": kmnist,
    "emnist": emnist,
    "cifar10": cifar10,
    "stl10": stl10,
    "camelyon": camelyon,
}


def load_dataset(name: str, **options: Any) -> LabeledData:
    """Load dataset ``name`` (a key of :data:`LOADERS`) with the loader's keyword ``options``."""
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {sorted(LOADERS)}")
    return LOADERS[name](**options)


__all__ = [
    "LOADERS",
    "LabeledData",
    "TRANSFORMS",
    "apply_transforms",
    "camelyon",
    "cifar10",
    "digits",
    "emnist",
    "fashion_mnist",
    "gaussians",
    "image_folder",
    "kmnist",
    "load_dataset",
    "mnist",
    "moons",
    "npz",
    "pixel_csv",
    "register_transform",
    "rings",
    "stl10",
    "swissroll",
    "usps",
]
