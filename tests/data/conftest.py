"""Writers of tiny dataset files in each dataset's real on-disk format.

They are written from the format specifications with ``struct`` / ``pickle`` / ``bz2`` /
``h5py`` directly, independently of the readers in ``dsflow.data.vision``, and return the
raw ``uint8`` images (N, C, H, W) and labels that the loaders must reproduce.
"""

from __future__ import annotations

import bz2
import gzip
import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray, *, gz: bool = True) -> Path:
    """IDX: 0, 0, type code 0x08 (uint8), ndim, big-endian uint32 dims, raw bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def _balanced_labels(n: int, n_classes: int, rng, offset: int = 0) -> np.ndarray:
    labels = np.arange(n) % n_classes + offset
    return rng.permutation(labels).astype(np.uint8)


def make_idx_dataset(root: Path, folder: str, prefix: str, *, n=40, n_classes=10, size=28, offset=0, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    labels = _balanced_labels(n, n_classes, rng, offset)
    raw = root / folder / "raw"
    write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz=gz)
    write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
    return SimpleNamespace(images=images[:, None], labels=labels.astype(np.int64))


def make_usps(root: Path, filename: str = "usps.bz2", *, n=30, seed=0):
    """libsvm lines ``label 1:v 2:v ... 256:v`` with labels 1..10 and values in [-1, 1]."""
    rng = np.random.default_rng(seed)
    levels = rng.integers(0, 256, size=(n, 256))
    values = levels / 127.5 - 1.0  # exactly representable steps of the [-1, 1] range
    labels = _balanced_labels(n, 10, rng, offset=1).astype(np.int64)
    lines = []
    for label, row in zip(labels, values):
        lines.append(f"{label} " + " ".join(f"{j + 1}:{v:.9f}" for j, v in enumerate(row)))
    path = root / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    with bz2.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return SimpleNamespace(images=((values + 1) / 2).reshape(n, 1, 16, 16), labels=labels - 1)


def make_cifar10(root: Path, split: str = "train", *, per_batch=12, seed=0, with_meta=True):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        data = rng.integers(0, 256, size=(per_batch, 3 * 32 * 32), dtype=np.uint8)
        batch_labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": batch_labels, "data": data,
                         "filenames": [f"img{i}.png" for i in range(per_batch)]}, f, protocol=2)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.extend(batch_labels)
    if with_meta:
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch,
                         "num_vis": 3072}, f, protocol=2)
    return SimpleNamespace(images=np.concatenate(images), labels=np.asarray(labels, dtype=np.int64))


def make_stl10(root: Path, split: str = "train", *, n=20, seed=0):
    """``{split}_X.bin``: uint8, each image channel-major then column-major; ``{split}_y.bin``: 1..10."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
    labels = _balanced_labels(n, 10, rng, offset=1)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
    (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
    return SimpleNamespace(images=images, labels=labels.astype(np.int64) - 1)


def make_pcam(root: Path, split: str = "train", *, n=16, seed=0):
    import h5py

    rng = np.random.default_rng(seed)
    images_hwc = rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)
    labels = _balanced_labels(n, 2, rng)
    folder = root / "pcam"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"camelyonpatch_level_2_split_{'valid' if split == 'val' else split}"
    with h5py.File(folder / f"{stem}_x.h5", "w") as f:
        f.create_dataset("x", data=images_hwc)
    with h5py.File(folder / f"{stem}_y.h5", "w") as f:
        f.create_dataset("y", data=labels.reshape(n, 1, 1, 1))
    return SimpleNamespace(images=images_hwc.transpose(0, 3, 1, 2), labels=labels.astype(np.int64))


@pytest.fixture
def writers():
    """The format writers above, as one namespace."""
    return SimpleNamespace(
        idx=write_idx, idx_dataset=make_idx_dataset, usps=make_usps, cifar10=make_cifar10,
        stl10=make_stl10, pcam=make_pcam,
    )
