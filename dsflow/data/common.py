"""Options every loader shares: data root, class subsets, seeded subsampling, image decoding.

A loader reads *labels first* (they are small), picks the sample indices with
:func:`select_indices`, and only then decodes the selected samples to float, resizes
them and converts channels (:func:`images_to_labeled_data`).  That way asking for
``n_per_class: 100`` of a 60k-image dataset never turns 60k images into floats.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DATA_ENV_VAR = "DSFLOW_DATA"
DEFAULT_ROOT = "./data"
DECODE_CHUNK = 4096  # images decoded (to float, resized) at a time


# ---------------------------------------------------------------------------- small helpers
def to_plain(value: Any) -> Any:
    """Turn OmegaConf containers (what Hydra passes to ``_target_``) into dicts/lists."""
    module = type(value).__module__ or ""
    if module.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    return value


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The data root: ``root`` if given, else ``$DSFLOW_DATA``, else ``./data``."""
    if root is None or str(root) == "":
        root = os.environ.get(DATA_ENV_VAR) or DEFAULT_ROOT
    return Path(root).expanduser()


def check_positive_int(value: Any, what: str, loader: str, *, allow_none: bool = True) -> int | None:
    """Validate an integer option (``None`` allowed when ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{loader}: {what} must be a positive integer{' or null' if allow_none else ''}, got {value!r}")
    return int(value)


def check_choice(value: Any, choices: Sequence[str], what: str, loader: str) -> str:
    if value not in choices:
        raise ValueError(f"{loader}: {what} must be one of {list(choices)}, got {value!r}")
    return value


def image_size_hw(size: Any, what: str = "resize") -> tuple[int, int]:
    """``28`` -> ``(28, 28)``; ``[32, 24]`` -> ``(32, 24)``; anything else is an error."""
    size = to_plain(size)
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"{what}: size must be a positive int or [height, width], got {size!r}")
    return int(size[0]), int(size[1])


# ---------------------------------------------------------------------------- hints
#: Where the options of the loader being called live in the run's config (``source``,
#: ``target``, ``oracle.train``); empty when a loader is called from Python.  The loader
#: cannot know it, and a hint is only worth printing when it can be pasted as it is.
_CONFIG_PREFIX: contextvars.ContextVar[str] = contextvars.ContextVar("dsflow_data_config_prefix", default="")


@contextlib.contextmanager
def config_prefix(prefix: str):
    """Within the block, loader hints read ``PREFIX.key=value`` (e.g. ``source.channels=1``)."""
    token = _CONFIG_PREFIX.set(str(prefix or ""))
    try:
        yield
    finally:
        _CONFIG_PREFIX.reset(token)


def override(key: str, value: Any) -> str:
    """The override that sets a loader option: ``source.KEY=VALUE`` inside
    :func:`config_prefix` ("source"), else ``KEY=VALUE`` (a keyword argument)."""
    prefix = _CONFIG_PREFIX.get()
    return shell_override(f"{prefix + '.' if prefix else ''}{key}", value)


def shell_override(key: str, value: Any) -> str:
    """``KEY=VALUE`` that a shell passes to Hydra as one argument: lists of numbers are
    compact (``[28,28]``), anything else with a space or a brace is single-quoted whole."""
    value = to_plain(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        text = "[" + ",".join(format_override_value(v) for v in value) + "]"
    else:
        text = format_override_value(value)
    arg = f"{key}={text}"
    return f"'{arg}'" if any(c in arg for c in ' {}"*?$') else arg


def format_override_value(value: Any) -> str:
    """A value as Hydra's override grammar (and YAML flow style) reads it back."""
    value = to_plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(value.item() if isinstance(value, np.generic) else value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_override_value(v) for v in value) + "]"
    text = str(value)
    if text and all(c.isalnum() or c in "_-./" for c in text) and text not in ("null", "true", "false"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'  # double quotes: shell_override may add single ones


def square_image_shapes(d: int) -> list[tuple[int, int, int]]:
    """``(C, s, s)`` image shapes with ``d`` values (grey first, then RGB): the shapes a hint
    can offer for flat features of dimension ``d``."""
    shapes = []
    for c in (1, 3):
        s = int(round((d / c) ** 0.5)) if d % c == 0 else 0
        if s > 0 and c * s * s == d:
            shapes.append((c, s, s))
    return shapes


def missing_files_error(dataset: str, expected: Sequence[Path], *, root: Path, hint: str = "") -> FileNotFoundError:
    """The error raised when a dataset's files are not on disk: exact paths + the download hint."""
    lines = "\n".join(f"  {p}" for p in expected)
    return FileNotFoundError(
        f"{dataset}: dataset files not found under root {str(root)!r}. Expected:\n{lines}\n"
        f"Set `{override('root', '/path/to/data')}` (or the {DATA_ENV_VAR} environment variable) to the folder "
        f"holding them, or `{override('download', True)}` to fetch them with torchvision."
        + (f"\n{hint}" if hint else "")
    )


# ---------------------------------------------------------------------------- subsampling
def _row_range(rows: Any, total: int, loader: str) -> tuple[int, int]:
    """``[start, stop]`` (``stop`` may be null) checked against the ``total`` samples of the file."""
    rows = to_plain(rows)
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or len(rows) != 2:
        raise ValueError(f"{loader}: rows must be [start, stop] (stop may be null), got {rows!r}")
    start, stop = rows
    try:
        start = int(start)
        stop = total if stop is None else int(stop)
    except (TypeError, ValueError):
        raise ValueError(f"{loader}: rows must be two integers [start, stop], got {rows!r}") from None
    if not 0 <= start < stop <= total:
        raise ValueError(
            f"{loader}: rows=[{start}, {stop}] must satisfy 0 <= start < stop <= {total} "
            f"(the file holds {total} samples)"
        )
    return start, stop


def select_indices(
    labels: np.ndarray,
    *,
    n_per_class: int | None = None,
    max_samples: int | None = None,
    classes: Any = None,
    rows: Any = None,
    seed: int | None = 0,
    loader: str = "dataset",
) -> np.ndarray:
    """Indices (sorted, int64) of the samples a loader keeps.

    ``rows = [start, stop]`` first keeps only the samples ``start .. stop - 1`` in the file's
    order (a fixed, documented split of one file, e.g. MNIST test 0-4999 for an oracle and
    5000-9999 for a flow; ``stop`` null = to the end); ``classes`` keeps only those label values; ``n_per_class`` draws that many samples
    of every kept class (stratified, without replacement); ``max_samples`` draws that many
    samples uniformly from the kept ones.  The draw depends only on ``seed`` (``None``:
    fresh randomness) and the labels, so the same seed always gives the same subset.
    """
    labels = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
    n_per_class = check_positive_int(n_per_class, "n_per_class", loader)
    max_samples = check_positive_int(max_samples, "max_samples", loader)
    if n_per_class is not None and max_samples is not None:
        raise ValueError(
            f"{loader}: give either n_per_class ({n_per_class}) or max_samples ({max_samples}), not both"
        )
    keep = np.arange(labels.shape[0], dtype=np.int64)
    if rows is not None:
        start, stop = _row_range(rows, labels.shape[0], loader)
        keep = keep[start:stop]
    present = np.unique(labels[keep])
    if classes is not None:
        wanted = to_plain(classes)
        if isinstance(wanted, (int, np.integer)) and not isinstance(wanted, bool):
            wanted = [wanted]
        if isinstance(wanted, (str, bytes)) or not isinstance(wanted, Sequence) or len(wanted) == 0:
            raise ValueError(f"{loader}: classes must be a non-empty list of label values, got {classes!r}")
        try:
            wanted_arr = np.asarray([int(c) for c in wanted], dtype=np.int64)
        except (TypeError, ValueError):
            raise ValueError(f"{loader}: classes must be integer label values, got {classes!r}") from None
        unknown = sorted(set(wanted_arr.tolist()) - set(present.tolist()))
        if unknown:
            raise ValueError(
                f"{loader}: unknown classes {unknown}; the label values present are {present.tolist()}"
            )
        keep = keep[np.isin(labels, wanted_arr)]
    if n_per_class is None and max_samples is None:
        return keep

    rng = np.random.default_rng(seed)
    if max_samples is not None:
        if max_samples > keep.shape[0]:
            raise ValueError(
                f"{loader}: max_samples={max_samples} but only {keep.shape[0]} samples are available; "
                f"lower max_samples or set it to null to keep all"
            )
        return np.sort(rng.choice(keep, size=max_samples, replace=False))

    kept_labels = labels[keep]
    values, counts = np.unique(kept_labels, return_counts=True)
    too_small = {int(v): int(c) for v, c in zip(values, counts) if c < n_per_class}
    if too_small:
        raise ValueError(
            f"{loader}: n_per_class={n_per_class} is larger than some classes "
            f"(label: available samples) {too_small}; lower n_per_class or use `classes` to drop them"
        )
    # Stratified draw: the first n_per_class of each class in a random order.
    order, rank = ranks_in_class(labels, keep[rng.permutation(keep.shape[0])])
    return np.sort(order[rank < n_per_class])


def class_values(classes: Any, names: Sequence[str], loader: str) -> Any:
    """``classes`` with class *names* (``[cat, dog]``) replaced by their label values, for
    loaders whose labels index a list of names (image folders, CSV files with text labels).
    Integers are label values; a string is a name first (``'3'``: the class named 3)."""
    wanted = to_plain(classes)
    if wanted is None:
        return None
    if isinstance(wanted, (str, bytes)) or not isinstance(wanted, Sequence):
        wanted = [wanted]
    index = {str(n): i for i, n in enumerate(names)}
    out = []
    for entry in wanted:
        if isinstance(entry, str) and entry in index:  # a name (a quoted '3' is the folder named 3)
            out.append(index[entry])
        elif isinstance(entry, str) and not entry.lstrip("-").isdigit():
            raise ValueError(f"{loader}: unknown class {entry!r} in classes; the classes are {list(names)}")
        else:
            out.append(entry)
    return out


# ---------------------------------------------------------------------------- stratified splits
def ranks_in_class(labels: np.ndarray, shuffled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, rank)``: the indices ``shuffled`` grouped by class and each one's rank in its class.

    ``order`` lists ``shuffled`` stably sorted by label (classes ascending, the order of
    ``shuffled`` inside each class); ``rank[i]`` is the position of ``order[i]`` inside its
    class.  Every stratified draw is then ``order[rank < quota of its class]``: one sort, no
    loop over classes.  The one home of the stratified splits below and of the loaders'.
    """
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]
    sorted_labels = labels[order]
    rank = np.arange(order.shape[0]) - np.searchsorted(sorted_labels, sorted_labels, side="left")
    return order, rank


def stratified_split(y, test_fraction: float, seed: int = 0):
    """Deterministic stratified split: ``(train_index, test_index)`` (sorted int64 tensors).

    Each class contributes ``round(test_fraction * count)`` samples to the test part
    (at least one when the class has two or more samples and ``test_fraction > 0``, never
    all of a class).  The draw depends only on ``seed`` and the labels.
    """
    import torch

    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    y = torch.as_tensor(y).detach().cpu().long()
    n = y.numel()
    if test_fraction == 0 or n == 0:
        return torch.arange(n), torch.arange(0)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    labels = y.numpy()
    order, rank = ranks_in_class(labels, perm.numpy())
    _, counts = np.unique(labels, return_counts=True)
    n_test = np.round(counts.astype(np.float64) * float(test_fraction)).astype(np.int64)
    n_test = np.where((n_test == 0) & (counts >= 2), 1, n_test)
    n_test = np.clip(np.minimum(n_test, counts - 1), 0, None)
    is_test = rank < np.repeat(n_test, counts)
    return torch.from_numpy(np.sort(order[~is_test])), torch.from_numpy(np.sort(order[is_test]))


# ---------------------------------------------------------------------------- decoding
# How stored image arrays become (N, C, H, W); "W" before "H" means stored transposed.
_TO_NCHW = {
    "NCHW": lambda a: a,
    "NCWH": lambda a: a.transpose(0, 1, 3, 2),  # STL-10 binaries (column-major images)
    "NHW": lambda a: a[:, None],
    "NWH": lambda a: a[:, None].transpose(0, 1, 3, 2),  # EMNIST raw files
    "NHWC": lambda a: a.transpose(0, 3, 1, 2),  # PCam h5, PIL-style arrays
}


class RowSelection:
    """Rows ``index`` of an array-like (numpy memmap, h5py dataset), read lazily by slices.

    ``index`` must be sorted (h5py only reads increasing indices); slicing this object
    reads just those rows, so loaders can decode a selection chunk by chunk.
    """

    def __init__(self, array: Any, index: np.ndarray):
        self.array, self.index = array, np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitem__(self, rows: slice) -> np.ndarray:
        index = self.index[rows]
        if index.size and index[-1] - index[0] + 1 == index.size:  # a contiguous run: plain slice read
            return np.asarray(self.array[int(index[0]) : int(index[-1]) + 1])
        return np.asarray(self.array[index])


def convert_channels(x, channels: int | None, loader: str = "images"):
    """``(n, C, H, W)`` float -> ``channels`` channels: grey -> RGB repeats the channel, RGB ->
    grey is the ITU-R 601-2 luma ``0.299 R + 0.587 G + 0.114 B`` (the weights of PIL's
    ``convert("L")`` and torchvision's ``Grayscale``), in float, without rounding to 8 bits."""
    if channels is None or x.shape[1] == channels:
        return x
    if channels not in (1, 3):
        raise ValueError(f"{loader}: channels must be 1, 3 or null (native), got {channels!r}")
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if x.shape[1] == 3 and channels == 1:
        import torch

        # ITU-R 601-2 luma, the weights PIL uses for convert("L").
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)
    raise ValueError(f"{loader}: cannot convert {x.shape[1]} channels to {channels}")


def check_image_options(resize: Any, channels: Any, normalize: Any, loader: str) -> None:
    """The image options every image loader takes, checked before anything is decoded."""
    if resize is not None:
        image_size_hw(resize, f"{loader}: resize")
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(f"{loader}: channels must be 1, 3 or null (as stored), got {channels!r}")
    if normalize is not None and not isinstance(to_plain(normalize), Mapping):
        raise ValueError(f"{loader}: normalize must be null or {{mean: [...], std: [...]}}, got {normalize!r}")


def resize_images(x, size: Any, *, antialias: bool = True):
    """Bilinear resize of ``(n, C, H, W)`` float images to ``size`` (int or ``[H, W]``)."""
    import torch.nn.functional as F

    height, width = image_size_hw(size)
    if tuple(x.shape[-2:]) == (height, width):
        return x
    # Antialiasing only matters when shrinking (e.g. STL-10 96 -> 32); bilinear weights are
    # non-negative so values stay in the input range.
    shrinking = height < x.shape[-2] or width < x.shape[-1]
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=antialias and shrinking)


def normalize_images(x, normalize: Any, loader: str):
    """``(x - mean) / std`` per channel; ``normalize`` is ``{mean: [...], std: [...]}``."""
    import torch

    normalize = to_plain(normalize)
    if not isinstance(normalize, Mapping) or set(normalize) != {"mean", "std"}:
        raise ValueError(
            f"{loader}: normalize must be null or {{mean: [...], std: [...]}} (one value per channel), "
            f"got {normalize!r}"
        )
    channels = x.shape[1]
    stats = {}
    for key in ("mean", "std"):
        values = normalize[key]
        values = [values] if isinstance(values, (int, float)) else list(values)
        if len(values) == 1:
            values = values * channels
        if len(values) != channels:
            raise ValueError(
                f"{loader}: normalize.{key} has {len(values)} values but the images have {channels} channels"
            )
        stats[key] = torch.tensor([float(v) for v in values], dtype=x.dtype).view(1, channels, 1, 1)
    if bool((stats["std"] <= 0).any()):
        raise ValueError(f"{loader}: normalize.std must be positive, got {normalize['std']!r}")
    return (x - stats["mean"]) / stats["std"]


def images_to_labeled_data(
    images: Any,
    labels: np.ndarray,
    *,
    layout: str = "NCHW",
    scale: float = 255.0,
    resize: Any = None,
    channels: int | None = None,
    normalize: Any = None,
    transform: Any = None,
    seed: int | None = 0,
    class_names: Any = None,
    name: str,
    loader: str,
    meta: dict | None = None,
):
    """Decode selected raw images to a float32 :class:`LabeledData`.

    ``images`` is anything sliceable by row ranges that yields arrays in ``layout`` (a numpy
    array, or :class:`RowSelection` over an on-disk array).
    Order: uint8 -> ``[0, 1]`` (divide by ``scale``) -> ``resize`` -> ``channels`` ->
    ``transform`` list -> ``normalize``.  Transforms run on ``[0, 1]`` pixels so that e.g.
    ``invert`` keeps its meaning; normalisation (an oracle's input convention) comes last.
    """
    import torch

    from dsflow.data.container import LabeledData
    from dsflow.data.transforms import apply_transforms, parse_transform_spec

    if layout not in _TO_NCHW:
        raise ValueError(f"unknown layout {layout!r}; expected one of {sorted(_TO_NCHW)}")
    # Check the cheap options before decoding anything.
    check_image_options(resize, channels, normalize, loader)
    parse_transform_spec(transform)  # unknown transform names / options fail here
    # Decode in chunks so that the float32 copy of the *native-size* images never exists for
    # the whole selection at once (96x96 float PCam patches would need 110 kB each).
    parts = []
    for start in range(0, len(images), DECODE_CHUNK):
        raw = _TO_NCHW[layout](np.asarray(images[start : start + DECODE_CHUNK]))
        part = torch.from_numpy(np.array(raw, dtype=np.float32, order="C"))  # a writable copy
        if scale != 1.0:
            part = part.div_(scale)
        if resize is not None:
            part = resize_images(part, resize)
        if channels is not None:
            part = convert_channels(part, channels, loader)
        parts.append(part)
    x = torch.cat(parts) if len(parts) > 1 else parts[0]
    data = LabeledData(
        x=x,
        y=torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        class_names=class_names,
        image_shape=tuple(int(s) for s in x.shape[1:]),
        name=name,
        meta=dict(meta or {}),
    )
    data = apply_transforms(data, transform, seed=seed)
    if normalize is not None:
        x = normalize_images(data.images(), normalize, loader)
        data = data.with_(x=x, meta={**data.meta, "normalize": to_plain(normalize)})
    return data


def finish_vectors(x: np.ndarray, labels: np.ndarray, *, transform, seed, class_names, name, meta=None):
    """Float features ``(n, d)`` + labels -> :class:`LabeledData` with transforms applied."""
    import torch

    from dsflow.data.container import LabeledData
    from dsflow.data.transforms import apply_transforms

    data = LabeledData(
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        y=torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        class_names=class_names,
        name=name,
        meta=dict(meta or {}),
    )
    return apply_transforms(data, transform, seed=seed)
