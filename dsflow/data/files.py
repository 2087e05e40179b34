"""Your own images as users keep them: a folder of class sub-folders, or a CSV of pixels.

* :func:`image_folder` reads ``path/CLASS/.../IMAGE.png`` the way torchvision's
  ``ImageFolder`` does: the class names are the sub-folder names, sorted, and a sample's label
  is the index of its folder in that list (so labels agree with a torchvision model trained on
  the same folder).  Unlike torchvision, hidden entries (names starting with ``.``, e.g.
  ``.ipynb_checkpoints`` or macOS ``._x.png`` files) are skipped instead of becoming a class or
  an unreadable file.
* :func:`pixel_csv` reads a Kaggle-style ``label,pixel0,pixel1,...`` table.

Both pick the samples from the labels first and decode only those (an image folder knows
every label from its folder names, before opening a single image), then share the image
options of the other loaders (``resize``, ``channels``, ``normalize``; `images_to_labeled_data`).
Errors name the file, folder, line or column that is wrong and, where one exists, the
override that fixes it.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from dsflow.data.common import (
    DECODE_CHUNK,
    check_image_options,
    convert_channels,
    class_values,
    finish_vectors,
    images_to_labeled_data,
    image_size_hw,
    override,
    resize_images,
    select_indices,
    square_image_shapes,
    to_plain,
)

#: torchvision's ``IMG_EXTENSIONS`` (what ``ImageFolder`` accepts)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# PIL modes by what they hold; everything else with colour is converted to RGB.
_GREY_MODES = {"1", "L", "LA", "La"}
_WIDE_GREY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}  # 16-bit PNG / TIFF
_REFUSED_MODES = {"F"}  # 32-bit float: no fixed range to map to [0, 1]


# ---------------------------------------------------------------------------- image folders
def _extensions(extensions: Any) -> tuple[str, ...]:
    extensions = to_plain(extensions)
    if extensions is None:
        return IMAGE_EXTENSIONS
    if isinstance(extensions, str):
        extensions = [extensions]
    if not isinstance(extensions, (list, tuple)) or not extensions or not all(isinstance(e, str) for e in extensions):
        raise ValueError(f"image_folder: extensions must be null or a list like [png, jpg], got {extensions!r}")
    return tuple("." + e.lower().lstrip(".") for e in extensions)


def _visible(name: str) -> bool:
    return not name.startswith(".")


def scan_image_folder(path: Path, extensions: tuple[str, ...]) -> tuple[list[str], list[Path], np.ndarray]:
    """``(class_names, files, labels)`` of an image folder, as ``ImageFolder`` orders them:
    classes sorted by name, files sorted within each class folder (walked recursively)."""
    if not path.exists():
        raise FileNotFoundError(
            f"image_folder: folder not found: {str(path)!r} (absolute: {str(path.absolute())!r}); set "
            f"`{override('path', '/data/my_images')}` to a folder holding one sub-folder of images per class"
        )
    if not path.is_dir():
        raise ValueError(f"image_folder: {str(path)!r} is a file, not a folder; `path` must be the folder that holds "
                         "one sub-folder of images per class (path/CLASS/IMAGE.png)")
    with os.scandir(path) as entries:
        listing = [e for e in entries if _visible(e.name)]
    class_names = sorted(e.name for e in listing if e.is_dir())
    if not class_names:
        loose = sorted(e.name for e in listing if e.is_file() and e.name.lower().endswith(extensions))
        found = f"; it holds {len(loose)} image file(s) directly (e.g. {loose[0]!r})" if loose else ""
        raise ValueError(f"image_folder: {str(path)!r} has no class sub-folders{found}. Put each class's images in "
                         "a sub-folder named after the class (path/CLASS/IMAGE.png)")
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(class_names):
        found, other = [], []
        for folder, dirs, names in os.walk(path / cls, followlinks=True):
            dirs[:] = sorted(d for d in dirs if _visible(d))
            for fname in sorted(names):
                if not _visible(fname):
                    continue
                (found if fname.lower().endswith(extensions) else other).append(Path(folder) / fname)
        if not found:
            others = f"; it holds {len(other)} other file(s), e.g. {other[0].name!r}" if other else ""
            raise ValueError(
                f"image_folder: class folder {str(path / cls)!r} is empty: no {'/'.join(e[1:] for e in extensions)} "
                f"image{others}. Add images to it or remove the folder"
            )
        files += found
        labels += [label] * len(found)
    return class_names, files, np.asarray(labels, dtype=np.int64)


def _unreadable(path: Path, err: BaseException) -> ValueError:
    reason = " ".join(str(err).split()) or type(err).__name__
    return ValueError(f"image_folder: cannot read image file {str(path)!r} ({reason}); delete or re-export it")


def _probe(path: Path) -> tuple[tuple[int, int], str]:
    """``((H, W), kind)`` from the file header alone (PIL opens lazily); kind is ``grey``,
    ``grey16`` or ``colour``."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
            mode = im.mode
    except Exception as err:  # UnidentifiedImageError, OSError, SyntaxError from a broken header ...
        raise _unreadable(path, err) from None
    if mode in _REFUSED_MODES:
        raise ValueError(f"image_folder: {str(path)!r} is a 32-bit float image (PIL mode {mode}); save it as an "
                         "8- or 16-bit PNG")
    kind = "grey" if mode in _GREY_MODES else "grey16" if mode in _WIDE_GREY_MODES else "colour"
    return (int(height), int(width)), kind


def _decode(path: Path, kind: str) -> np.ndarray:
    """One image as float32 ``(C, H, W)`` in ``[0, 1]``, ``C`` = 1 (grey) or 3 (colour)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if kind == "grey16":
                pixels = np.asarray(im).astype(np.float32)
                if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
                    raise ValueError(f"values {pixels.min():.0f}..{pixels.max():.0f} are outside 16 bits")
                pixels /= np.float32(65535.0)
            else:
                # RGBA/LA lose their alpha (as in torchvision's loader), palettes are expanded
                pixels = np.asarray(im.convert("L" if kind == "grey" else "RGB"), dtype=np.float32) / np.float32(255.0)
    except Exception as err:  # truncated or corrupt data surfaces only when decoding
        raise _unreadable(path, err) from None
    return pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _decode_selection(files: list[Path], kinds: list[str], sizes: list[tuple[int, int]], size: tuple[int, int],
                      out_channels: int) -> np.ndarray:
    """Decode ``files`` to one float32 ``(n, out_channels, H, W)`` array at ``size``: chunk by
    chunk, images of one size and kind resized and converted together (`convert_channels`), so
    no native-size float copy of the whole set exists."""
    import torch

    out = np.empty((len(files), out_channels, *size), dtype=np.float32)
    for start in range(0, len(files), DECODE_CHUNK):
        groups: dict[tuple, list[int]] = {}
        for i in range(start, min(start + DECODE_CHUNK, len(files))):
            groups.setdefault((sizes[i], kinds[i] == "colour"), []).append(i)
        for (shape, _), rows in groups.items():
            batch = torch.from_numpy(np.stack([_decode(files[i], kinds[i]) for i in rows]))
            if shape != size:
                batch = resize_images(batch, list(size))
            out[rows] = convert_channels(batch, out_channels, "image_folder").numpy()
    return out


def image_folder(
    path: str | os.PathLike | None = None,
    extensions: Any = None,
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
    """Images in class sub-folders, ``path/CLASS/.../IMAGE.{png,jpg,...}``, read as torchvision's
    ``ImageFolder`` reads them: class names = sorted sub-folder names, label = index in that list.

    Pixels become ``[0, 1]`` (8-bit / 255, 16-bit grey / 65535); RGBA and palette images
    become RGB (alpha dropped), and a folder mixing grey and colour files is read as RGB
    unless ``channels: 1``.  ``resize`` (int or ``[H, W]``) is needed when the images differ in
    size.  ``channels`` (1 or 3), ``normalize`` and the selection options work as for the other
    image loaders; ``classes`` also takes folder names.  ``extensions``: null = torchvision's
    list (jpg, jpeg, png, ppm, bmp, pgm, tif, tiff, webp).
    """
    if path is None or str(path) == "":
        raise ValueError(f"image_folder: give the folder with `{override('path', '/data/my_images')}`")
    check_image_options(resize, channels, normalize, "image_folder")
    size = image_size_hw(resize, "image_folder: resize") if resize is not None else None
    root = Path(path).expanduser()
    class_names, files, labels = scan_image_folder(root, _extensions(extensions))
    keep = select_indices(labels, n_per_class=n_per_class, max_samples=max_samples,
                          classes=class_values(classes, class_names, "image_folder"), seed=seed, loader="image_folder")
    chosen = [files[i] for i in keep]
    probed = [_probe(f) for f in chosen]
    sizes, kinds = [p[0] for p in probed], [p[1] for p in probed]
    if size is None:
        counts = Counter(sizes)
        if len(counts) > 1:
            (common, n_common), (other, _) = counts.most_common(2)
            example = chosen[sizes.index(other)]
            raise ValueError(
                f"image_folder: the images in {str(root)!r} differ in size: {n_common} are {common[0]}x{common[1]} "
                f"(HxW) but e.g. {str(example)!r} is {other[0]}x{other[1]} ({len(counts)} sizes in all); resize them "
                f"to one size with `{override('resize', list(common))}`"
            )
        size = sizes[0]
    out_channels = channels or (3 if any(k == "colour" for k in kinds) else 1)
    images = _decode_selection(chosen, kinds, sizes, size, out_channels)
    return images_to_labeled_data(
        images, labels[keep], layout="NCHW", scale=1.0, channels=channels, normalize=normalize,
        transform=transform, seed=seed, class_names=class_names, name=name or root.name, loader="image_folder",
        meta={"dataset": "image_folder", "path": str(root), "indices": keep.tolist(),
              "files": [str(f.relative_to(root)) for f in chosen]},
    )


# ---------------------------------------------------------------------------- CSV of pixels
def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: Excel's byte-order mark
        row = next(csv.reader(f), None)
    if not row:
        raise ValueError(f"csv {path}: the file is empty")
    return [c.strip() for c in row]


#: bytes of the integer fast path per block (its index arrays take 8x that)
_FAST_BLOCK = 1 << 24


def read_integer_table(path: Path, header: bool, n_columns: int) -> np.ndarray | None:
    """A table of non-negative integers (what 8-bit pixel exports hold) as float32
    ``(rows, n_columns)``, parsed with numpy on the raw bytes; ``None`` when the file holds
    anything else (signs, decimals, text, quotes, empty cells, blank or ragged lines), for the
    general reader to parse it or to locate the error.

    ``numpy.loadtxt`` converts cell by cell; this reads a block of whole lines at once: the
    separators (``,`` and newlines) cut the digits into cells, and every cell's value is summed
    one digit place at a time (measured: docs/datasets.md).
    """
    with open(path, "rb") as f:
        if header:
            f.readline()
        body = f.read()
    if body.startswith(b"\xef\xbb\xbf"):  # a byte-order mark on a file without header
        body = body[3:]
    body = body.replace(b"\r\n", b"\n")
    if not body:
        return None
    if not body.endswith(b"\n"):
        body += b"\n"
    blocks, start = [], 0
    while start < len(body):
        stop = body.rfind(b"\n", start, start + _FAST_BLOCK) + 1 if start + _FAST_BLOCK < len(body) else len(body)
        if stop <= start:  # one line longer than a block
            return None
        values = _integer_block(np.frombuffer(body, np.uint8, count=stop - start, offset=start), n_columns)
        if values is None:
            return None
        blocks.append(values)
        start = stop
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


#: byte classes of the integer fast path: 0 digit, 1 separator, 2 anything else
_BYTE_CLASS = np.full(256, 2, dtype=np.uint8)
_BYTE_CLASS[48:58], _BYTE_CLASS[44], _BYTE_CLASS[10] = 0, 1, 1


def _integer_block(buf: np.ndarray, n_columns: int) -> np.ndarray | None:
    kind = _BYTE_CLASS[buf]
    if bool((kind == 2).any()):
        return None
    sep_at = np.flatnonzero(kind)
    lengths = np.diff(sep_at, prepend=-1) - 1
    if bool((lengths == 0).any()) or int(lengths.max()) > 9:  # an empty cell, or beyond exact float32 anyway
        return None
    line_ends = np.flatnonzero(buf[sep_at] == 10)
    if len(sep_at) != len(line_ends) * n_columns or bool((line_ends % n_columns != n_columns - 1).any()):
        return None
    # cell j's digits end just before sep_at[j]: add the digit `place` places back, times 10**place
    values = np.zeros(len(sep_at), dtype=np.int64)
    for place in range(int(lengths.max())):  # at most 9 passes, 3 for 8-bit pixels
        digit = buf[np.maximum(sep_at - 1 - place, 0)].astype(np.int64) - 48
        values += np.where(lengths > place, digit, 0) * 10**place
    return values.reshape(len(line_ends), n_columns).astype(np.float32)


def _has_rows(path: Path, header: bool) -> bool:
    with open(path, encoding="utf-8-sig") as f:
        if header:
            next(f, None)
        return any(line.strip() for line in f)


def _first_bad_cell(path: Path, header: bool, columns: list[str], skip: int | None) -> str:
    """Where the fast reader failed: the first line with a wrong number of cells, or the first
    cell (outside column ``skip``) that is not a number.  Only run on the error path."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        if header:
            next(reader, None)
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(columns):
                return (f"line {line} has {len(row)} cells but {'the header has' if header else 'line 1 has'} "
                        f"{len(columns)}")
            for j, cell in enumerate(row):
                if j == skip:
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    what = "an empty cell" if not cell.strip() else f"the non-numeric cell {cell.strip()!r}"
                    return f"line {line}, column {columns[j]!r} (column {j + 1}) holds {what}"
                if not np.isfinite(value):
                    return f"line {line}, column {columns[j]!r} (column {j + 1}) holds {cell.strip()!r}"
    return "a cell could not be read as a number"


def _label_column_hint(columns: list[str]) -> str:
    likely = [c for c in columns if c.strip().lower() in ("label", "labels", "class", "target", "y", "digit",
                                                         "category")]
    if likely:
        return f"Set the label column: `{override('label_column', likely[0])}`"
    return ("No column looks like labels (a Kaggle test.csv has none: it cannot be flowed with its labels); "
            f"set {override('label_column', 'NAME')} to the column that holds them")


def pixel_csv(
    path: str | os.PathLike | None = None,
    label_column: Any = "label",
    header: bool = True,
    image_shape: Any = None,
    channels_last: bool = False,
    scale: float | None = 255.0,
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
    """A CSV of pixels with a label column, as Kaggle ships digits (``label,pixel0,...,pixel783``).

    ``label_column``: the header name of the labels (or a 0-based column index; needed when
    ``header: false``).  Labels may be integers or text (text labels are numbered in sorted
    order and kept as class names).  Every other column is a pixel, in the order of
    ``image_shape`` (``[C, H, W]``; null = ``[1, s, s]`` when the pixel count is a square, else
    the rows stay flat feature vectors); ``channels_last: true`` reads each row as ``H, W, C``
    (an RGB export that interleaves channels).  Values are divided by ``scale`` (255: 8-bit
    pixels to ``[0, 1]``; null keeps them as stored) and must then lie in ``[0, 1]``.
    ``resize`` / ``channels`` / ``normalize`` and the selection options work as for the other
    image loaders; ``classes`` also takes text labels.
    """
    if path is None or str(path) == "":
        raise ValueError(f"csv: give the file with `{override('path', '/data/train.csv')}`")
    check_image_options(resize, channels, normalize, "csv")
    path = Path(path).expanduser()
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not found"
        raise FileNotFoundError(f"csv: {str(path)!r} is {what}; `path` must name a .csv file of rows "
                                "label,pixel0,pixel1,... (absolute: " + repr(str(path.absolute())) + ")")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0):
        raise ValueError(f"csv: scale must be a positive number or null (keep the values), got {scale!r}")
    first = _csv_header(path)
    columns = first if header else [f"column {j}" for j in range(len(first))]
    label_column = to_plain(label_column)
    if isinstance(label_column, bool) or not isinstance(label_column, (str, int)):
        raise ValueError(f"csv: label_column must be a column name or a 0-based index, got {label_column!r}")
    if isinstance(label_column, int):
        if not 0 <= label_column < len(columns):
            raise ValueError(f"csv {path}: label_column={label_column} is out of range: the file has "
                             f"{len(columns)} columns (0..{len(columns) - 1})")
        li = label_column
    elif not header:
        raise ValueError(f"csv {path}: with header=false, label_column must be a 0-based column index "
                         f"(e.g. `{override('label_column', 0)}`), got {label_column!r}")
    elif label_column not in columns:
        shown = columns[:5] + (["..."] if len(columns) > 5 else [])
        raise ValueError(f"csv {path}: no column named {label_column!r} (label_column); the header is "
                         f"{','.join(shown)} ({len(columns)} columns). {_label_column_hint(columns)}")
    else:
        li = columns.index(label_column)
    pixel_cols = [j for j in range(len(columns)) if j != li]
    if not pixel_cols:
        raise ValueError(f"csv {path}: the file has only the label column {columns[li]!r} and no pixels")
    options = dict(delimiter=",", skiprows=1 if header else 0, ndmin=2, quotechar='"', encoding="utf-8-sig")
    if not _has_rows(path, header):  # numpy would only warn, and return an empty table
        raise ValueError(f"csv {path}: no data rows after the header")
    try:
        table = read_integer_table(path, header, len(columns))
        if table is None:
            table = np.loadtxt(path, dtype=np.float32, **options)
        if table.shape[1] != len(columns):  # consistent rows, but not as wide as the header
            raise ValueError(f"csv {path}: {_first_bad_cell(path, header, columns, li)}")
        raw_labels = table[:, li]
        pixels = np.delete(table, li, axis=1)
    except ValueError as err:  # text labels, a ragged line or a non-numeric pixel
        if str(err).startswith("csv "):
            raise
        try:
            pixels = np.loadtxt(path, dtype=np.float32, usecols=pixel_cols, **options)
            raw_labels = np.loadtxt(path, dtype=str, usecols=[li], **options)[:, 0]
        except ValueError:
            raise ValueError(f"csv {path}: {_first_bad_cell(path, header, columns, li)}; every pixel must be a "
                             "number") from None
    if not np.isfinite(pixels).all():
        raise ValueError(f"csv {path}: {_first_bad_cell(path, header, columns, li)}; every pixel must be a "
                         "finite number")
    labels, class_names = _csv_labels(raw_labels, path, columns[li])
    d = pixels.shape[1]
    shape = _csv_image_shape(image_shape, d, path, columns, li)
    if scale is not None:
        lo, hi = float(pixels.min()), float(pixels.max())
        if lo < 0 or hi > scale:
            fix = override("scale", None) if lo < 0 else override("scale", float(2 ** int(np.ceil(np.log2(hi + 1))) - 1))
            raise ValueError(f"csv {path}: pixel values span [{lo:g}, {hi:g}], outside [0, scale={scale:g}]; "
                             f"set the range they come from, `{fix}` (null keeps the values as stored)")
    keep = select_indices(labels, n_per_class=n_per_class, max_samples=max_samples,
                          classes=class_values(classes, class_names, "csv") if class_names else classes,
                          seed=seed, loader="csv")
    meta = {"dataset": "csv", "path": str(path), "indices": keep.tolist()}
    name = name or path.stem
    if shape is not None:
        c, h, w = shape
        images = pixels[keep].reshape(-1, h, w, c) if channels_last else pixels[keep].reshape(-1, c, h, w)
        return images_to_labeled_data(
            images, labels[keep], layout="NHWC" if channels_last else "NCHW", scale=scale or 1.0, resize=resize,
            channels=channels, normalize=normalize, transform=transform, seed=seed, class_names=class_names,
            name=name, loader="csv", meta=meta,
        )
    asked = [key for key, value in (("resize", resize), ("channels", channels), ("normalize", normalize))
             if value is not None]
    if asked:
        raise ValueError(f"csv {path}: {', '.join(asked)} need images, but the {d} pixel columns are not a square "
                         f"image; give their shape as {override('image_shape', '[C, H, W]')}")
    return finish_vectors(pixels[keep] / np.float32(scale or 1.0), labels[keep], transform=transform, seed=seed,
                          class_names=class_names, name=name, meta=meta)


def _csv_labels(raw: np.ndarray, path: Path, column: str) -> tuple[np.ndarray, list[str] | None]:
    """Integer labels as they are; text labels numbered by sorted name (names kept)."""
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all() or not np.all(raw == np.round(raw)):
            row = int(np.flatnonzero(~np.isfinite(raw) | (raw != np.round(raw)))[0])
            raise ValueError(f"csv {path}: label column {column!r} holds {float(raw[row]):g} on data row {row + 1}; "
                             "labels must be integers or text")
        return raw.astype(np.int64), None
    text = np.char.strip(raw.astype(str))
    if (text == "").any():
        row = int(np.flatnonzero(text == "")[0])
        raise ValueError(f"csv {path}: label column {column!r} is empty on data row {row + 1}")
    try:
        as_float = text.astype(np.float64)
    except ValueError:
        names, labels = np.unique(text, return_inverse=True)
        return labels.astype(np.int64), [str(n) for n in names]
    return _csv_labels(as_float, path, column)


def _csv_image_shape(image_shape: Any, d: int, path: Path, columns: list[str], li: int):
    image_shape = to_plain(image_shape)
    if image_shape is None:
        shapes = [s for s in square_image_shapes(d) if s[0] == 1]
        return shapes[0] if shapes else None
    if (not isinstance(image_shape, (list, tuple)) or len(image_shape) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in image_shape)):
        raise ValueError(f"csv: image_shape must be null or [C, H, W] (positive integers), got {image_shape!r}")
    shape = tuple(int(s) for s in image_shape)
    if int(np.prod(shape)) != d:
        shapes = square_image_shapes(d)
        fix = (f"; for these rows use e.g. `{override('image_shape', list(shapes[0]))}`" if shapes
               else "; check that only the label column is not a pixel")
        raise ValueError(f"csv {path}: image_shape {list(shape)} has {int(np.prod(shape))} pixels but each row has "
                         f"{d} pixel columns ({len(columns)} columns less the label column {columns[li]!r}){fix}")
    return shape
