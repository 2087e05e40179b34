"""Figures: files written, mosaic layout exact, bad input rejected."""

import numpy as np
import pytest
import torch

from dsflow.data.container import LabeledData
from dsflow.plotting.core import image_mosaic, plot_heatmap, plot_image_grid, plot_objective, plot_scatter


def _png_ok(path):
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200


def test_objective_plot(tmp_path):
    records = [{"step": s, "objective": 1.0 / (s + 1), "parts": {"otdd": 1.0 / (s + 1), "potential": 0.1}}
               for s in range(20)]
    records.append({"step": 20, "objective": "nan"})  # dropped, not a crash
    _png_ok(plot_objective(records, tmp_path / "objective.png"))
    with pytest.raises(ValueError, match="no records"):
        plot_objective([], tmp_path / "empty.png")


@pytest.mark.parametrize("d", [2, 3])
def test_scatter_2d_3d(tmp_path, d):
    g = torch.Generator().manual_seed(0)
    a = LabeledData(torch.randn(50, d, generator=g), torch.arange(50) % 3, name="a")
    b = LabeledData(torch.randn(40, d, generator=g) + 2, torch.arange(40) % 2, name="b")
    _png_ok(plot_scatter({"source": a, "target": b}, tmp_path / f"s{d}.png"))


def test_scatter_rejects_high_dimensional_data(tmp_path):
    a = LabeledData(torch.zeros(5, 4), torch.zeros(5))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        plot_scatter({"a": a}, tmp_path / "x.png")


def test_image_mosaic_places_each_class_in_its_row():
    # image i of class c has every pixel equal to 10*c + (its rank within the class)
    y = torch.tensor([1, 0, 1, 0, 1, 2])
    rank = torch.tensor([0, 0, 1, 1, 2, 0])
    x = (10 * y + rank).float()[:, None, None, None].expand(6, 1, 2, 3)
    data = LabeledData(x, y, class_names=["zero", "one", "two"])
    mosaic, names = image_mosaic(data, per_class=2)
    assert names == ["zero", "one", "two"] and mosaic.shape == (3 * 2, 2 * 3)
    expected = np.array([[0, 1], [10, 11], [20, np.nan]])  # class 2 has a single image
    block_values = mosaic.reshape(3, 2, 2, 3).transpose(0, 2, 1, 3).reshape(3, 2, -1)
    np.testing.assert_array_equal(block_values[..., 0], expected)
    assert np.all((block_values == block_values[..., :1]) | np.isnan(block_values))


def test_image_grid_rgb_and_gray(tmp_path):
    gray = LabeledData(torch.rand(12, 1, 8, 8), torch.arange(12) % 3, name="gray")
    rgb = LabeledData(torch.rand(12, 3, 5, 5), torch.arange(12) % 4, name="rgb")
    _png_ok(plot_image_grid({"before": gray, "after": gray}, tmp_path / "g.png"))
    _png_ok(plot_image_grid({"before": rgb}, tmp_path / "c.png"))
    with pytest.raises(ValueError, match="not image data"):
        plot_image_grid({"x": LabeledData(torch.rand(3, 2), torch.zeros(3))}, tmp_path / "no.png")


def test_heatmap_checks_names(tmp_path):
    _png_ok(plot_heatmap(np.arange(6.0).reshape(2, 3), tmp_path / "h.png", row_names=["a", "b"],
                         col_names=["x", "y", "z"], title="t"))
    with pytest.raises(ValueError, match="does not match"):
        plot_heatmap(np.zeros((2, 2)), tmp_path / "bad.png", row_names=["a"], col_names=["x", "y"])
