"""scikit-learn digits, the derived rotated domain, and user .npz files."""

import numpy as np
import pytest
import torch

from dsflow.data import LabeledData, digits, npz


def test_digits_matches_sklearn_scaled():
    from sklearn.datasets import load_digits

    ref = load_digits()
    data = digits()
    assert data.n == 1797 and data.image_shape == (1, 8, 8) and data.d == 64
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
    assert data.names == [str(i) for i in range(10)]
    np.testing.assert_allclose(data.x.numpy(), ref.data / 16.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(data.y.numpy(), ref.target)
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0


def test_digits_subsample_options():
    data = digits(n_per_class=7, classes=[1, 4, 9], seed=3)
    assert data.n == 21 and data.classes.tolist() == [1, 4, 9]
    from sklearn.datasets import load_digits

    ref = load_digits()
    np.testing.assert_allclose(data.x.numpy(), ref.data[data.meta["indices"]] / 16.0, atol=1e-7)
    rgb = digits(max_samples=5, channels=3, resize=16, normalize={"mean": [0.5], "std": [0.5]})
    assert rgb.image_shape == (3, 16, 16) and rgb.n == 5
    assert float(rgb.x.min()) >= -1.0 - 1e-6 and float(rgb.x.max()) <= 1.0 + 1e-6


def test_digits_rotated_derived_domain():
    base = digits(n_per_class=10, seed=4)
    derived = digits(n_per_class=10, seed=4, transform=["rotate90", "invert", "permute_labels"])
    expected = 1.0 - torch.rot90(base.images(), 1, dims=(-2, -1))
    torch.testing.assert_close(derived.images(), expected, rtol=0, atol=1e-7)
    mapping = derived.meta["label_permutation"]
    np.testing.assert_array_equal(derived.y.numpy(), [mapping[int(v)] for v in base.y])
    assert sorted(mapping.values()) == list(range(10))
    assert derived.meta["transforms"][0] == {"name": "rotate90"}


# ---------------------------------------------------------------------------- npz
def test_npz_roundtrip_of_save_npz(tmp_path):
    data = digits(n_per_class=3, seed=0).with_(name="mine", class_names={i: f"c{i}" for i in range(10)})
    path = data.save_npz(tmp_path / "mine.npz")
    back = npz(path=path)
    torch.testing.assert_close(back.x, data.x)
    assert back.y.tolist() == data.y.tolist() and back.image_shape == (1, 8, 8)
    assert back.name == "mine" and back.class_name(3) == "c3"
    sub = npz(path=path, n_per_class=1, classes=[2, 5], transform=["invert"], seed=1)
    assert sub.n == 2 and float(sub.x.max()) <= 1.0


def test_npz_custom_keys_layouts_and_uint8(tmp_path):
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(6, 5, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "imgs.npz", images=hwc, target=np.arange(6) % 2)
    data = npz(path=tmp_path / "imgs.npz", x_key="images", y_key="target")
    assert data.image_shape == (3, 5, 4)
    np.testing.assert_allclose(data.images().numpy(), hwc.transpose(0, 3, 1, 2) / 255.0, atol=1e-7)
    np.savez(tmp_path / "flat.npz", x=rng.random((4, 12)), y=np.array([1.0, 2.0, 1.0, 2.0]))
    flat = npz(path=tmp_path / "flat.npz", image_shape=[3, 2, 2])
    assert flat.image_shape == (3, 2, 2) and flat.y.dtype == torch.int64 and flat.classes.tolist() == [1, 2]
    grey = npz(path=tmp_path / "flat.npz")
    assert grey.image_shape is None and grey.d == 12


def test_npz_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="npz: file not found: .*nothere.npz"):
        npz(path=tmp_path / "nothere.npz")
    with pytest.raises(ValueError, match="give the file with `path=/data/mine.npz`"):
        npz()
    np.savez(tmp_path / "keys.npz", features=np.zeros((3, 2)), labels=np.zeros(3))
    with pytest.raises(ValueError, match=r"no array named 'x' \(x_key\); the file holds \['features', 'labels'\]"):
        npz(path=tmp_path / "keys.npz")
    with pytest.raises(ValueError, match=r"no array named 'y' \(y_key\)"):
        npz(path=tmp_path / "keys.npz", x_key="features")
    np.savez(tmp_path / "mismatch.npz", x=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(ValueError, match=r"'x' has 3 samples \(shape \(3, 2\)\) but 'y' has 4 labels"):
        npz(path=tmp_path / "mismatch.npz")
    np.savez(tmp_path / "y2d.npz", x=np.zeros((3, 2)), y=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"labels 'y' must be 1-D \(n,\), got shape \(3, 2\)"):
        npz(path=tmp_path / "y2d.npz")
    np.savez(tmp_path / "x1d.npz", x=np.zeros(3), y=np.zeros(3))
    with pytest.raises(ValueError, match=r"features 'x' must be at least 2-D"):
        npz(path=tmp_path / "x1d.npz")
    np.savez(tmp_path / "frac.npz", x=np.zeros((2, 2)), y=np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="must be integers"):
        npz(path=tmp_path / "frac.npz")
    np.savez(tmp_path / "shape.npz", x=np.zeros((2, 10)), y=np.zeros(2))
    with pytest.raises(ValueError, match=r"image_shape \(1, 3, 3\) has 9 values per sample"):
        npz(path=tmp_path / "shape.npz", image_shape=[1, 3, 3])
    (tmp_path / "junk.npz").write_text("not a zip")  # was numpy's misleading allow_pickle message
    np.save(tmp_path / "one.npy", np.zeros((2, 3)))  # was a TypeError
    with pytest.raises(ValueError, match=r"one.npy' is a .npy file .*numpy.savez\(path, x=x, y=y\)"):
        npz(path=tmp_path / "one.npy")
    (tmp_path / "folder.npz").mkdir()  # was "file not found"
    with pytest.raises(ValueError, match=r"folder.npz' is a directory; .* must name the .npz file itself"):
        npz(path=tmp_path / "folder.npz")
    with pytest.raises(ValueError, match=r"junk.npz' is not an .npz archive .*numpy.savez"):
        npz(path=tmp_path / "junk.npz")


def test_npz_subsampling_is_seeded(tmp_path):
    LabeledData(x=np.random.default_rng(0).random((50, 3)), y=np.arange(50) % 5).save_npz(tmp_path / "d.npz")
    a = npz(path=tmp_path / "d.npz", n_per_class=4, seed=7)
    b = npz(path=tmp_path / "d.npz", n_per_class=4, seed=7)
    torch.testing.assert_close(a.x, b.x)
    assert a.meta["indices"] == b.meta["indices"] and a.n == 20
    with pytest.raises(ValueError, match="n_per_class=11 is larger than some classes"):
        npz(path=tmp_path / "d.npz", n_per_class=11)


def test_a_digits_classifier_fails_on_the_derived_domain():
    # Nearest-class-mean classifier fitted on digits: ~90% on digits, near chance (10%) on the
    # rotated + inverted digits even before the labels are permuted.
    base = digits()
    means = torch.stack([base.x[base.y == c].mean(0) for c in range(10)])

    def accuracy(data):
        return float((torch.cdist(data.x, means).argmin(1) == data.y).float().mean())

    assert accuracy(base) > 0.85
    assert accuracy(digits(transform=["rotate90", "invert"])) < 0.25
    assert accuracy(digits(transform=["rotate90", "invert", "permute_labels"], seed=0)) < 0.25


def test_digits_halves_are_fixed_stratified_and_disjoint():
    from dsflow.data import digits

    train, test = digits(split="train"), digits(split="test")
    assert (train.n, test.n) == (901, 896)
    a, b = set(train.meta["indices"]), set(test.meta["indices"])
    assert not a & b and len(a | b) == 1797
    assert (train.class_counts() - test.class_counts()).abs().max() <= 1  # stratified
    # the halves do not move with the run seed; subsampling stays inside the half
    assert digits(split="test", seed=7).meta["indices"] == test.meta["indices"]
    sub = digits(split="test", n_per_class=5, seed=3)
    assert sub.n == 50 and set(sub.meta["indices"]) <= b
    with pytest.raises(ValueError, match="split must be one of all, train, test"):
        digits(split="val")
