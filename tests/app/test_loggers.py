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


# ---------------------------------------------------------------- wandb conventions, read back
def _wandb_records(run_dir):
    """The records of the one offline wandb run below ``run_dir``: ``{kind: [proto, ...]}``.

    The ``.wandb`` file is a LevelDB-style log (a 7-byte header, then 32 KiB blocks of records
    with a 7-byte header each: crc32, length, type full/first/middle/last) of
    ``wandb_internal_pb2.Record`` protos; wandb 0.31 ships no reader, so the test reads it.
    The file is written by the wandb-core process, which may still be flushing it when
    ``finish()`` returns: it is read again until it holds the run's ``exit`` record (30 s).
    """
    import time

    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    deadline = time.monotonic() + 30
    while True:
        records = _parse_wandb_log(path.read_bytes())
        if "exit" in records or time.monotonic() > deadline:
            return records, path.parent
        time.sleep(0.1)


def _parse_wandb_log(data):
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    if len(data) < 7:  # not even the header yet
        return {}
    assert data[:4] == b":W&B"
    block, pos, pieces, out = 32768, 7, b"", {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0:  # zero padding up to the end of the block
            pos += (block - pos % block) % block
            continue
        if pos + length > len(data):  # a record still being written
            break
        chunk, pos = data[pos:pos + length], pos + length
        pieces = chunk if kind in (1, 2) else pieces + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pieces)
            out.setdefault(record.WhichOneof("record_type"), []).append(record)
    return out


def _job_dir(tmp_path, sweep=True):
    root = tmp_path / "multirun"
    run_dir = root / "0" if sweep else tmp_path / "single"
    run_dir.mkdir(parents=True)
    if sweep:
        (root / "multirun.yaml").write_text("hydra: {}\n")  # what Hydra's sweeper writes
    return run_dir


_SUMMARY = {"status": "ok", "n": 4, "d": 2, "accuracy_after": 0.75, "files": {"flowed": "flowed.npz"},
            "source": {"classes": [3, 7], "class_names": ["three", "seven"]},
            "oracle_per_class_accuracy_after": {"3": 0.5, "7": 1.0}}


def test_wandb_offline_run_has_sweep_group_flowed_artifact_and_per_class_table(tmp_path):
    import base64
    import hashlib

    run_dir = _job_dir(tmp_path)
    np.savez(run_dir / "flowed.npz", x=np.arange(8.0).reshape(4, 2), y=np.array([3, 3, 7, 7]))
    group = build_loggers({"name": "wandb", "mode": "offline", "project": "dsflow-test"}, run_dir, run_name="j0")
    try:
        group.log_metrics({"objective": 2.0}, 0)
        group.log_summary(_SUMMARY)
    finally:
        group.finish()
    records, offline_dir = _wandb_records(run_dir)
    (run,) = records["run"]
    assert run.run.run_group == str((tmp_path / "multirun").resolve())  # one group per sweep
    artifacts = {a.artifact.type: a.artifact for a in records["artifact"]}
    flowed = artifacts["dataset"]
    assert flowed.name == f"flowed-{run.run.run_id}"
    (entry,) = flowed.manifest.contents
    md5 = base64.b64encode(hashlib.md5((run_dir / "flowed.npz").read_bytes()).digest()).decode()
    assert (entry.path, entry.digest, entry.size) == ("flowed.npz", md5, (run_dir / "flowed.npz").stat().st_size)
    assert entry.local_path == str((run_dir / "flowed.npz").resolve())  # referenced in place, not copied
    assert json.loads(flowed.metadata)["accuracy_after"] == 0.75
    (table_file,) = (offline_dir / "files" / "media" / "table").glob("per_class_accuracy_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["class", "name", "oracle_per_class_accuracy_after"]
    assert table["data"] == [["3", "three", 0.5], ["7", "seven", 1.0]]
    keys = {tuple(item.nested_key) for h in records["history"] for item in h.history.item}
    assert ("per_class_accuracy", "_type") in keys and ("objective",) in keys


def test_wandb_group_key_wins_and_a_failed_single_run_logs_no_dataset(tmp_path):
    run_dir = _job_dir(tmp_path, sweep=False)
    np.savez(run_dir / "flowed.npz", x=np.zeros((2, 2)), y=np.zeros(2))  # a stale file the summary does not name
    group = build_loggers({"name": "wandb", "mode": "offline", "group": "entreg-lr"}, run_dir)
    try:
        group.log_summary({"status": "failed", "error": "boom", "files": {}})
    finally:
        group.finish(exit_code=1)
    records, offline_dir = _wandb_records(run_dir)
    assert records["run"][0].run.run_group == "entreg-lr"
    assert not [a for a in records.get("artifact", []) if a.artifact.type == "dataset"]
    assert not (offline_dir / "files" / "media" / "table").exists()  # no per-class accuracies, no table

    single = tmp_path / "other"
    from dsflow.loggers.wandb_logger import sweep_group

    single.mkdir()
    assert sweep_group(single) is None  # a single run has no group


def test_sweep_group_inside_a_hydra_multirun_job(tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from dsflow.loggers.wandb_logger import sweep_group

    from hydra.conf import HydraConf

    def hydra_cfg(mode, sweep_dir):
        cfg = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
        cfg.hydra.mode, cfg.hydra.sweep.dir = mode, sweep_dir
        return cfg

    before = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(hydra_cfg(RunMode.MULTIRUN, "outputs/multirun/2026-01-01/00-00-00"))
        assert sweep_group(tmp_path) == "outputs/multirun/2026-01-01/00-00-00"
        HydraConfig.instance().set_config(hydra_cfg(RunMode.RUN, "x"))
        assert sweep_group(tmp_path) is None
    finally:
        HydraConfig.instance().cfg = before


def test_per_class_rows_orders_classes_and_names_them():
    from dsflow.loggers.wandb_logger import per_class_rows

    assert per_class_rows({"accuracy_after": 0.5}) is None
    columns, rows = per_class_rows({"oracle_per_class_accuracy_after": {"10": 0.25, "2": 1.0},
                                    "per_class_accuracy_before": {"2": 0.0},
                                    "source": {"classes": [2, 10], "class_names": ["two", "ten"]}})
    assert columns == ["class", "name", "oracle_per_class_accuracy_after", "per_class_accuracy_before"]
    assert rows == [["2", "two", 1.0, 0.0], ["10", "ten", 0.25, None]]  # numeric order, gaps as None


def test_app_run_with_wandb_logs_its_flowed_npz(tmp_path):
    """Through `dsflow.app.run`: the summary's file list reaches the logger, which logs the
    run's own flowed.npz."""
    from hydra import compose, initialize_config_module

    from dsflow.app import run

    overrides = ["dataset@source=gaussians", "dataset@target=moons", "source.n_per_class=5", "target.n_samples=15",
                 "steps=2", "optimizer.lr=10", "progress=false", "plot=false", "logger=wandb", "logger.mode=offline"]
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    run_dir = _job_dir(tmp_path)
    run(cfg, run_dir=run_dir)
    records, _ = _wandb_records(run_dir)
    assert records["run"][0].run.run_group == str(run_dir.parent.resolve())
    (flowed,) = [a.artifact for a in records["artifact"] if a.artifact.type == "dataset"]
    assert [c.local_path for c in flowed.manifest.contents] == [str((run_dir / "flowed.npz").resolve())]
    assert json.loads(flowed.metadata)["status"] == "ok"
