"""Can a source flow toward a target?  The feature-space check, with a fix that works.

A flow moves the source's samples in the target's feature space, so both must have the
same dimension.  When they do not, the error names the override that brings the source to
the target's image size and channels, chosen from the keys the source's *config* actually
has (``source.resize`` / ``source.channels`` where its loader takes them, else transforms
appended to its own ``transform`` list), because a hint that names a missing key fails in
Hydra's struct mode with another error.
"""

from __future__ import annotations

from typing import Any

from dsflow.data.common import shell_override, to_plain


def _keys(cfg: Any) -> set[str]:
    cfg = to_plain(cfg) if cfg is not None else None
    return set(cfg) if isinstance(cfg, dict) else set()


def _transform_override(side: str, cfg: Any, extra: list[dict]) -> str:
    """``'side.transform=[...existing, ...extra]'``: the side's own transforms kept."""
    current = to_plain(cfg.get("transform")) if cfg is not None and "transform" in _keys(cfg) else None
    if current is None:
        current = []
    elif isinstance(current, (str, dict)):
        current = [current]
    return shell_override(f"{side}.transform", [*current, *extra])


def image_fix(side: str, data, shape: tuple[int, int, int], cfg: Any = None) -> str:
    """The overrides that turn ``side``'s images (``data``) into images of ``shape`` (C, H, W).

    With the side's config (``cfg``): its ``resize``/``channels`` keys when it has them, else
    the ``resize``/``channels`` transforms appended to its ``transform`` list.  Without a config
    (a Python caller), the loader options by name."""
    c, h, w = shape
    c0, h0, w0 = data.image_shape
    keys = _keys(cfg)
    options, transforms = [], []
    prefix = f"{side}." if cfg is not None else ""  # a Python caller passes keyword arguments
    if (h0, w0) != (h, w):
        if cfg is None or "resize" in keys:
            options.append(shell_override(f"{prefix}resize", [h, w]))
        else:
            transforms.append({"name": "resize", "size": [h, w]})
    if c0 != c:
        if cfg is None or "channels" in keys:
            options.append(f"{prefix}channels={c}")
        else:
            transforms.append({"name": "channels", "channels": c})
    if transforms and (cfg is None or "transform" in keys):
        options.append(_transform_override(side, cfg, transforms))
    elif transforms:
        return ""
    return " ".join(options)


def feature_space_hint(source, target, source_cfg: Any = None, target_cfg: Any = None) -> str:
    """How to give ``source`` the feature space of ``target`` (one sentence)."""
    if source.is_image and target.is_image:
        fix = image_fix("source", source, target.image_shape, source_cfg)
        c, h, w = target.image_shape
        what = f"Bring the source to the target's {c}x{h}x{w} images"
        if not fix:
            return f"{what} with the resize and channels transforms in its dataset config"
        how = "add" if source_cfg is not None else "load it with"
        return f"{what}: {how} {fix}"
    if source.is_image != target.is_image:
        images, vectors = (source, target) if source.is_image else (target, source)
        return (f"{images.name!r} holds images and {vectors.name!r} flat features of another dimension; pick a "
                "dataset of the same kind for the other side (or store the features with the images' dimension)")
    for side, cfg, other in (("source", source_cfg, target), ("target", target_cfg, source)):
        if "dim" in _keys(cfg) and other.d >= 2:
            return f"Give the {side} the other side's dimension: add {side}.dim={other.d}"
    return ("Pick datasets of the same dimension, or bring both to one feature space first "
            "(e.g. a projection stored with numpy.savez and read by dataset=npz)")


def check_same_feature_space(source, target, source_cfg: Any = None, target_cfg: Any = None) -> None:
    """Source and target must share the feature dimension (OTDD compares features).

    ``source_cfg``/``target_cfg`` (the runs' ``cfg.source``/``cfg.target``) make the message's
    fix an override that exists for these datasets."""
    if source.d == target.d:
        return

    def shape(data):
        return f"d={data.d}" + (f", image {'x'.join(map(str, data.image_shape))}" if data.image_shape else "")

    raise ValueError(
        f"source {source.name!r} ({shape(source)}) and target {target.name!r} ({shape(target)}) "
        f"have different feature dimensions; a flow needs one feature space. "
        f"{feature_space_hint(source, target, source_cfg, target_cfg)}"
    )
