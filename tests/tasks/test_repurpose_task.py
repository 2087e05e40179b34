"""The repurpose task's hooks, driven with a stand-in run context (no app, no flow engine)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from dsflow.flow.state import ParticleState
from dsflow.oracle import evaluate


@pytest.fixture
def oracle_cfg(tmp_path):
    import dsflow.configs

    cfg = OmegaConf.load(Path(dsflow.configs.__file__).parent / "oracle" / "mlp_digits.yaml")
    cfg.device = "cpu"
    cfg.cache_dir = str(tmp_path / "cache")
    cfg.epochs = 5
    cfg.eval_every = 2
    return cfg


def make_ctx(cfg, source, target, run_dir, steps=4):
    full = OmegaConf.create({"seed": 0, "steps": steps, "plot": True})
    full.oracle = cfg
    state = ParticleState(x=source.x.clone(), y=source.y.clone(), template=source)
    return SimpleNamespace(cfg=full, device=torch.device("cpu"), source=source, target=target, state=state,
                           summary={}, run_dir=run_dir, flowed=None)


def draw(figures, run_dir):
    """What the app does with a task's figures: each drawn into RUN_DIR/NAME.png."""
    for name, fn in figures.items():
        fn(run_dir / f"{name}.png")
    return {name: run_dir / f"{name}.png" for name in figures}


def test_stage_monitors_and_evaluates_with_correspondence(oracle_cfg, digits_split, tmp_path):
    from dsflow.tasks.repurpose import RepurposeTask

    train, test = digits_split
    perm = torch.tensor([3, 0, 7, 1, 9, 2, 8, 4, 6, 5]) + 20
    source = test.with_(y=perm[test.y])  # another label set: the stage adds a correspondence layer
    ctx = make_ctx(oracle_cfg, source, train, tmp_path)
    task = RepurposeTask()
    started = task.start(ctx)
    ctx.summary.update(started.summary)
    assert ctx.summary["oracle_correspondence"] == {j: int(perm[j]) for j in range(10)}
    assert ctx.summary["oracle_accuracy_before"] > 0.8
    (monitor,) = started.callbacks
    torch.manual_seed(0)
    for step in range(4):  # what the engine does: update, then callbacks with the moved state
        ctx.state.x = ctx.state.x + 0.05 * torch.randn_like(ctx.state.x)
        ctx.state.step = step + 1
        monitor(step, {"objective": 1.0 / (step + 1)}, ctx.state)
    assert monitor.history["step"] == [0, 2, 4]
    ctx.flowed = ctx.state.to_data()
    finished = task.finish(ctx)
    ctx.summary.update(finished.summary)
    images = draw(finished.figures, tmp_path)
    assert "wall_time" not in finished.summary  # the app alone writes it
    oracle = monitor.oracle.oracle
    # after the flow the correspondence is recomputed on the flowed particles; where it is still
    # the true permutation, the composed accuracy is the oracle's accuracy on its own labels
    after = ctx.summary["oracle_correspondence_after"]
    recovered = sum(after[j] == int(perm[j]) for j in range(10))
    assert recovered >= 8
    if recovered == 10:
        expected = evaluate(oracle, ctx.flowed.x, test.y).accuracy  # the oracle's own labels = un-permuted truth
        assert ctx.summary["oracle_accuracy_after"] == pytest.approx(expected)
    else:  # a swapped pair of classes can only cost accuracy, never add more than it
        assert ctx.summary["oracle_accuracy_after"] <= evaluate(oracle, ctx.flowed.x, test.y).accuracy + 0.01
    for name in ("oracle_confusion", "oracle_accuracy", "oracle_objective_vs_accuracy"):
        assert Path(images[name]).stat().st_size > 1000


def test_stage_without_correspondence_when_labels_match(oracle_cfg, digits_split, tmp_path):
    from dsflow.tasks.repurpose import RepurposeTask

    train, test = digits_split
    ctx = make_ctx(oracle_cfg, test, train, tmp_path, steps=1)
    started = RepurposeTask().start(ctx)
    assert started.summary["oracle_correspondence"] is None
    assert started.callbacks[0].oracle is not None and started.summary["oracle_accuracy_before"] > 0.8
    oracle_cfg.correspondence = "maybe"
    with pytest.raises(ValueError, match="auto, true or false"):
        RepurposeTask().start(make_ctx(oracle_cfg, test, train, tmp_path))
