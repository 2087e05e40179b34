"""Datasets that need no download: scikit-learn's 8x8 digits and the user's own ``.npz`` files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from dsflow.data.common import (
    check_image_options,
    finish_vectors,
    images_to_labeled_data,
    override,
    ranks_in_class,
    select_indices,
    square_image_shapes,
    to_plain,
)


#: The embedded digits have no official train/test split; this fixed, stratified one (half of
#: every class in each part, independent of the run seed) keeps the oracle's training data,
#: the flow's target and a derived source domain disjoint when they ask for different splits.
DIGITS_SPLITS = ("all", "train", "test")
_DIGITS_SPLIT_SEED = 20210718


def digits_split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Sorted indices of ``split`` (``all``/``train``/``test``) of the embedded digits."""
    if split not in DIGITS_SPLITS:
        raise ValueError(f"digits: split must be one of {', '.join(DIGITS_SPLITS)}; got {split!r}")
    if split == "all":
        return np.arange(labels.shape[0])
    keys = np.random.default_rng(_DIGITS_SPLIT_SEED).random(labels.shape[0])
    # grouped by class, in the order of the random keys inside each class
    order, rank = ranks_in_class(labels, np.argsort(keys, kind="stable"))
    in_test = rank < (np.bincount(labels) // 2)[labels[order]]
    return np.sort(order[in_test if split == "test" else ~in_test])


def digits(
    n_per_class: int | None = None,
    max_samples: int | None = None,
    classes: Any = None,
    transform: Any = None,
    seed: int | None = 0,
    resize: Any = None,
    channels: int | None = None,
    normalize: Any = None,
    name: str | None = None,
    split: str = "all",
):
    """scikit-learn's embedded handwritten digits: 1797 images 8x8, pixels scaled to ``[0, 1]``.

    ``image_shape`` is ``(1, 8, 8)``, labels 0..9 named ``"0"``..``"9"``.  ``resize`` /
    ``channels`` / ``normalize`` work as for the torchvision datasets.  ``split``: ``all``
    (1797), or the fixed stratified halves ``train`` (901) / ``test`` (896), disjoint.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    labels = bunch.target.astype(np.int64)
    part = digits_split_indices(labels, str(split))
    keep = part[select_indices(labels[part], n_per_class=n_per_class, max_samples=max_samples,
                               classes=classes, seed=seed, loader="digits")]
    return images_to_labeled_data(
        bunch.images[keep], labels[keep], layout="NHW", scale=16.0,  # raw pixel values are 0..16
        resize=resize, channels=channels, normalize=normalize, transform=transform, seed=seed,
        class_names=[str(i) for i in range(10)], name=name or "digits", loader="digits",
        meta={"dataset": "digits", "split": str(split), "indices": keep.tolist()},
    )


def _npz_layout(x: np.ndarray, image_shape: Any, channels_last: bool | None, path: Path):
    """Decide how the stored array maps to ``(n, d)`` features and an ``image_shape``."""
    if image_shape is not None:
        image_shape = tuple(int(s) for s in to_plain(image_shape))
        if int(np.prod(image_shape)) != int(np.prod(x.shape[1:])):
            raise ValueError(
                f"npz {path}: image_shape {image_shape} has {int(np.prod(image_shape))} values per sample "
                f"but the x array has shape {x.shape} ({int(np.prod(x.shape[1:]))} per sample)"
            )
        return x.reshape(x.shape[0], -1), image_shape
    if x.ndim == 2:
        return x, None
    if x.ndim == 3:  # (n, H, W) grey images
        return x.reshape(x.shape[0], -1), (1, x.shape[1], x.shape[2])
    if x.ndim == 4:
        if channels_last is None:  # (n, H, W, C) when the last axis looks like channels
            channels_last = x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4)
        if channels_last:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x.reshape(x.shape[0], -1), tuple(int(s) for s in x.shape[1:])
    raise ValueError(
        f"npz {path}: x must have shape (n, d), (n, H, W), (n, C, H, W) or (n, H, W, C); got {x.shape}"
    )


def npz(
    path: str | os.PathLike | None = None,
    x_key: str = "x",
    y_key: str = "y",
    image_shape: Any = None,
    channels_last: bool | None = None,
    resize: Any = None,
    channels: int | None = None,
    normalize: Any = None,
    n_per_class: int | None = None,
    max_samples: int | None = None,
    classes: Any = None,
    transform: Any = None,
    seed: int | None = 0,
    name: str | None = None,
):
    """Your own labeled data from a ``.npz`` file with features under ``x_key`` and labels under ``y_key``.

    ``x`` may be ``(n, d)``, ``(n, H, W)``, ``(n, C, H, W)`` or ``(n, H, W, C)``
    (``channels_last``: null = guess from the shape).  ``uint8`` arrays are divided by 255.
    Files written by :meth:`LabeledData.save_npz` also restore class names and image shape.
    Images take ``resize`` / ``channels`` / ``normalize`` as the other image loaders do
    (e.g. ``channels: 1`` for RGB digits flowed toward grey MNIST); flat features do not.
    """
    if path is None or str(path) == "":
        raise ValueError(f"npz: give the file with `{override('path', '/data/mine.npz')}`")
    check_image_options(resize, channels, normalize, "npz")
    path = Path(path).expanduser()
    expected = "an .npz archive of arrays x (n, d) and y (n,), e.g. written by numpy.savez(path, x=x, y=y)"
    if path.is_dir():
        raise ValueError(f"npz: {str(path)!r} is a directory; source.path (or target.path) must name the .npz "
                         f"file itself, {expected}")
    if not path.is_file():
        raise FileNotFoundError(f"npz: file not found: {str(path)!r} (absolute: {str(path.absolute())!r}); "
                                f"give {expected}")
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise ValueError(f"npz: {str(path)!r} is a .npy file (a single array); dsflow needs {expected} "
                         "(features and labels together)")
    if not magic.startswith(b"PK"):
        raise ValueError(f"npz: {str(path)!r} is not an .npz archive (not a zip file of numpy arrays); give {expected}")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:  # a corrupt archive
        raise ValueError(f"npz: could not read {str(path)!r} as an .npz archive ({err}); give {expected}") from err
    with archive:
        present = list(archive.files)
        for role, key in (("x_key", x_key), ("y_key", y_key)):
            if key not in present:
                raise ValueError(f"npz {path}: no array named {key!r} ({role}); the file holds {present}. "
                                 + _npz_key_hint(archive, role, x_key if role == "y_key" else y_key))
        x, y = archive[x_key], archive[y_key]
        stored = {}
        if "meta" in present:
            try:
                stored = json.loads(str(archive["meta"]))
            except ValueError:
                stored = {}
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise ValueError(f"npz {path}: labels {y_key!r} must be 1-D (n,), got shape {y.shape}")
    if x.ndim < 2:
        raise ValueError(f"npz {path}: features {x_key!r} must be at least 2-D (n, d), got shape {x.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"npz {path}: {x_key!r} has {x.shape[0]} samples (shape {x.shape}) but {y_key!r} has "
            f"{y.shape[0]} labels; they must match"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"npz {path}: features {x_key!r} must be numeric, got dtype {x.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"npz {path}: labels {y_key!r} must be integers, got non-integral values")
    elif not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"npz {path}: labels {y_key!r} must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if image_shape is None and stored.get("image_shape"):
        image_shape = stored["image_shape"]
    features, shape = _npz_layout(x, image_shape, channels_last, path)
    keep = select_indices(y, n_per_class=n_per_class, max_samples=max_samples, classes=classes, seed=seed,
                          loader="npz")
    features = features[keep]
    scale = 255.0 if features.dtype == np.uint8 else 1.0
    names = stored.get("class_names") or None
    if names:
        names = {int(k): v for k, v in names.items()}
    meta = {"dataset": "npz", "path": str(path), "indices": keep.tolist()}
    name = name or stored.get("name") or path.stem
    if shape is not None and len(shape) == 3:
        return images_to_labeled_data(
            features.reshape(features.shape[0], *shape), y[keep], layout="NCHW", scale=scale, resize=resize,
            channels=channels, normalize=normalize, transform=transform, seed=seed, class_names=names,
            name=name, loader="npz", meta=meta,
        )
    asked = [key for key, value in (("resize", resize), ("channels", channels), ("normalize", normalize))
             if value is not None]
    if asked:
        shapes = square_image_shapes(features.shape[1])
        fix = (f"; if they are images, give their shape, e.g. `{override('image_shape', list(shapes[0]))}`"
               if shapes else f"; if they are images, give their shape as {override('image_shape', '[C, H, W]')}")
        raise ValueError(f"npz {path}: {', '.join(asked)} need image data, but {x_key!r} holds flat features "
                         f"{features.shape[1:]} with no image_shape{fix}")
    data = finish_vectors(
        features.astype(np.float32) / np.float32(scale), y[keep], transform=None, seed=seed, class_names=names,
        name=name, meta=meta,
    )
    if shape is not None:
        data = data.with_(image_shape=shape)
    from dsflow.data.transforms import apply_transforms

    return apply_transforms(data, transform, seed=seed)


def _npz_key_hint(archive, role: str, other_key: str) -> str:
    """The fix for a missing ``x_key``/``y_key``: the one array of the file that fits the role
    (features: at least 2-D; labels: 1-D integers), as an override, when there is one."""
    fits = []
    for key in archive.files:
        if key in (other_key, "meta"):
            continue
        try:
            value = archive[key]
        except Exception:  # an unreadable member: not a candidate
            continue
        if role == "x_key" and value.ndim >= 2 and np.issubdtype(value.dtype, np.number):
            fits.append(key)
        if role == "y_key" and value.ndim == 1 and (np.issubdtype(value.dtype, np.integer)
                                                    or np.issubdtype(value.dtype, np.floating)):
            fits.append(key)
    what = "features (n, ...)" if role == "x_key" else "integer labels (n,)"
    if len(fits) == 1:
        return f"Set {role} to the array of {what}: `{override(role, fits[0])}`"
    if fits:
        return f"Set {role} to the array of {what}, one of {fits} (e.g. `{override(role, fits[0])}`)"
    return f"None of them looks like {what}; store them with numpy.savez(path, x=x, y=y)"
