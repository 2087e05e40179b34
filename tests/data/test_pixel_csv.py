"""`dataset=csv`: Kaggle-style pixel tables written by the tests with the csv module."""

import csv

import numpy as np
import pytest

from dsflow.data import pixel_csv
from dsflow.data.common import config_prefix


def write_csv(path, labels, pixels, *, header=None, label_at=0):
    """One row per sample: the label inserted at column ``label_at`` among the pixels."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        if header is not None:
            writer.writerow(header)
        for label, row in zip(labels, pixels):
            cells = [str(v) for v in row]
            cells.insert(label_at, str(label))
            writer.writerow(cells)
    return path


def kaggle(path, n=12, d=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, d))
    labels = np.arange(n) % classes
    write_csv(path, labels, pixels, header=["label", *(f"pixel{i}" for i in range(d))])
    return labels, pixels


def hint(message):
    """The override a message suggests (between the last pair of backticks)."""
    return message.split("`")[-2]


def test_kaggle_digits_layout(tmp_path):
    labels, pixels = kaggle(tmp_path / "train.csv")
    data = pixel_csv(tmp_path / "train.csv")
    assert data.n == 12 and data.image_shape == (1, 4, 4) and data.name == "train"
    assert data.y.tolist() == labels.tolist()
    assert np.array_equal(data.x.numpy(), (pixels / np.float32(255)).astype(np.float32))
    raw = pixel_csv(tmp_path / "train.csv", scale=None)
    assert np.array_equal(raw.x.numpy(), pixels.astype(np.float32))
    picked = pixel_csv(tmp_path / "train.csv", n_per_class=2, seed=1)
    assert picked.class_counts().tolist() == [2, 2, 2]
    assert np.array_equal(picked.x.numpy(), data.x.numpy()[picked.meta["indices"]])
    assert pixel_csv(tmp_path / "train.csv", resize=8, channels=3).image_shape == (3, 8, 8)


def test_label_column_anywhere_text_labels_and_no_header(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(6, 9))
    names = np.array(["dog", "cat", "emu", "cat", "dog", "emu"])
    header = [f"p{i}" for i in range(9)]
    header.insert(4, "class")
    write_csv(tmp_path / "named.csv", names, pixels, header=header, label_at=4)
    data = pixel_csv(tmp_path / "named.csv", label_column="class")
    assert data.names == ["cat", "dog", "emu"] and data.y.tolist() == [1, 0, 2, 0, 1, 2]
    assert np.array_equal(data.x.numpy() * 255, pixels.astype(np.float32)) and data.image_shape == (1, 3, 3)
    assert pixel_csv(tmp_path / "named.csv", label_column="class", classes=["emu"]).y.tolist() == [2, 2]

    write_csv(tmp_path / "bare.csv", np.arange(6) % 2, pixels)
    bare = pixel_csv(tmp_path / "bare.csv", header=False, label_column=0)
    assert bare.n == 6 and np.array_equal(bare.x.numpy() * 255, pixels.astype(np.float32))
    with pytest.raises(ValueError, match=r"with header=false, label_column must be a 0-based column index"):
        pixel_csv(tmp_path / "bare.csv", header=False)


def test_rgb_rows_channel_major_or_interleaved(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(4, 3, 2, 5))  # (n, C, H, W)
    header = ["label", *(f"v{i}" for i in range(30))]
    write_csv(tmp_path / "chw.csv", [0, 1, 0, 1], images.reshape(4, -1), header=header)
    write_csv(tmp_path / "hwc.csv", [0, 1, 0, 1], images.transpose(0, 2, 3, 1).reshape(4, -1), header=header)
    chw = pixel_csv(tmp_path / "chw.csv", image_shape=[3, 2, 5])
    hwc = pixel_csv(tmp_path / "hwc.csv", image_shape=[3, 2, 5], channels_last=True)
    assert chw.image_shape == hwc.image_shape == (3, 2, 5)
    assert np.array_equal(chw.images().numpy() * 255, images.astype(np.float32))
    assert np.array_equal(hwc.x.numpy(), chw.x.numpy())
    grey = pixel_csv(tmp_path / "chw.csv", image_shape=[3, 2, 5], channels=1)
    expected = np.tensordot([0.299, 0.587, 0.114], images / 255.0, axes=([0], [1]))
    assert np.allclose(grey.images().numpy()[:, 0], expected, atol=1e-6)
    flat = pixel_csv(tmp_path / "chw.csv")  # 30 pixels: not a square, so flat vectors
    assert flat.image_shape is None and flat.d == 30


def test_missing_label_column_hint_works(tmp_path):
    labels, pixels = kaggle(tmp_path / "t.csv")
    header = ["Digit", *(f"pixel{i}" for i in range(16))]
    write_csv(tmp_path / "other.csv", labels, pixels, header=header)
    with config_prefix("source"), pytest.raises(ValueError) as info:
        pixel_csv(tmp_path / "other.csv")
    message = str(info.value)
    assert "no column named 'label' (label_column); the header is Digit,pixel0,pixel1,pixel2,pixel3,..." in message
    assert hint(message) == "source.label_column=Digit"
    assert pixel_csv(tmp_path / "other.csv", label_column="Digit").y.tolist() == labels.tolist()
    # Kaggle's test.csv: pixels only, so no label column to suggest
    write_csv(tmp_path / "test.csv", [], [], header=[f"pixel{i}" for i in range(16)])
    with open(tmp_path / "test.csv", "a") as f:
        f.write(",".join(["0"] * 16) + "\n")
    with config_prefix("source"), pytest.raises(ValueError, match=r"No column looks like labels \(a Kaggle test.csv "
                                                                  r"has none.*source.label_column=NAME"):
        pixel_csv(tmp_path / "test.csv")


@pytest.mark.parametrize("cell,line,what", [("abc", 4, "the non-numeric cell 'abc'"), ("", 3, "an empty cell"),
                                            ("nan", 5, "'nan'")])
def test_bad_cells_name_line_and_column(tmp_path, cell, line, what):
    kaggle(tmp_path / "t.csv")
    rows = (tmp_path / "t.csv").read_text().splitlines()
    cells = rows[line - 1].split(",")
    cells[6] = cell  # column 7 of the file: pixel5
    rows[line - 1] = ",".join(cells)
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=rf"line {line}, column 'pixel5' \(column 7\) holds {what}"):
        pixel_csv(tmp_path / "t.csv")


def test_ragged_lines_and_fractional_labels(tmp_path):
    kaggle(tmp_path / "t.csv")
    rows = (tmp_path / "t.csv").read_text().splitlines()
    rows[5] = rows[5].rsplit(",", 1)[0]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"line 6 has 16 cells but the header has 17"):
        pixel_csv(tmp_path / "t.csv")
    (tmp_path / "wide.csv").write_text("label,a,b\n0,1,2,3\n1,4,5,6\n")  # every row one cell too many
    with pytest.raises(ValueError, match=r"line 2 has 4 cells but the header has 3"):
        pixel_csv(tmp_path / "wide.csv")
    write_csv(tmp_path / "frac.csv", [0, 1.5], np.zeros((2, 4), int), header=["label", "a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"label column 'label' holds 1.5 on data row 2"):
        pixel_csv(tmp_path / "frac.csv")


def test_wrong_pixel_count_hint_works(tmp_path):
    kaggle(tmp_path / "t.csv")
    with config_prefix("target"), pytest.raises(ValueError) as info:
        pixel_csv(tmp_path / "t.csv", image_shape=[1, 28, 28])
    message = str(info.value)
    assert "image_shape [1, 28, 28] has 784 pixels but each row has 16 pixel columns" in message
    assert hint(message) == "target.image_shape=[1,4,4]"
    assert pixel_csv(tmp_path / "t.csv", image_shape=[1, 4, 4]).image_shape == (1, 4, 4)


def test_values_outside_the_scale_hint_works(tmp_path):
    rng = np.random.default_rng(3)
    deep = rng.integers(0, 4096, size=(4, 9))
    deep[0, :2] = [4095, 0]
    write_csv(tmp_path / "deep.csv", [0, 1, 0, 1], deep, header=["label", *"abcdefghi"])
    with config_prefix("source"), pytest.raises(ValueError) as info:
        pixel_csv(tmp_path / "deep.csv")
    assert "pixel values span [0, 4095], outside [0, scale=255]" in str(info.value)
    assert hint(str(info.value)) == "source.scale=4095.0"
    assert float(pixel_csv(tmp_path / "deep.csv", scale=4095.0).x.max()) == 1.0

    centred = rng.normal(size=(4, 9)).round(3)
    write_csv(tmp_path / "centred.csv", [0, 1, 0, 1], centred, header=["label", *"abcdefghi"])
    with config_prefix("source"), pytest.raises(ValueError) as info:
        pixel_csv(tmp_path / "centred.csv")
    assert hint(str(info.value)) == "source.scale=null"
    assert np.allclose(pixel_csv(tmp_path / "centred.csv", scale=None).x.numpy(), centred)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"csv: '.*nothere.csv' is not found"):
        pixel_csv(tmp_path / "nothere.csv")
    with pytest.raises(ValueError, match=r"give the file with `path=/data/train.csv`"):
        pixel_csv()
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"the file is empty"):
        pixel_csv(tmp_path / "empty.csv")
    (tmp_path / "head.csv").write_text("label,a,b,c,d\n")
    with pytest.raises(ValueError, match=r"no data rows after the header"):
        pixel_csv(tmp_path / "head.csv")


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_integer_fast_path_equals_numpy_loadtxt(tmp_path, monkeypatch, ending):
    import dsflow.data.files as files

    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, size=(300, 49))
    pixels[:, 0] = 0  # one-digit, two-digit and three-digit cells
    labels = rng.integers(0, 10, size=300)
    header = ["label", *(f"pixel{i}" for i in range(49))]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        csv.writer(f, lineterminator=ending).writerows([header, *np.column_stack([labels, pixels]).tolist()])
    monkeypatch.setattr(files, "_FAST_BLOCK", 1000)  # many blocks, each cut at a line end
    table = files.read_integer_table(tmp_path / "t.csv", True, 50)
    reference = np.loadtxt(tmp_path / "t.csv", delimiter=",", skiprows=1, dtype=np.float32)
    assert table is not None and np.array_equal(table, reference)
    data = pixel_csv(tmp_path / "t.csv")
    assert data.y.tolist() == labels.tolist() and np.array_equal(data.x.numpy() * 255, pixels.astype(np.float32))
    # anything but non-negative integers goes to the general reader
    for text in ("label,a\n1,-2\n", "label,a\n1,2.5\n", "label,a\n1,\n", "label,a\ncat,2\n", "label,a\n1,2\n\n3,4\n"):
        (tmp_path / "o.csv").write_text(text)
        assert files.read_integer_table(tmp_path / "o.csv", True, 2) is None
