"""Transforms: identities, closed forms, numpy references, seeds and error messages."""

import math

import numpy as np
import pytest
import torch

from dsflow.data import LabeledData
from dsflow.data.transforms import TRANSFORMS, apply_transforms, parse_transform_spec


def images(n=6, c=1, h=5, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    return LabeledData(x=x, y=torch.arange(n) % 3, class_names=["a", "b", "c"], name="img")


def points(n=50, d=2, seed=0, labels=None):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4 if labels is None else torch.as_tensor(labels)
    return LabeledData(x=torch.randn(n, d, generator=g), y=y, name="pts")


def apply(data, *spec, seed=0):
    return apply_transforms(data, list(spec), seed=seed)


# ---------------------------------------------------------------------------- geometry
def test_rotate90_known_example_four_times_identity_and_numpy():
    data = LabeledData(x=torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), y=[0])
    # counter-clockwise as displayed: the top-right pixel moves to the top-left
    np.testing.assert_array_equal(apply(data, "rotate90").images()[0, 0].numpy(), [[2.0, 4.0], [1.0, 3.0]])
    imgs = images(c=3, h=4, w=6)
    four = apply(imgs, *["rotate90"] * 4)
    torch.testing.assert_close(four.x, imgs.x, rtol=0, atol=0)
    two = apply(imgs, {"name": "rotate90", "k": 3})
    assert two.image_shape == (3, 6, 4)  # non-square: H and W swap
    np.testing.assert_array_equal(two.images().numpy(), np.rot90(imgs.images().numpy(), 3, axes=(2, 3)))
    np.testing.assert_array_equal(apply(imgs, {"name": "rotate90", "k": -1}).x.numpy(), two.x.numpy())


def test_rotate_images_matches_rotate90_and_zero_is_identity():
    imgs = images(c=2, h=7, w=7)
    torch.testing.assert_close(apply(imgs, {"name": "rotate", "angle": 90}).x, apply(imgs, "rotate90").x,
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(apply(imgs, {"name": "rotate", "angle": -90}).x,
                               apply(imgs, {"name": "rotate90", "k": 3}).x, rtol=0, atol=1e-5)
    torch.testing.assert_close(apply(imgs, {"name": "rotate", "angle": 0}).x, imgs.x, rtol=0, atol=1e-6)
    wide = images(c=1, h=4, w=6)  # non-square: a half turn is a flip of both axes
    torch.testing.assert_close(apply(wide, {"name": "rotate", "angle": 180}).images(),
                               wide.images().flip(-1).flip(-2), rtol=0, atol=1e-5)
    # 45 degrees: corners leave the frame and are filled with zeros, the centre pixel stays
    turned = apply(imgs, {"name": "rotate", "angle": 45}).images()
    assert float(turned[:, :, 0, 0].abs().max()) == 0.0  # exact: the corner samples only the zero fill
    torch.testing.assert_close(turned[:, :, 3, 3], imgs.images()[:, :, 3, 3], rtol=0, atol=1e-5)


def test_rotate_points_closed_form_and_errors():
    pts = points()
    a = math.radians(30)
    expected = torch.stack([pts.x[:, 0] * math.cos(a) - pts.x[:, 1] * math.sin(a),
                            pts.x[:, 0] * math.sin(a) + pts.x[:, 1] * math.cos(a)], dim=1)
    torch.testing.assert_close(apply(pts, {"name": "rotate", "angle": 30}).x, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="images or 2-D points.*3 features"):
        apply(points(d=3), "rotate")
    with pytest.raises(ValueError, match="needs image data"):
        apply(points(), "rotate90")


def test_flip_images_and_vectors():
    imgs = images(h=3, w=4)
    np.testing.assert_array_equal(apply(imgs, "flip").images().numpy(), imgs.images().numpy()[..., ::-1])
    np.testing.assert_array_equal(apply(imgs, {"name": "flip", "axis": "vertical"}).images().numpy(),
                                  imgs.images().numpy()[..., ::-1, :])
    torch.testing.assert_close(apply(imgs, "flip", "flip").x, imgs.x, rtol=0, atol=0)
    pts = points(d=3)
    flipped = apply(pts, {"name": "flip", "axis": 2}).x
    torch.testing.assert_close(flipped[:, 2], -pts.x[:, 2])
    torch.testing.assert_close(flipped[:, :2], pts.x[:, :2])
    with pytest.raises(ValueError, match="feature index in \\[0, 3\\)"):
        apply(pts, {"name": "flip", "axis": 5})


def _bilinear_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Half-pixel-centre bilinear upsampling (align_corners=False), edges clamped, in float64."""
    h, w = img.shape

    def coords(n_out, n_in):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    r0, r1, fr = coords(out_h, h)
    c0, c1, fc = coords(out_w, w)
    top = img[r0][:, c0] * (1 - fc) + img[r0][:, c1] * fc
    bottom = img[r1][:, c0] * (1 - fc) + img[r1][:, c1] * fc
    return top * (1 - fr[:, None]) + bottom * fr[:, None]


def test_resize_matches_bilinear_reference_and_keeps_constants():
    imgs = images(n=2, c=1, h=3, w=3)
    out = apply(imgs, {"name": "resize", "size": [5, 7]})
    assert out.image_shape == (1, 5, 7) and out.d == 35
    for i in range(2):
        ref = _bilinear_reference(imgs.images()[i, 0].double().numpy(), 5, 7)
        np.testing.assert_allclose(out.images()[i, 0].numpy(), ref, rtol=0, atol=1e-6)
    const = LabeledData(x=torch.full((2, 3, 8, 8), 0.25), y=[0, 1])
    small = apply(const, {"name": "resize", "size": 3})
    assert small.image_shape == (3, 3, 3)
    torch.testing.assert_close(small.x, torch.full_like(small.x, 0.25))
    with pytest.raises(ValueError, match="positive int or \\[height, width\\]"):
        apply(imgs, {"name": "resize", "size": [0, 3]})


# ---------------------------------------------------------------------------- intensities
def test_invert_twice_is_identity_and_checks_range():
    imgs = images()
    once = apply(imgs, "invert")
    torch.testing.assert_close(once.x, 1 - imgs.x)
    torch.testing.assert_close(apply(imgs, "invert", "invert").x, imgs.x, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="expects values in \\[0, 1\\].*before normalize"):
        apply(points(), "invert")


def test_shift_scale_closed_forms_and_order():
    pts = points(d=2)
    torch.testing.assert_close(apply(pts, {"name": "shift", "offset": [1.0, -2.0]}).x,
                               pts.x + torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(apply(pts, {"name": "scale", "factor": 3}).x, pts.x * 3)
    # order matters: (x + 1) * 2 versus x * 2 + 1
    torch.testing.assert_close(apply(pts, {"name": "shift", "offset": 1}, {"name": "scale", "factor": 2}).x,
                               (pts.x + 1) * 2)
    torch.testing.assert_close(apply(pts, {"name": "scale", "factor": 2}, {"name": "shift", "offset": 1}).x,
                               pts.x * 2 + 1)
    with pytest.raises(ValueError, match="list of 2 numbers"):
        apply(pts, {"name": "shift", "offset": [1.0, 2.0, 3.0]})


def test_noise_seeded_with_right_std():
    big = LabeledData(x=torch.zeros(20000, 3), y=torch.zeros(20000, dtype=torch.long))
    a = apply(big, {"name": "noise", "std": 0.3}, seed=5)
    b = apply(big, {"name": "noise", "std": 0.3}, seed=5)
    c = apply(big, {"name": "noise", "std": 0.3, "seed": 6}, seed=5)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    assert not torch.equal(a.x, c.x)
    # sample std of 60000 N(0, 0.09) draws: relative standard error ~0.3%, allow 3%
    assert abs(float(a.x.std()) - 0.3) < 0.009 and abs(float(a.x.mean())) < 0.01
    clipped = apply(big, {"name": "noise", "std": 1.0, "clip": [-0.5, 0.5]})
    assert float(clipped.x.abs().max()) <= 0.5


def test_standardize_zero_mean_unit_std_constant_features_centred():
    x = torch.randn(100, 3) * torch.tensor([5.0, 0.1, 0.0]) + torch.tensor([3.0, -1.0, 7.0])
    out = apply(LabeledData(x=x, y=torch.zeros(100, dtype=torch.long)), "standardize").x
    torch.testing.assert_close(out.mean(0), torch.zeros(3), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[:, :2].std(0, unbiased=False), torch.ones(2), rtol=0, atol=1e-5)
    # exact: the constant column is 7.0 in every row, so its float32 sum (integers <= 700) and mean
    # are exact on any summation order, and x - mean is 0
    assert float(out[:, 2].abs().max()) == 0.0


# ---------------------------------------------------------------------------- labels
def test_permute_labels_is_a_seeded_bijection_recorded_in_meta():
    pts = points(n=60, labels=np.repeat([2, 5, 9, 11], 15))
    pts = pts.with_(class_names={2: "two", 5: "five", 9: "nine", 11: "eleven"})
    out = apply(pts, "permute_labels", seed=3)
    mapping = out.meta["label_permutation"]
    assert sorted(mapping) == [2, 5, 9, 11] and sorted(mapping.values()) == [2, 5, 9, 11]
    np.testing.assert_array_equal(out.y.numpy(), [mapping[int(v)] for v in pts.y])
    assert out.class_name(mapping[5]) == "five"  # names follow the samples
    assert apply(pts, "permute_labels", seed=3).meta["label_permutation"] == mapping
    assert any(apply(pts, "permute_labels", seed=s).meta["label_permutation"] != mapping for s in range(4, 10))
    torch.testing.assert_close(out.x, pts.x)


def test_permute_labels_explicit_and_composed():
    pts = points(n=8, labels=[0, 1, 2, 0, 1, 2, 0, 1])
    out = apply(pts, {"name": "permute_labels", "perm": [2, 0, 1]})
    np.testing.assert_array_equal(out.y.numpy(), [2, 0, 1, 2, 0, 1, 2, 0])
    back = apply(out, {"name": "permute_labels", "perm": {2: 0, 0: 1, 1: 2}})
    np.testing.assert_array_equal(back.y.numpy(), pts.y.numpy())
    assert back.meta["label_permutation"] == {0: 0, 1: 1, 2: 2}
    with pytest.raises(ValueError, match="not a bijection"):
        apply(pts, {"name": "permute_labels", "perm": [0, 0, 1]})
    with pytest.raises(ValueError, match="perm has 2 entries but there are 3 classes"):
        apply(pts, {"name": "permute_labels", "perm": [0, 1]})
    with pytest.raises(ValueError, match="must be exactly the label values \\[0, 1, 2\\]"):
        apply(pts, {"name": "permute_labels", "perm": {0: 1, 1: 0, 3: 2}})


# ---------------------------------------------------------------------------- spec handling
def test_spec_parsing_and_errors():
    assert parse_transform_spec(None) == []
    assert parse_transform_spec("invert") == [("invert", {})]
    assert parse_transform_spec([{"name": "rotate", "angle": 5}]) == [("rotate", {"angle": 5})]
    with pytest.raises(ValueError, match="unknown transform 'rotate45'; valid transforms: \\[.*'rotate90'.*\\]"):
        parse_transform_spec(["rotate45"])
    with pytest.raises(ValueError, match="transform 'noise': unknown option\\(s\\) \\['sigma'\\]; it accepts"):
        parse_transform_spec([{"name": "noise", "sigma": 1}])
    with pytest.raises(ValueError, match="neither a name nor a dict with a 'name' key"):
        parse_transform_spec([{"rotate90": {"k": 1}}])
    assert {"rotate90", "rotate", "flip", "invert", "permute_labels", "shift", "scale", "noise", "standardize",
            "resize"} <= set(TRANSFORMS)


def test_applied_transforms_recorded_and_omegaconf_accepted():
    from omegaconf import OmegaConf

    spec = OmegaConf.create([{"name": "shift", "offset": [1.0, 1.0]}, "standardize"])
    out = apply_transforms(points(), spec, seed=0)
    assert [t["name"] for t in out.meta["transforms"]] == ["shift", "standardize"]
