"""Checkpoints: safe loading, config fingerprints, corrupt files, unwritable directories,
resuming past the end (dsflow/flow/checkpoint.py and the resume path of run_flow)."""

import logging
import os
import pickle

import numpy as np
import pytest
import torch
from flow_helpers import LabelGaussianSinkhorn, blobs, sgd

from dsflow.data.container import LabeledData
from dsflow.flow.checkpoint import (CheckpointError, CheckpointMismatchError, UnsafeCheckpointError,
                                    checkpoint_path, fingerprint, list_checkpoints, load_checkpoint)
from dsflow.flow.dynamics import FeatureDriven, JointDrivenVariableLabel
from dsflow.flow.engine import run_flow
from dsflow.functionals import Entropy, FeatureNorm, WeightedSum


def fd_run(ckdir, steps, lr=0.1, **kw):
    """A small fd flow with entropy noise (noise generator + numpy/python RNG states)."""
    g = torch.Generator().manual_seed(0)
    data = LabeledData(3.0 * torch.randn(20, 2, generator=g, dtype=torch.float64), torch.arange(20) % 2)
    dyn = FeatureDriven()
    st = dyn.init_state(data)
    obj = WeightedSum({"q": FeatureNorm(center=[0.0, 0.0], squared=True), "noise": Entropy(temperature=0.01)})
    kw.setdefault("checkpoint_every", 3)
    res = run_flow(st, obj, dyn, sgd(lr), steps=steps, progress=False, seed=3, checkpoint_dir=ckdir, **kw)
    return st, res


class Evil:
    """A pickle that writes a file when it is unpickled (stands for any code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ----------------------------------------------------------------------------- safe loading
def test_a_checkpoint_is_plain_tensors_and_containers(tmp_path):
    # jd_vl + trajectory in memory + noise: k-means centres, numpy frames, every RNG state
    src = blobs([[0, 0], [0, 4]], n_per_class=10, seed=1)
    tgt = blobs([[5, -4], [5, 4]], n_per_class=8, seed=2)
    dyn = JointDrivenVariableLabel(clustering="kmeans", n_clusters=2, recluster_every=2)
    st = dyn.init_state(src)
    obj = WeightedSum({"ot": LabelGaussianSinkhorn().bind(target=tgt), "noise": Entropy(temperature=0.05)})
    run_flow(st, obj, dyn, sgd(0.5), steps=4, progress=False, trajectory_every=2,
             checkpoint_every=2, checkpoint_dir=tmp_path)
    path = list_checkpoints(tmp_path)[-1]
    # torch's own safe loader, with no allow-listed extra: nothing needs code to rebuild
    raw = torch.load(path, weights_only=True)
    assert raw["state"]["step"] == 4
    ck = load_checkpoint(path)
    state = np.random.get_state()
    assert ck["rng"]["numpy"][0] == state[0] and ck["rng"]["numpy"][1].dtype == state[1].dtype
    frames = ck["trajectory"]["frames"]
    assert isinstance(frames[0], np.ndarray) and frames[0].dtype == np.float32 and len(frames) == 3


@pytest.mark.parametrize("form", ["torch", "pickle"])
def test_malicious_checkpoint_is_refused_and_never_executed(tmp_path, form):
    ckdir, marker = tmp_path / "ck", tmp_path / "pwned"
    fd_run(ckdir, steps=3)  # an honest ckpt_00000003.pt
    planted = checkpoint_path(ckdir, 5)
    payload = {"state": Evil(marker), "optimizer": {}, "rng": {}, "history": []}
    if form == "torch":
        torch.save(payload, planted)
    else:
        planted.write_bytes(pickle.dumps(payload, protocol=2))  # a bare pickle, no zip
    with pytest.raises(UnsafeCheckpointError, match="refused") as info:
        fd_run(ckdir, steps=6, resume=True)
    message = str(info.value)
    assert str(planted) in message and "system" in message and "not on the allow-list" in message
    assert not marker.exists(), "the planted pickle ran"
    assert planted.exists()  # evidence left for the user, not renamed as if merely damaged


# ----------------------------------------------------------------------------- corrupt files
def test_truncated_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, caplog):
    st_ref, _ = fd_run(tmp_path / "ref", steps=9, checkpoint_every=0)
    ckdir = tmp_path / "ck"
    fd_run(ckdir, steps=6)
    newest = checkpoint_path(ckdir, 6)
    newest.write_bytes(newest.read_bytes()[:1000])  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="dsflow"):
        st, res = fd_run(ckdir, steps=9, resume=True)
    assert res.resumed_from == 3 and res.resumed_checkpoint == str(checkpoint_path(ckdir, 3))
    assert res.skipped_checkpoints == [str(newest)]
    assert any(str(newest) in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert (ckdir / (newest.name + ".corrupt")).exists()
    assert len(res.history) == 9 and [h["step"] for h in res.history] == list(range(9))
    assert torch.equal(st.x.detach(), st_ref.x.detach())  # noise included: bit for bit


@pytest.mark.parametrize("damage", [b"", b"not a checkpoint at all", None])
def test_no_intact_checkpoint_is_a_clear_error(tmp_path, damage):
    ckdir = tmp_path / "ck"
    fd_run(ckdir, steps=6)
    for p in list_checkpoints(ckdir):
        p.write_bytes(p.read_bytes()[:200] if damage is None else damage)
    with pytest.raises(CheckpointError, match="no intact checkpoint") as info:
        fd_run(ckdir, steps=9, resume=True)
    assert str(ckdir) in str(info.value) and "ckpt_00000006.pt" in str(info.value)


def test_load_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "ckpt_00000001.pt"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=str(bad)):
        load_checkpoint(bad)
    torch.save({"just": "a dict"}, bad)
    with pytest.raises(CheckpointError, match="not a dsflow flow checkpoint"):
        load_checkpoint(bad)


# ----------------------------------------------------------------------------- fingerprint
def test_resume_with_a_changed_config_names_the_keys(tmp_path):
    old = fingerprint({"optimizer.lr": 0.1, "source.seed": 0, "seed": 3})
    ckdir = tmp_path / "ck"
    fd_run(ckdir, steps=3, fingerprint=old)
    new = fingerprint({"optimizer.lr": 0.2, "source.seed": 1, "seed": 3})
    with pytest.raises(CheckpointMismatchError) as info:
        fd_run(ckdir, steps=6, lr=0.2, fingerprint=new, resume=True)
    message = str(info.value)
    assert "optimizer.lr: 0.1 -> 0.2" in message and "source.seed: 0 -> 1" in message
    assert "seed: 3" not in message and "resume_ignore_config=true" in message
    assert info.value.differences == {"optimizer.lr": (0.1, 0.2), "source.seed": (0, 1)}
    # the same config resumes
    _, res = fd_run(ckdir, steps=4, fingerprint=old, resume=True)
    assert res.resumed_from == 3


def test_resume_ignore_config_continues_under_the_new_settings(tmp_path, caplog):
    ckdir = tmp_path / "ck"
    _, first = fd_run(ckdir, steps=3, fingerprint=fingerprint({"optimizer.lr": 0.1}))
    with caplog.at_level(logging.WARNING, logger="dsflow"):
        st, res = fd_run(ckdir, steps=6, lr=0.2, fingerprint=fingerprint({"optimizer.lr": 0.2}),
                         resume=True, resume_ignore_config=True)
    assert res.resumed_from == 3
    assert [h["lr"] for h in res.history] == [0.1] * 3 + [0.2] * 3  # the new lr applies after the checkpoint
    assert any("optimizer.lr: 0.1 -> 0.2" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- directories
def test_unwritable_checkpoint_dir_is_caught_before_step_0(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    seen = []
    with pytest.raises(CheckpointError, match="not writable") as info:
        fd_run(blocker / "ck", steps=5, callbacks=[lambda step, rec, st: seen.append(step)])
    assert str(blocker / "ck") in str(info.value) and "flow.checkpoint_dir" in str(info.value)
    assert seen == []  # no step ran


def test_resume_from_a_checkpoint_past_steps_reports_it(tmp_path):
    ckdir = tmp_path / "ck"
    st_ref, ref = fd_run(ckdir, steps=6)
    st, res = fd_run(ckdir, steps=4, resume=True)  # fewer steps than the checkpoint holds
    assert res.resumed_from == 6 and res.steps_done == 6 and len(res.history) == 6
    assert torch.equal(st.x.detach(), st_ref.x.detach())
    assert res.final_objective == ref.final_objective
