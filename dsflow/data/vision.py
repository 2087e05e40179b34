"""Real image datasets read from the on-disk formats torchvision downloads.

dsflow reads the files itself (IDX, libsvm bz2, CIFAR pickles, STL-10 binaries, PatchCamelyon
h5) instead of going through ``torchvision.datasets``: that lets it read only the split
asked for (torchvision checks every split's checksum), and decode only the subsample asked
for (labels are read first; IDX / STL-10 binaries are memory-mapped, h5 is read by index).
torchvision is used for ``download=true`` only, so the layout on disk is exactly the one
torchvision creates under ``root`` (see docs/datasets.md).

Every loader returns float32 images in ``[0, 1]`` (before ``normalize``), flattened, with
``image_shape = (C, H, W)``.
"""

from __future__ import annotations

import bz2
import gzip
import pickle
import string
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dsflow.data.common import (
    RowSelection,
    check_choice,
    images_to_labeled_data,
    missing_files_error,
    resolve_root,
    select_indices,
)

SPLITS = ("train", "test")

MNIST_NAMES = [str(i) for i in range(10)]
FASHION_MNIST_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
KMNIST_NAMES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
CAMELYON_NAMES = ["normal", "tumor"]  # label 1: the centre 32x32 patch holds metastatic tissue

# EMNIST variants (torchvision's `split`); dsflow calls it `subset` since `split` is train/test.
_EMNIST_MERGED = set("cijklmopsuvwxyz")
EMNIST_NAMES = {
    "letters": list(string.ascii_lowercase),  # raw labels 1..26
    "digits": list(string.digits),
    "mnist": list(string.digits),
    "byclass": sorted(set(string.digits + string.ascii_letters)),
    "bymerge": sorted(set(string.digits + string.ascii_letters) - _EMNIST_MERGED),
    "balanced": sorted(set(string.digits + string.ascii_letters) - _EMNIST_MERGED),
}


# ---------------------------------------------------------------------------- file lookup
def _locate(
    dataset: str,
    root: Path,
    candidates: dict[str, Sequence[Path]],
    *,
    download: bool,
    downloader: Callable[[], None],
    hint: str = "",
) -> dict[str, Path]:
    """The first existing candidate path of every role; download once if allowed; else a clear error."""

    def find() -> dict[str, Path | None]:
        return {role: next((p for p in paths if p.is_file()), None) for role, paths in candidates.items()}

    found = find()
    if any(p is None for p in found.values()) and download:
        downloader()
        found = find()
    missing = [role for role, p in found.items() if p is None]
    if missing:
        expected = [" or ".join(str(p) for p in candidates[role]) for role in candidates]
        raise missing_files_error(dataset, expected, root=root, hint=hint)
    return found  # type: ignore[return-value]


def _torchvision_download(cls_name: str, root: Path, **kwargs) -> Callable[[], None]:
    def run() -> None:
        import torchvision.datasets as tvd

        root.mkdir(parents=True, exist_ok=True)
        getattr(tvd, cls_name)(str(root), download=True, **kwargs)  # shows a progress bar

    return run


# ---------------------------------------------------------------------------- IDX (MNIST family)
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST format), ``.gz`` or not; uncompressed files are memory-mapped.

    The header is 2 zero bytes, a type code, the number of dimensions, then one big-endian
    int32 per dimension.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES or head[3] == 0:
            raise ValueError(f"{path}: not an IDX file (bad magic number {head.hex()})")
        ndim = head[3]
        shape = tuple(int(v) for v in np.frombuffer(f.read(4 * ndim), dtype=">i4"))
        dtype = np.dtype(_IDX_DTYPES[head[2]])
        offset = 4 + 4 * ndim
        if opener is open:
            expected = offset + int(np.prod(shape)) * dtype.itemsize
            actual = path.stat().st_size
            if actual < expected:
                raise ValueError(f"{path}: truncated IDX file ({actual} bytes, header announces {expected})")
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
        body = f.read()
    count = int(np.prod(shape))
    if len(body) < count * dtype.itemsize:
        raise ValueError(f"{path}: truncated IDX file (header announces shape {shape})")
    return np.frombuffer(body, dtype=dtype, count=count).reshape(shape)


def _idx_dataset(
    dataset: str,
    folder: str,
    prefix: str,
    *,
    root,
    split: str,
    download: bool,
    downloader_kwargs: dict,
    torchvision_cls: str,
    class_names,
    label_offset: int = 0,
    transpose: bool = False,
    resize,
    channels,
    normalize,
    n_per_class,
    max_samples,
    classes,
    transform,
    seed,
    name,
    rows=None,
):
    root = resolve_root(root)
    raw = root / folder / "raw"
    candidates = {
        role: [raw / f"{prefix}-{role}-idx{dims}-ubyte", raw / f"{prefix}-{role}-idx{dims}-ubyte.gz"]
        for role, dims in (("images", 3), ("labels", 1))
    }
    files = _locate(
        dataset, root, candidates, download=download,
        downloader=_torchvision_download(torchvision_cls, root, train=split == "train", **downloader_kwargs),
    )
    labels = np.asarray(read_idx(files["labels"]), dtype=np.int64) - label_offset
    images = read_idx(files["images"])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{dataset}: images {files['images']} have shape {images.shape} and labels {files['labels']} "
            f"shape {labels.shape}; expected (n, H, W) and (n,) with the same n"
        )
    keep = select_indices(labels, n_per_class=n_per_class, max_samples=max_samples, classes=classes, rows=rows, seed=seed,
                          loader=dataset)
    return images_to_labeled_data(
        RowSelection(images, keep), labels[keep], layout="NWH" if transpose else "NHW", resize=resize, channels=channels, normalize=normalize,
        transform=transform, seed=seed, class_names=class_names, name=name or dataset, loader=dataset,
        meta={"dataset": dataset, "split": split, "root": str(root), "indices": keep.tolist()},
    )


_IMAGE_OPTIONS_DOC = """
    Options common to the image datasets: ``root`` (null: ``$DSFLOW_DATA``, else ``./data``),
    ``split`` (``train``/``test``), ``download`` (let torchvision fetch missing files),
    ``resize`` (int or ``[H, W]``, bilinear), ``channels`` (1 or 3; null keeps the native
    number), ``normalize`` (null or ``{mean: [...], std: [...]}`` per channel, applied last),
    plus ``n_per_class`` / ``max_samples`` / ``classes`` / ``rows`` (``[start, stop]``: only the
    file's samples ``start..stop-1``, before any other selection) / ``transform`` / ``seed`` / ``name``.
"""


def _mnist_like(dataset, folder, torchvision_cls, names, *, split, **options):
    check_choice(split, SPLITS, "split", dataset)
    prefix = "train" if split == "train" else "t10k"
    return _idx_dataset(dataset, folder, prefix, split=split, downloader_kwargs={}, torchvision_cls=torchvision_cls,
                        class_names=names, **options)


def mnist(root=None, split="train", download=False, resize=None, channels=None, normalize=None,
          n_per_class=None, max_samples=None, classes=None, rows=None, transform=None, seed=0, name=None):
    """MNIST digits, 28x28 grey, labels 0..9. Files: ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``."""
    return _mnist_like("mnist", "MNIST", "MNIST", MNIST_NAMES, split=split, root=root, download=download,
                       resize=resize, channels=channels, normalize=normalize, n_per_class=n_per_class,
                       max_samples=max_samples, classes=classes, rows=rows, transform=transform, seed=seed, name=name)


def fashion_mnist(root=None, split="train", download=False, resize=None, channels=None, normalize=None,
                  n_per_class=None, max_samples=None, classes=None, rows=None, transform=None, seed=0, name=None):
    """Fashion-MNIST, 28x28 grey, 10 clothing classes. Files under ``root/FashionMNIST/raw/`` (IDX as MNIST)."""
    return _mnist_like("fashion_mnist", "FashionMNIST", "FashionMNIST", FASHION_MNIST_NAMES, split=split, root=root,
                       download=download, resize=resize, channels=channels, normalize=normalize,
                       n_per_class=n_per_class, max_samples=max_samples, classes=classes, rows=rows, transform=transform,
                       seed=seed, name=name)


def kmnist(root=None, split="train", download=False, resize=None, channels=None, normalize=None,
           n_per_class=None, max_samples=None, classes=None, rows=None, transform=None, seed=0, name=None):
    """Kuzushiji-MNIST, 28x28 grey, 10 hiragana classes. Files under ``root/KMNIST/raw/`` (IDX as MNIST)."""
    return _mnist_like("kmnist", "KMNIST", "KMNIST", KMNIST_NAMES, split=split, root=root, download=download,
                       resize=resize, channels=channels, normalize=normalize, n_per_class=n_per_class,
                       max_samples=max_samples, classes=classes, rows=rows, transform=transform, seed=seed, name=name)


def emnist(root=None, split="train", subset="letters", download=False, zero_based_labels=True, transpose=True,
           resize=None, channels=None, normalize=None, n_per_class=None, max_samples=None, classes=None,
           rows=None, transform=None, seed=0, name=None):
    """EMNIST, 28x28 grey. Files: ``root/EMNIST/raw/emnist-{subset}-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    ``subset`` is the EMNIST variant (torchvision's ``split``): ``letters`` (default; 26
    classes), ``digits``, ``mnist``, ``balanced``, ``byclass``, ``bymerge``.  The raw
    ``letters`` labels are 1..26 (a..z, upper and lower case merged); with
    ``zero_based_labels`` (default) they become 0..25 so they index a classifier's outputs,
    otherwise they stay 1..26.  Class names are the letters either way.  ``transpose``
    (default true) undoes the raw files' transposition so letters are upright like MNIST
    digits.
    """
    check_choice(split, SPLITS, "split", "emnist")
    check_choice(subset, tuple(EMNIST_NAMES), "subset", "emnist")
    names = EMNIST_NAMES[subset]
    offset = 0
    if subset == "letters":
        offset = 1 if zero_based_labels else 0
        names = {i + 1 - offset: letter for i, letter in enumerate(names)}
    return _idx_dataset("emnist", "EMNIST", f"emnist-{subset}-{split}", root=root, split=split, download=download,
                        downloader_kwargs={"split": subset}, torchvision_cls="EMNIST", class_names=names,
                        label_offset=offset, transpose=bool(transpose), resize=resize, channels=channels,
                        normalize=normalize, n_per_class=n_per_class, max_samples=max_samples, classes=classes,
                        rows=rows, transform=transform, seed=seed, name=name)


# ---------------------------------------------------------------------------- USPS (libsvm bz2)
def read_libsvm_labels(lines: Sequence[str]) -> np.ndarray:
    """The first token of each ``label index:value ...`` line, as int64."""
    return np.asarray([int(float(line.split(None, 1)[0])) for line in lines], dtype=np.int64)


def read_libsvm_features(lines: Sequence[str], n_features: int, path: Path) -> np.ndarray:
    """Dense ``(len(lines), n_features)`` float32 from libsvm lines (1-based indices, sparse allowed)."""
    rests = [line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else "" for line in lines]
    counts = np.asarray([rest.count(":") for rest in rests], dtype=np.int64)
    pairs = np.asarray(" ".join(rests).replace(":", " ").split(), dtype=np.float64)
    if pairs.shape[0] != 2 * counts.sum():
        raise ValueError(f"{path}: malformed libsvm lines (expected 'label index:value ...')")
    pairs = pairs.reshape(-1, 2)
    index = pairs[:, 0].astype(np.int64) - 1
    if index.size and (index.min() < 0 or index.max() >= n_features):
        raise ValueError(f"{path}: feature indices must lie in 1..{n_features}, found {index.min() + 1}..{index.max() + 1}")
    rows = np.repeat(np.arange(len(lines)), counts)
    dense = np.zeros((len(lines), n_features), dtype=np.float32)
    dense[rows, index] = pairs[:, 1]
    return dense


def usps(root=None, split="train", download=False, resize=None, channels=None, normalize=None,
         n_per_class=None, max_samples=None, classes=None, rows=None, transform=None, seed=0, name=None):
    """USPS digits, 16x16 grey (``resize: 28`` to compare with MNIST), labels 0..9.

    Files (libsvm format, bz2): ``root/usps.bz2`` (train, 7291) and ``root/usps.t.bz2``
    (test, 2007) as torchvision stores them (``root/USPS/`` is accepted too).  Raw labels
    1..10 become 0..9 and pixel values in ``[-1, 1]`` become ``(v + 1) / 2`` in ``[0, 1]``.
    """
    check_choice(split, SPLITS, "split", "usps")
    root = resolve_root(root)
    filename = "usps.bz2" if split == "train" else "usps.t.bz2"
    files = _locate("usps", root, {"data": [root / filename, root / "USPS" / filename]}, download=download,
                    downloader=_torchvision_download("USPS", root, train=split == "train"))
    with bz2.open(files["data"], "rt") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"usps: {files['data']} holds no samples")
    labels = read_libsvm_labels(lines) - 1
    keep = select_indices(labels, n_per_class=n_per_class, max_samples=max_samples, classes=classes, rows=rows, seed=seed,
                          loader="usps")
    pixels = read_libsvm_features([lines[i] for i in keep], 256, files["data"])  # parse only the kept lines
    images = np.clip((pixels + 1.0) / 2.0, 0.0, 1.0).reshape(-1, 16, 16)
    return images_to_labeled_data(
        images, labels[keep], layout="NHW", scale=1.0, resize=resize, channels=channels, normalize=normalize,
        transform=transform, seed=seed, class_names=MNIST_NAMES, name=name or "usps", loader="usps",
        meta={"dataset": "usps", "split": split, "root": str(root), "indices": keep.tolist()},
    )


# ---------------------------------------------------------------------------- CIFAR-10 (pickles)
def cifar10(root=None, split="train", download=False, resize=None, channels=None, normalize=None,
            n_per_class=None, max_samples=None, classes=None, rows=None, transform=None, seed=0, name=None):
    """CIFAR-10, 32x32 RGB, 10 classes.

    Files: ``root/cifar-10-batches-py/data_batch_1..5`` (train) or ``test_batch`` (test),
    Python pickles with ``data`` (n x 3072 uint8, channel-major) and ``labels``;
    ``batches.meta`` supplies class names when present.
    """
    check_choice(split, SPLITS, "split", "cifar10")
    root = resolve_root(root)
    folder = root / "cifar-10-batches-py"
    batch_names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    files = _locate("cifar10", root, {b: [folder / b] for b in batch_names}, download=download,
                    downloader=_torchvision_download("CIFAR10", root, train=split == "train"))
    data_parts, label_parts = [], []
    for batch in batch_names:  # 5 files at most
        with open(files[batch], "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        if "data" not in entry or "labels" not in entry:
            raise ValueError(f"cifar10: {files[batch]} lacks 'data'/'labels' (keys: {sorted(entry)})")
        data_parts.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        label_parts.append(np.asarray(entry["labels"], dtype=np.int64))
    labels = np.concatenate(label_parts)
    keep = select_indices(labels, n_per_class=n_per_class, max_samples=max_samples, classes=classes, rows=rows, seed=seed,
                          loader="cifar10")
    images = np.concatenate(data_parts)[keep] if len(data_parts) > 1 else data_parts[0][keep]
    names = CIFAR10_NAMES
    meta_file = folder / "batches.meta"
    if meta_file.is_file():
        with open(meta_file, "rb") as f:
            names = list(pickle.load(f, encoding="latin1").get("label_names", names))
    return images_to_labeled_data(
        images, labels[keep], layout="NCHW", resize=resize, channels=channels, normalize=normalize,
        transform=transform, seed=seed, class_names=names, name=name or "cifar10", loader="cifar10",
        meta={"dataset": "cifar10", "split": split, "root": str(root), "indices": keep.tolist()},
    )


# ---------------------------------------------------------------------------- STL-10 (binaries)
def stl10(root=None, split="train", download=False, resize=None, channels=None, normalize=None,
          n_per_class=None, max_samples=None, classes=None, rows=None, transform=None, seed=0, name=None):
    """STL-10, 96x96 RGB (``resize: 32`` to compare with CIFAR-10), 10 classes, labels 0..9.

    Files: ``root/stl10_binary/{train,test}_X.bin`` (uint8, each image stored channel-major
    and column-major) and ``{train,test}_y.bin`` (uint8 labels 1..10, made 0..9);
    ``class_names.txt`` supplies names when present.  The unlabeled split is not supported.
    """
    check_choice(split, SPLITS, "split", "stl10")
    root = resolve_root(root)
    folder = root / "stl10_binary"
    files = _locate("stl10", root, {"images": [folder / f"{split}_X.bin"], "labels": [folder / f"{split}_y.bin"]},
                    download=download, downloader=_torchvision_download("STL10", root, split=split))
    labels = np.fromfile(files["labels"], dtype=np.uint8).astype(np.int64) - 1
    per_image = 3 * 96 * 96
    size = files["images"].stat().st_size
    if size % per_image or size // per_image != labels.shape[0]:
        raise ValueError(
            f"stl10: {files['images']} has {size} bytes, expected {labels.shape[0]} images x {per_image} bytes "
            f"to match the {labels.shape[0]} labels in {files['labels']}"
        )
    images = np.memmap(files["images"], dtype=np.uint8, mode="r", shape=(labels.shape[0], 3, 96, 96))
    keep = select_indices(labels, n_per_class=n_per_class, max_samples=max_samples, classes=classes, rows=rows, seed=seed,
                          loader="stl10")
    names = STL10_NAMES
    names_file = folder / "class_names.txt"
    if names_file.is_file():
        names = [line for line in names_file.read_text().splitlines() if line.strip()] or names
    return images_to_labeled_data(
        RowSelection(images, keep), labels[keep], layout="NCWH", resize=resize, channels=channels,
        normalize=normalize, transform=transform, seed=seed, class_names=names, name=name or "stl10", loader="stl10",
        meta={"dataset": "stl10", "split": split, "root": str(root), "indices": keep.tolist()},
    )


# ---------------------------------------------------------------------------- PatchCamelyon (h5)
def camelyon(root=None, split="train", download=False, resize=None, channels=None, normalize=None,
             n_per_class=None, max_samples=None, classes=None, rows=None, transform=None, seed=0, name=None):
    """PatchCamelyon (PCam) histopathology patches, 96x96 RGB, labels 0 (normal) / 1 (tumor).

    Files: ``root/pcam/camelyonpatch_level_2_split_{train,test,valid}_{x,y}.h5`` (``split:
    val`` reads ``valid``); ``x`` is ``(n, 96, 96, 3)`` uint8 and ``y`` is ``(n, 1, 1, 1)``.
    Only the selected patches are read from the h5 file.  The paper resizes to 32x32.
    """
    import h5py

    check_choice(split, ("train", "test", "val"), "split", "camelyon")
    root = resolve_root(root)
    folder = root / "pcam"
    stem = f"camelyonpatch_level_2_split_{'valid' if split == 'val' else split}"
    files = _locate("camelyon", root, {"images": [folder / f"{stem}_x.h5"], "labels": [folder / f"{stem}_y.h5"]},
                    download=download, downloader=_torchvision_download("PCAM", root, split=split),
                    hint="(torchvision's PCAM download needs the `gdown` package.)")
    with h5py.File(files["labels"], "r") as f:
        if "y" not in f:
            raise ValueError(f"camelyon: {files['labels']} has no dataset 'y' (keys: {list(f.keys())})")
        labels = np.asarray(f["y"][...]).reshape(-1).astype(np.int64)
    keep = select_indices(labels, n_per_class=n_per_class, max_samples=max_samples, classes=classes, rows=rows, seed=seed,
                          loader="camelyon")
    with h5py.File(files["images"], "r") as f:
        if "x" not in f:
            raise ValueError(f"camelyon: {files['images']} has no dataset 'x' (keys: {list(f.keys())})")
        x = f["x"]
        if x.ndim != 4 or x.shape[0] != labels.shape[0] or x.shape[-1] != 3:
            raise ValueError(
                f"camelyon: {files['images']} x has shape {x.shape}; expected ({labels.shape[0]}, H, W, 3) "
                f"to match {files['labels']}"
            )
        # Decoded chunk by chunk while the file is open; h5py reads only the kept rows
        # (it needs increasing indices: `keep` is sorted and unique).
        return images_to_labeled_data(
            RowSelection(x, keep), labels[keep], layout="NHWC", resize=resize, channels=channels,
            normalize=normalize, transform=transform, seed=seed, class_names=CAMELYON_NAMES,
            name=name or "camelyon", loader="camelyon",
            meta={"dataset": "camelyon", "split": split, "root": str(root), "indices": keep.tolist()},
        )


for _loader in (mnist, fashion_mnist, kmnist, emnist, usps, cifar10, stl10, camelyon):
    _loader.__doc__ = (_loader.__doc__ or "") + "\n" + _IMAGE_OPTIONS_DOC
