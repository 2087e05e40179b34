"""`dsflow.app.run` across interrupts and resumes: the metrics history, the config fingerprint,
damaged checkpoints, the checkpoint directory, divergence (in-process; the signals themselves
are tested with real subprocesses in test_signals.py)."""

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from dsflow.app import DEFAULT_STAGES, flow_fingerprint, run, stage_flow
from dsflow.flow.checkpoint import CheckpointError, CheckpointMismatchError, list_checkpoints
from dsflow.loggers.local import read_metrics

TINY = ["dataset@source=gaussians", "dataset@target=moons", "source.n_per_class=10",
        "target.n_samples=30", "steps=6", "optimizer.lr=10", "progress=false", "logger=none", "plot=false"]


def compose_cfg(*overrides):
    keys = {o.split("=", 1)[0] for o in overrides}  # Hydra rejects a key set twice
    base = [o for o in TINY if o.split("=", 1)[0] not in keys]
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose(config_name="config", overrides=[*base, *overrides])


def interrupting_at(step):
    """The default stages with a flow callback that raises KeyboardInterrupt (a Ctrl-C that
    reaches Python directly) after ``step``."""
    def add(ctx):
        def cb(s, record, state):
            if s == step:
                raise KeyboardInterrupt

        ctx.callbacks.append(cb)

    i = DEFAULT_STAGES.index(stage_flow)
    return (*DEFAULT_STAGES[:i], add, *DEFAULT_STAGES[i:])


def objectives(run_dir):
    return [(r["step"], r["objective"]) for r in read_metrics(run_dir / "metrics.jsonl")]


def summary_of(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


# ----------------------------------------------------------------------------- history
def test_interrupts_and_resumes_keep_the_whole_metrics_history(tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    run(compose_cfg("steps=9"), run_dir=ref)
    ck = ["flow.checkpoint_every=3"]
    out = tmp_path / "run"
    # 1) interrupted in step 4's callbacks (rows 0-3 written, newest checkpoint at step 3)
    with pytest.raises(KeyboardInterrupt):
        run(compose_cfg("steps=9", *ck), run_dir=out, stages=interrupting_at(4))
    s = summary_of(out)
    assert s["status"] == "interrupted" and s["steps_done"] == 5 and (out / "flowed.npz").is_file()
    assert [k for k, _ in objectives(out)] == [0, 1, 2, 3]
    # 2) resumed, with fewer steps than the checkpoint holds: reports it, keeps its history
    s = run(compose_cfg("steps=2", *ck, "flow.resume=true"), run_dir=out)
    assert s["status"] == "ok" and s["steps_done"] == 3 and s["resumed_from"]["step"] == 3
    assert [k for k, _ in objectives(out)] == [0, 1, 2]  # row 3 came after the checkpoint
    # 3) resumed to the end, with the plots on: objective.png gets the whole history
    seen = {}
    import dsflow.plotting.core as core

    real = core.plot_objective
    monkeypatch.setattr(core, "plot_objective", lambda records, path, **kw: (
        seen.setdefault("steps", [r["step"] for r in records]), real(records, path, **kw))[1])
    s = run(compose_cfg("steps=9", *ck, "flow.resume=true", "plot=true"), run_dir=out)
    assert s["status"] == "ok" and s["steps_done"] == 9
    assert s["resumed_from"] == {"step": 3, "checkpoint": str(out / "checkpoints" / "ckpt_00000003.pt")}
    assert seen["steps"] == list(range(9)) and (out / "objective.png").is_file()
    # same machine, same seed: the resumed history is the uninterrupted one bit for bit
    assert objectives(out) == objectives(ref)
    assert s["objective_after"] == summary_of(ref)["objective_after"]
    with np.load(out / "flowed.npz") as a, np.load(ref / "flowed.npz") as b:
        assert np.array_equal(a["x"], b["x"])


def test_a_corrupt_checkpoint_never_empties_the_metrics(tmp_path):
    out = tmp_path / "run"
    run(compose_cfg("steps=6", "flow.checkpoint_every=3"), run_dir=out)
    before = objectives(out)
    assert len(before) == 6
    newest = list_checkpoints(out / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:500])
    # falls back to ckpt 3 with a warning, keeps rows 0-2 and writes 3..7
    s = run(compose_cfg("steps=8", "flow.checkpoint_every=3", "flow.resume=true"), run_dir=out)
    assert s["resumed_from"]["step"] == 3 and s["resumed_from"]["skipped_corrupt"] == [str(newest)]
    assert [k for k, _ in objectives(out)] == list(range(8)) and objectives(out)[:3] == before[:3]
    # nothing intact: a clear error, and the history is left as it was
    rows = objectives(out)
    for p in list_checkpoints(out / "checkpoints"):
        p.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        run(compose_cfg("steps=12", "flow.checkpoint_every=3", "flow.resume=true"), run_dir=out)
    assert objectives(out) == rows


# ----------------------------------------------------------------------------- fingerprint
def test_resume_with_a_changed_config_is_refused_naming_the_keys(tmp_path):
    out = tmp_path / "run"
    run(compose_cfg("steps=3", "flow.checkpoint_every=3"), run_dir=out)
    changed = compose_cfg("steps=6", "flow.checkpoint_every=3", "flow.resume=true", "optimizer.lr=5", "source.seed=1")
    with pytest.raises(CheckpointMismatchError) as info:
        run(changed, run_dir=out)
    message = str(info.value)
    assert "optimizer.lr: 10 -> 5" in message and "source.seed: 0 -> 1" in message
    assert "flow.resume_ignore_config=true" in message and "steps" not in info.value.differences
    assert len(read_metrics(out / "metrics.jsonl")) == 3  # the refused resume lost nothing
    # the explicit override: the checkpointed particles continue under the new lr
    s = run(compose_cfg("steps=6", "flow.checkpoint_every=3", "flow.resume=true", "optimizer.lr=5",
                        "source.seed=1", "flow.resume_ignore_config=true"), run_dir=out)
    assert s["status"] == "ok" and s["resumed_from"]["step"] == 3
    assert [r["lr"] for r in read_metrics(out / "metrics.jsonl")] == [10.0] * 3 + [5.0] * 3


def test_the_fingerprint_covers_what_determines_the_flow_only():
    base = flow_fingerprint(compose_cfg())
    same = ["steps=50", "progress=true", "plot=true", "name=x", "threads=1", "flow.checkpoint_every=5",
            "flow.resume=true", "flow.trajectory_every=2", "flow.keep_checkpoints=4", "logger=wandb"]
    for override in same:
        assert flow_fingerprint(compose_cfg(override))["hash"] == base["hash"], override
    differ = {"optimizer.lr=3": "optimizer.lr", "source.seed=4": "source.seed", "target.n_samples=40": "target.n_samples",
              "seed=2": "seed", "dtype=float64": "dtype", "functional.entreg=0.5": "functional.entreg",
              "dynamics=jd_fl": "dynamics._target_", "optimizer=adam": "optimizer._target_",
              "flow.grad_clip=1.0": "flow.grad_clip", "flow.box=[0,1]": "flow.box"}
    for override, key in differ.items():
        fp = flow_fingerprint(compose_cfg(override))
        assert fp["hash"] != base["hash"] and fp["values"].get(key) != base["values"].get(key), override


# ----------------------------------------------------------------------------- checkpoint dir
def test_an_unwritable_checkpoint_dir_is_caught_before_step_0(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = tmp_path / "run"
    with pytest.raises(CheckpointError, match="not writable") as info:
        run(compose_cfg("flow.checkpoint_every=2", f"flow.checkpoint_dir={blocker}/ck"), run_dir=out)
    assert str(blocker / "ck") in str(info.value)
    assert read_metrics(out / "metrics.jsonl") == [] and summary_of(out)["status"] == "failed"


# ----------------------------------------------------------------------------- divergence
def test_an_eigensolver_failure_is_a_divergence_with_the_last_finite_particles(tmp_path):
    # the repro at half the size: lr=1e9 throws the digits far away, and at step 3 the
    # Bures eigensolver fails on their covariances (a _LinAlgError before this was handled)
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "dataset@source=digits", "source.max_samples=100", "dataset@target=digits", "target.max_samples=100",
            "target.seed=1", "steps=10", "optimizer.lr=1e9", "logger=none", "progress=false", "plot=false"])
    with pytest.raises(Exception) as info:
        run(cfg, run_dir=tmp_path)
    assert type(info.value).__name__ == "FlowDivergedError" and info.value.part == "linalg"
    s = summary_of(tmp_path)
    assert s["status"] == "failed" and s["diverged_part"] == "linalg"
    assert f"step {s['diverged_at_step']}" in s["error"] and "optimizer.lr" in s["error"] and "flow.grad_clip" in s["error"]
    with np.load(tmp_path / "flowed_last_finite.npz") as f:
        assert np.isfinite(f["x"]).all() and f["x"].shape == (100, 64) and int(f["step"]) == s["diverged_at_step"]


def test_an_objective_that_ends_far_above_its_start_is_flagged(tmp_path):
    # Adam at lr=1e6 moves every coordinate by ~1e6 per step: OTDD^2 ~24 -> ~1e12, all finite
    s = run(compose_cfg("optimizer=adam", "optimizer.lr=1e6"), run_dir=tmp_path / "bad")
    assert s["status"] == "ok" and s["diverging"] is True
    assert s["objective_after"] > 10 * s["objective_before"]
    assert len(s["warnings"]) == 1 and "diverging" in s["warnings"][0] and "optimizer.lr" in s["warnings"][0]
    assert summary_of(tmp_path / "bad")["diverging"] is True
    good = run(compose_cfg(), run_dir=tmp_path / "good")
    assert good["diverging"] is False and "warnings" not in good


def test_the_oracle_accuracy_history_spans_the_resume(tmp_path):
    """After a resume the oracle monitor sees only the resumed steps; the summary's history
    still covers the whole flow, from the accuracies the checkpointed records carry."""
    demo = ["+experiment=default", "source.n_per_class=8", "target.n_per_class=8", "oracle.eval_every=1",
            "task.pushforward.enabled=false", "task.holdout=0", "steps=6", "logger=none", "plot=false", "progress=false"]

    def cfg(*more):
        with initialize_config_module("dsflow.configs", version_base="1.3"):
            return compose(config_name="config", overrides=[*demo, *more])

    reference = run(cfg(), run_dir=tmp_path / "ref")
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(cfg("flow.checkpoint_every=3"), run_dir=out, stages=interrupting_at(4))
    s = run(cfg("flow.checkpoint_every=3", "flow.resume=true"), run_dir=out)
    assert s["resumed_from"]["step"] == 3
    history = s["oracle_accuracy_history"]
    assert history["step"] == list(range(7))
    # same machine, same seed: the same accuracies as the uninterrupted flow
    assert history == reference["oracle_accuracy_history"]
