"""`dataset=image_folder`: PNG/JPEG files the tests write with PIL, read through the real loader.

torchvision's ``ImageFolder`` is the reference for class order, labels and (RGB) pixels; PIL's
own ``convert("L")`` for the grey conversion; ``torch.nn.functional.interpolate`` for resizing.
"""

import numpy as np
import pytest
import torch

from dsflow.data import image_folder
from dsflow.data.common import config_prefix


def write_folder(root, classes, *, n=3, size=(10, 12), mode="RGB", ext="png", seed=0):
    """``root/CLASS/i.EXT`` random images; returns {relative path: uint8 array as written}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = {}
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (*size, 3) if mode == "RGB" else size
            pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(root / cls / f"{i}.{ext}")
            written[f"{cls}/{i}.{ext}"] = pixels
    return written


def torchvision_reference(root):
    """``(x (n, 3, H, W) in [0, 1], labels, classes)`` as torchvision's ImageFolder reads ``root``."""
    from torchvision.datasets import ImageFolder

    ref = ImageFolder(str(root))
    x = np.stack([np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0 for img, _ in ref])
    return x, np.asarray(ref.targets), ref.classes


def test_png_and_jpeg_folders_match_torchvision_imagefolder(tmp_path):
    write_folder(tmp_path, ["zebra", "cat", "dog"], ext="png")
    write_folder(tmp_path, ["zebra", "cat", "dog"], ext="jpg", seed=1)  # a mix of PNG and JPEG in each class
    data = image_folder(tmp_path)
    x_ref, y_ref, classes = torchvision_reference(tmp_path)
    assert classes == ["cat", "dog", "zebra"] and data.names == classes  # sorted names -> labels 0, 1, 2
    assert data.class_names == {0: "cat", 1: "dog", 2: "zebra"}
    assert data.y.tolist() == y_ref.tolist() and data.image_shape == (3, 10, 12) and data.n == 18
    assert data.x.dtype == torch.float32
    # the same decoder (PIL) on both sides: bit-identical pixels, JPEG included
    assert np.array_equal(data.images().numpy(), x_ref)
    assert data.meta["files"][:2] == ["cat/0.jpg", "cat/0.png"]


def test_grey_folder_stays_grey_and_channels_convert(tmp_path):
    from PIL import Image

    grey = write_folder(tmp_path / "grey", ["a", "b"], mode="L")
    data = image_folder(tmp_path / "grey")
    assert data.image_shape == (1, 10, 12)
    expected = np.stack([grey[f] for f in data.meta["files"]])[:, None] / np.float32(255)
    assert np.array_equal(data.images().numpy(), expected.astype(np.float32))
    rgb = image_folder(tmp_path / "grey", channels=3)  # grey -> RGB repeats the channel
    assert rgb.image_shape == (3, 10, 12) and all(torch.equal(rgb.images()[:, c], data.images()[:, 0]) for c in range(3))

    colour = write_folder(tmp_path / "rgb", ["a", "b"])
    as_grey = image_folder(tmp_path / "rgb", channels=1)
    assert as_grey.image_shape == (1, 10, 12)
    # ITU-R 601 luma in float; PIL's convert("L") is the same sum rounded to 8 bits
    pil = np.stack([np.asarray(Image.open(tmp_path / "rgb" / f).convert("L"), dtype=np.float64) / 255
                    for f in as_grey.meta["files"]])
    assert np.abs(as_grey.images().numpy()[:, 0] - pil).max() <= 0.5 / 255 + 1e-6
    formula = np.stack([colour[f].astype(np.float64) @ [0.299, 0.587, 0.114] / 255 for f in as_grey.meta["files"]])
    assert np.allclose(as_grey.images().numpy()[:, 0], formula, atol=1e-6)


def test_mixed_grey_and_colour_is_read_as_rgb(tmp_path):
    write_folder(tmp_path, ["a"], mode="L", n=2)
    write_folder(tmp_path, ["b"], mode="RGB", n=2)
    data = image_folder(tmp_path)
    assert data.image_shape == (3, 10, 12)
    grey = data.images()[data.y == 0]
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 0], grey[:, 2])


def test_rgba_palette_and_16_bit_files(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    rgba = rng.integers(0, 256, size=(6, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a" / "rgba.png")
    Image.fromarray(rgba[..., :3], "RGB").convert("P").save(tmp_path / "a" / "palette.png")
    data = image_folder(tmp_path, extensions=["png"])
    files = data.meta["files"]
    assert files == ["a/palette.png", "a/rgba.png"] and data.image_shape == (3, 6, 5)
    assert np.array_equal(data.images()[1].numpy(), rgba[..., :3].transpose(2, 0, 1) / np.float32(255))  # alpha dropped
    palette = np.asarray(Image.open(tmp_path / "a" / "palette.png").convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(data.images()[0].numpy(), palette / np.float32(255))

    wide = rng.integers(0, 65536, size=(6, 5), dtype=np.uint16)
    (tmp_path / "w" / "a").mkdir(parents=True)
    Image.fromarray(wide).save(tmp_path / "w" / "a" / "deep.png")
    deep = image_folder(tmp_path / "w")
    assert deep.image_shape == (1, 6, 5)
    assert np.allclose(deep.images()[0, 0].numpy(), wide / 65535.0, atol=1e-7)


def test_resize_normalize_and_selection(tmp_path):
    import torch.nn.functional as F

    write_folder(tmp_path, ["a", "b", "c"], n=5, size=(20, 16))
    full = image_folder(tmp_path)
    small = image_folder(tmp_path, resize=[8, 6])
    expected = F.interpolate(full.images(), size=(8, 6), mode="bilinear", align_corners=False, antialias=True)
    assert small.image_shape == (3, 8, 6) and torch.allclose(small.images(), expected, atol=1e-6)
    norm = image_folder(tmp_path, normalize={"mean": [0.5, 0.4, 0.3], "std": [0.2]})
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(norm.images(), (full.images() - mean) / 0.2, atol=1e-6)

    picked = image_folder(tmp_path, n_per_class=2, seed=4)
    assert picked.class_counts().tolist() == [2, 2, 2]
    again = image_folder(tmp_path, n_per_class=2, seed=4)
    assert picked.meta["files"] == again.meta["files"] and torch.equal(picked.x, again.x)
    rows = [full.meta["files"].index(f) for f in picked.meta["files"]]  # the same images as in the full read
    assert torch.equal(picked.x, full.x[rows]) and torch.equal(picked.y, full.y[rows])
    assert image_folder(tmp_path, n_per_class=2, seed=5).meta["files"] != picked.meta["files"]
    by_name = image_folder(tmp_path, classes=["c", "a"])
    assert sorted(set(by_name.y.tolist())) == [0, 2] and by_name.n == 10  # labels stay the folder indices
    assert image_folder(tmp_path, max_samples=4, seed=0).n == 4
    with pytest.raises(ValueError, match=r"unknown class 'd' in classes; the classes are \['a', 'b', 'c'\]"):
        image_folder(tmp_path, classes=["d"])


def test_hidden_entries_and_other_extensions_are_skipped(tmp_path):
    write_folder(tmp_path, ["a", "b"], n=2)
    (tmp_path / ".ipynb_checkpoints").mkdir()  # torchvision would make it a class
    (tmp_path / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07 resource fork")  # macOS metadata
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    write_folder(tmp_path / "a", ["nested"], n=1)  # files in sub-folders belong to the class
    data = image_folder(tmp_path)
    assert data.names == ["a", "b"] and data.meta["files"] == ["a/0.png", "a/1.png", "a/nested/0.png", "b/0.png",
                                                               "b/1.png"]


def test_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image_folder: folder not found: '.*nowhere'.*path=/data/my_images"):
        image_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"give the folder with `path=/data/my_images`"):
        image_folder()
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"'.*file.png' is a file, not a folder"):
        image_folder(tmp_path / "file.png")

    flat = tmp_path / "flat"
    flat.mkdir()
    write_folder(tmp_path, ["flat"], n=2)  # images directly in the folder given
    with pytest.raises(ValueError, match=r"'.*flat' has no class sub-folders; it holds 2 image file\(s\) directly"):
        image_folder(flat)

    root = tmp_path / "root"
    write_folder(root, ["a"], n=2)
    (root / "b").mkdir()
    (root / "b" / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=r"class folder '.*root/b' is empty: no jpg/.*png.* image; it holds 1 other "
                                         r"file\(s\), e.g. 'readme.md'"):
        image_folder(root)
    (root / "b" / "bad.png").write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match=r"cannot read image file '.*root/b/bad.png' .*delete or re-export it"):
        image_folder(root)


def test_truncated_jpeg_is_named(tmp_path):
    write_folder(tmp_path, ["a", "b"], n=2, ext="jpg", size=(64, 64))
    target = tmp_path / "b" / "1.jpg"
    target.write_bytes(target.read_bytes()[:300])  # the header survives, the scan data do not
    with pytest.raises(ValueError, match=r"cannot read image file '.*b/1.jpg' \(.*\); delete or re-export it"):
        image_folder(tmp_path)
    assert image_folder(tmp_path, classes=["a"]).n == 2  # only the selected files are opened


def test_mixed_sizes_need_resize_and_the_hint_works(tmp_path):
    write_folder(tmp_path, ["a", "b"], n=3, size=(10, 12))
    write_folder(tmp_path / "b", ["x"], n=1, size=(7, 9))
    with config_prefix("source"), pytest.raises(ValueError) as info:
        image_folder(tmp_path)
    message = str(info.value)
    assert "differ in size: 6 are 10x12 (HxW) but e.g." in message and "b/x/0.png' is 7x9" in message
    fix = message.split("`")[-2]
    assert fix == "source.resize=[10,12]"
    data = image_folder(tmp_path, resize=[10, 12])  # the override's value, as the loader receives it
    assert data.n == 7 and data.image_shape == (3, 10, 12)
