"""Local and wandb loggers: files written, strict JSON, finish on error, env restored."""

import json
import math
import os

import numpy as np
import pytest
import torch

from dsflow.loggers import LoggerGroup, LocalLogger, RunLogger, build_loggers, to_jsonable
from dsflow.loggers.local import read_metrics


def test_to_jsonable_converts_tensors_arrays_and_non_finite():
    out = to_jsonable({"a": torch.tensor(1.5), "b": np.arange(3), "c": float("nan"),
                       "d": [float("inf"), -math.inf], "e": torch.ones(2, 2), 3: None})
    assert out == {"a": 1.5, "b": [0, 1, 2], "c": "nan", "d": ["inf", "-inf"],
                   "e": [[1.0, 1.0], [1.0, 1.0]], "3": None}
    json.dumps(out, allow_nan=False)  # strict JSON


def test_local_logger_streams_metrics_and_writes_summary(tmp_path):
    lg = LocalLogger(tmp_path)
    for step in range(3):
        lg.log_metrics({"objective": 1.0 / (step + 1), "parts": {"otdd": torch.tensor(2.0)}}, step)
        # flushed every step: a crash keeps the rows written so far
        assert len(read_metrics(tmp_path / "metrics.jsonl")) == step + 1
    lg.log_summary({"status": "ok", "objective_after": float("nan")})
    lg.finish()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[2]["objective"] == pytest.approx(1 / 3) and rows[0]["parts"] == {"otdd": 2.0}
    assert json.loads((tmp_path / "summary.json").read_text()) == {"status": "ok", "objective_after": "nan"}


class _Recorder(RunLogger):
    def __init__(self, name, fail_on=None):
        self.name, self.fail_on, self.calls = name, fail_on, []

    def log_metrics(self, record, step):
        if self.fail_on == "log_metrics":
            raise RuntimeError("boom")
        self.calls.append(("metrics", step))

    def finish(self, exit_code=0):
        self.calls.append(("finish", exit_code))


def test_group_finishes_once_with_error_code_and_drops_failing_secondary_logger():
    good, bad = _Recorder("local"), _Recorder("wandb", fail_on="log_metrics")
    with pytest.raises(ValueError):
        with LoggerGroup([good, bad]) as group:
            group.log_metrics({"objective": 1.0}, 0)  # bad fails -> dropped, finished with 1
            group.log_metrics({"objective": 1.0}, 1)
            raise ValueError("run failed")
    assert good.calls == [("metrics", 0), ("metrics", 1), ("finish", 1)]
    assert bad.calls == [("finish", 1)]
    group.finish()  # idempotent
    assert good.calls[-1] == ("finish", 1) and len(good.calls) == 3


def test_group_propagates_local_logger_failures():
    with pytest.raises(RuntimeError, match="boom"):
        LoggerGroup([_Recorder("local", fail_on="log_metrics")]).log_metrics({}, 0)


def test_build_loggers_rejects_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="valid names: none, local, wandb"):
        build_loggers({"name": "tensorboard"}, tmp_path)
    group = build_loggers({"name": "none"}, tmp_path)
    assert [lg.name for lg in group.loggers] == ["local"]
    group.finish()


def test_wandb_offline_files_stay_in_run_dir_and_env_is_restored(tmp_path):
    before = {k: os.environ.get(k) for k in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")}
    with build_loggers({"name": "wandb", "mode": "offline", "project": "dsflow-test"}, tmp_path,
                       run_name="unit") as group:
        assert os.environ["WANDB_DIR"] == str(tmp_path.resolve())
        group.log_config({"seed": 0, "optimizer": {"lr": 0.1}})
        for step in range(3):
            group.log_metrics({"objective": 1.0 / (step + 1), "parts": {"otdd": 0.5}}, step)
        group.log_summary({"status": "ok", "objective_after": 0.33})
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb")) and runs[0].joinpath("run-" + runs[0].name.split("-")[-1] + ".wandb").stat().st_size > 0
    assert {k: os.environ.get(k) for k in before} == before


def test_wandb_rejects_bad_mode_and_options(tmp_path):
    from dsflow.loggers.wandb_logger import WandbLogger

    with pytest.raises(ValueError, match="use one of offline, online, disabled"):
        WandbLogger(tmp_path, mode="offlin")
    with pytest.raises(ValueError, match="unknown option"):
        WandbLogger(tmp_path, mode="offline", projct="x")
