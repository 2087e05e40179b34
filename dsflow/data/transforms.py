"""Transforms: small pure functions ``LabeledData -> LabeledData`` with a name registry.

They build *derived domains* from existing data (rotated / inverted digits with permuted
labels, noisy or shifted point clouds, ...).  A loader's ``transform`` option is a list
applied in order, each entry a name (``"invert"``) or a dict ``{name: rotate, angle: 30}``.

Transforms that draw random numbers take a ``seed``; when a spec does not give one, the
loader's ``seed`` is used, so a run seed reproduces the whole derived dataset.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from dsflow.data.common import convert_channels, image_size_hw, resize_images, to_plain

TRANSFORMS: dict[str, Callable] = {}


def register_transform(name: str) -> Callable[[Callable], Callable]:
    """Decorator adding a transform to :data:`TRANSFORMS` under ``name``."""

    def decorator(fn: Callable) -> Callable:
        if name in TRANSFORMS:
            raise ValueError(f"transform {name!r} is already registered")
        TRANSFORMS[name] = fn
        return fn

    return decorator


def _require_images(data, transform: str) -> None:
    if not data.is_image:
        raise ValueError(
            f"transform {transform!r} needs image data (image_shape (C, H, W)); "
            f"{data.name!r} has image_shape={data.image_shape}"
        )


def _replace_images(data, images):
    """``data`` with ``x`` replaced by flattened ``images`` (image_shape follows)."""
    return data.with_(x=images.reshape(images.shape[0], -1), image_shape=tuple(int(s) for s in images.shape[1:]))


def _generator(seed: int | None):
    import torch

    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def _per_feature(value: Any, data, what: str):
    """A scalar or a length-d list as a tensor broadcastable against ``x``."""
    import torch

    value = to_plain(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=data.x.dtype)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == data.d:
        return torch.tensor([float(v) for v in value], dtype=data.x.dtype)
    raise ValueError(f"transform {what!r}: expected a number or a list of {data.d} numbers (one per feature), got {value!r}")


# ---------------------------------------------------------------------------- geometry
@register_transform("rotate90")
def rotate90(data, k: int = 1):
    """Rotate images by ``k`` quarter turns counter-clockwise (as displayed); images only."""
    import torch

    _require_images(data, "rotate90")
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"transform 'rotate90': k must be an integer number of quarter turns, got {k!r}")
    return _replace_images(data, torch.rot90(data.images(), k % 4, dims=(-2, -1)))


def _rotation_matrix(angle_degrees: float, dtype):
    import torch

    a = math.radians(float(angle_degrees))
    return torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=dtype)


@register_transform("rotate")
def rotate(data, angle: float = 90.0):
    """Rotate by ``angle`` degrees counter-clockwise: images (bilinear, zero fill) or 2-D points.

    Points rotate about the origin; images about their centre.
    """
    import torch
    import torch.nn.functional as F

    if isinstance(angle, bool) or not isinstance(angle, (int, float)):
        raise ValueError(f"transform 'rotate': angle must be a number of degrees, got {angle!r}")
    if data.is_image:
        images = data.images()
        h, w = images.shape[-2:]
        # affine_grid maps output -> input coordinates in the normalised frame (x right,
        # y down), so a counter-clockwise turn as displayed reads the input at R(angle) p.
        # Non-square images: account for the different pixel scales of the two axes.
        rot = _rotation_matrix(angle, torch.float64)
        aspect = torch.tensor([[1.0, 0.0], [0.0, h / w]], dtype=torch.float64)
        theta2 = torch.linalg.inv(aspect) @ rot @ aspect
        theta = torch.zeros(1, 2, 3, dtype=torch.float64)
        theta[0, :, :2] = theta2
        grid = F.affine_grid(theta.to(images.dtype).expand(images.shape[0], 2, 3), list(images.shape), align_corners=False)
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return _replace_images(data, out)
    if data.d != 2:
        raise ValueError(
            f"transform 'rotate' works on images or 2-D points; {data.name!r} has {data.d} features "
            f"and no image_shape"
        )
    return data.with_(x=data.x @ _rotation_matrix(angle, data.x.dtype).T)


@register_transform("flip")
def flip(data, axis: Any = "horizontal"):
    """Mirror images (``axis: horizontal`` = left-right, ``vertical`` = up-down),
    or negate feature ``axis`` (an integer) of vector data."""
    import torch

    if data.is_image:
        dims = {"horizontal": (-1,), "vertical": (-2,)}
        if axis not in dims:
            raise ValueError(f"transform 'flip' on images: axis must be 'horizontal' or 'vertical', got {axis!r}")
        return _replace_images(data, torch.flip(data.images(), dims=dims[axis]))
    if axis == "horizontal":
        axis = 0  # the default reads as "mirror the first coordinate" for points
    if isinstance(axis, bool) or not isinstance(axis, int) or not -data.d <= axis < data.d:
        raise ValueError(f"transform 'flip' on vectors: axis must be a feature index in [0, {data.d}), got {axis!r}")
    x = data.x.clone()
    x[:, axis] = -x[:, axis]
    return data.with_(x=x)


@register_transform("resize")
def resize(data, size: Any = 28, antialias: bool = True):
    """Resize images to ``size`` (int or ``[H, W]``), bilinear via ``torch.nn.functional.interpolate``."""
    _require_images(data, "resize")
    image_size_hw(size, "transform 'resize'")
    return _replace_images(data, resize_images(data.images(), size, antialias=antialias))


@register_transform("channels")
def channels(data, channels: int = 1):
    """Convert images to ``channels`` (1 or 3) channels: RGB -> grey by ITU-R 601 luma
    (0.299, 0.587, 0.114), grey -> RGB by repeating the channel.  Every image loader has the
    same conversion as its ``channels`` option; this is the transform for data that arrive
    some other way (a custom loader, or after other transforms)."""
    _require_images(data, "channels")
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"transform 'channels': channels must be 1 or 3, got {channels!r}")
    return _replace_images(data, convert_channels(data.images(), channels, "transform 'channels'"))


# ---------------------------------------------------------------------------- intensities
@register_transform("invert")
def invert(data):
    """``1 - x`` for data in ``[0, 1]`` (white digits on black become black on white)."""
    lo, hi = float(data.x.min()), float(data.x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(
            f"transform 'invert' expects values in [0, 1] but {data.name!r} spans [{lo:.3g}, {hi:.3g}]; "
            f"apply it before normalize/standardize/shift"
        )
    return data.with_(x=1.0 - data.x)


@register_transform("shift")
def shift(data, offset: Any = 0.0):
    """Add ``offset`` (a number or one value per feature) to the features."""
    return data.with_(x=data.x + _per_feature(offset, data, "shift"))


@register_transform("scale")
def scale(data, factor: Any = 1.0):
    """Multiply the features by ``factor`` (a number or one value per feature)."""
    return data.with_(x=data.x * _per_feature(factor, data, "scale"))


@register_transform("noise")
def noise(data, std: float = 0.1, seed: int | None = None, clip: Any = None):
    """Add seeded Gaussian noise of standard deviation ``std``; ``clip: [lo, hi]`` clamps after."""
    import torch

    if isinstance(std, bool) or not isinstance(std, (int, float)) or std < 0:
        raise ValueError(f"transform 'noise': std must be a non-negative number, got {std!r}")
    x = data.x + float(std) * torch.randn(data.x.shape, generator=_generator(seed), dtype=data.x.dtype)
    clip = to_plain(clip)
    if clip is not None:
        if not isinstance(clip, (list, tuple)) or len(clip) != 2 or clip[0] >= clip[1]:
            raise ValueError(f"transform 'noise': clip must be null or [low, high] with low < high, got {clip!r}")
        x = x.clamp(float(clip[0]), float(clip[1]))
    return data.with_(x=x)


@register_transform("standardize")
def standardize(data, eps: float = 1e-8):
    """Per-feature zero mean and unit standard deviation (constant features are only centred)."""
    mean = data.x.mean(dim=0, keepdim=True)
    std = data.x.std(dim=0, unbiased=False, keepdim=True)
    std = std.masked_fill(std < eps, 1.0)
    return data.with_(x=(data.x - mean) / std)


# ---------------------------------------------------------------------------- labels
@register_transform("permute_labels")
def permute_labels(data, seed: int | None = None, perm: Any = None):
    """Relabel classes by a bijection of the label set.

    ``perm`` is a dict ``{old: new}`` or a list giving the new value of each sorted class;
    without it a seeded random permutation of the label values is drawn.  Class names follow
    the samples (class ``new`` keeps the name of ``old``) and the mapping is stored in
    ``meta["label_permutation"]`` so evaluations can undo it.
    """
    import torch

    old = [int(c) for c in data.classes.tolist()]
    perm = to_plain(perm)
    if perm is None:
        order = torch.randperm(len(old), generator=_generator(seed)).tolist()
        mapping = {o: old[j] for o, j in zip(old, order)}
    elif isinstance(perm, Mapping):
        mapping = {int(k): int(v) for k, v in perm.items()}
        if sorted(mapping) != old:
            raise ValueError(
                f"transform 'permute_labels': perm keys {sorted(mapping)} must be exactly the label values {old}"
            )
    elif isinstance(perm, Sequence) and not isinstance(perm, str):
        if len(perm) != len(old):
            raise ValueError(
                f"transform 'permute_labels': perm has {len(perm)} entries but there are {len(old)} classes {old}"
            )
        mapping = {o: int(v) for o, v in zip(old, perm)}
    else:
        raise ValueError(f"transform 'permute_labels': perm must be null, a list or a dict, got {perm!r}")
    if len(set(mapping.values())) != len(mapping):
        raise ValueError(f"transform 'permute_labels': perm {mapping} is not a bijection (repeated new labels)")
    old_t = torch.tensor(old, dtype=torch.long)
    new_t = torch.tensor([mapping[o] for o in old], dtype=torch.long)
    y = new_t[torch.searchsorted(old_t, data.y.cpu())].to(data.y.device)
    names = {mapping[o]: data.class_name(o) for o in old}
    previous = data.meta.get("label_permutation")
    if previous:  # compose with an earlier permutation so meta maps original -> current labels
        mapping = {k: mapping.get(v, v) for k, v in previous.items()}
    return data.with_(y=y, class_names=names, meta={**data.meta, "label_permutation": mapping})


# ---------------------------------------------------------------------------- application
def parse_transform_spec(spec: Any) -> list[tuple[str, dict[str, Any]]]:
    """``None | name | {name: ..., opt: ...} | list of those`` -> ``[(name, options), ...]``."""
    spec = to_plain(spec)
    if spec is None:
        return []
    if isinstance(spec, (str, Mapping)):
        spec = [spec]
    if not isinstance(spec, Sequence):
        raise ValueError(f"transform must be a list of names or {{name: ..., ...}} dicts, got {spec!r}")
    steps = []
    for entry in spec:
        if isinstance(entry, str):
            name, options = entry, {}
        elif isinstance(entry, Mapping) and "name" in entry:
            options = dict(entry)
            name = options.pop("name")
        else:
            raise ValueError(
                f"transform entry {entry!r} is neither a name nor a dict with a 'name' key "
                f"(e.g. {{name: rotate90, k: 1}})"
            )
        if name not in TRANSFORMS:
            raise ValueError(f"unknown transform {name!r}; valid transforms: {sorted(TRANSFORMS)}")
        accepted = [p for p in inspect.signature(TRANSFORMS[name]).parameters if p != "data"]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"transform {name!r}: unknown option(s) {unknown}; it accepts {accepted}")
        steps.append((name, options))
    return steps


def apply_transforms(data, spec: Any, *, seed: int | None = None):
    """Apply the transforms in ``spec`` in order; ``seed`` fills in seeds not given explicitly."""
    steps = parse_transform_spec(spec)
    applied = list(data.meta.get("transforms", []))
    for name, options in steps:
        fn = TRANSFORMS[name]
        if "seed" in inspect.signature(fn).parameters and options.get("seed") is None:
            options = {**options, "seed": seed}
        data = fn(data, **options)
        applied.append({"name": name, **options})
    if steps:
        data = data.with_(meta={**data.meta, "transforms": applied})
    return data
