"""`dsflow.app.load_datasets`, the one loader of `dsflow` and `dsflow-distance`."""

import pytest
import torch
from omegaconf import OmegaConf

from dsflow.app import load_datasets
from dsflow.data.container import LabeledData


def test_data_finite_in_float64_but_not_in_the_runs_dtype_is_refused(monkeypatch):
    import hydra.utils

    x = torch.rand(6, 2, dtype=torch.float64)
    x[2, 1] = 1e39  # finite in float64, Inf in float32
    made = {"source": LabeledData(x=x, y=torch.tensor([0, 0, 0, 1, 1, 1]), name="wide"),
            "target": LabeledData(x=torch.rand(6, 2, dtype=torch.float64), y=torch.tensor([0, 1] * 3), name="t")}
    monkeypatch.setattr(hydra.utils, "instantiate", lambda node: made[node.side])
    cfg = OmegaConf.create({"source": {"side": "source"}, "target": {"side": "target"}})
    source, _ = load_datasets(cfg, "cpu", torch.float64)
    assert source.x.dtype == torch.float64
    with pytest.raises(ValueError, match=r"source dataset 'wide'.*not in dtype=float32.*dtype=float64"):
        load_datasets(cfg, "cpu", torch.float32)
