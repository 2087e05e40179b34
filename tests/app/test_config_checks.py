"""`dsflow.config_checks`: wrong types of run-level keys are refused before anything runs,
naming the key (issue 9, section 5)."""

import pytest
from hydra import compose, initialize_config_module

from dsflow.app import run
from dsflow.config_checks import ConfigValueError, check_run_config

TINY = ["dataset@source=gaussians", "dataset@target=moons", "source.n_per_class=10",
        "target.n_samples=30", "steps=2", "optimizer.lr=10", "progress=false", "logger=none", "plot=false"]


def compose_cfg(*overrides):
    keys = {o.split("=", 1)[0] for o in overrides}
    base = [o for o in TINY if o.split("=", 1)[0] not in keys]
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose(config_name="config", overrides=[*base, *overrides])


@pytest.mark.parametrize("override,named", [
    ("steps=abc", "steps='abc'"),
    ("steps=2.5", "steps=2.5"),  # used to run 2 steps silently
    ("steps=-1", "steps=-1"),
    ("seed=abc", "seed='abc'"),
    ("optimizer.lr=abc", "optimizer.lr='abc'"),
    ("optimizer.lr=0", "optimizer.lr=0"),
    ("optimizer=momentum", None),  # valid: control
    ("+optimizer.momentum=fast", "optimizer.momentum='fast'"),
    ("threads=two", "threads='two'"),
    ("plot=maybe", "plot='maybe'"),
    ("task=repurpose task.holdout=abc", "task.holdout='abc'"),  # the check moved with the key
    ("time_step=abc", "time_step='abc'"),
    ("time_step=-0.1", "time_step=-0.1"),
])
def test_bad_types_name_the_key_before_anything_runs(tmp_path, override, named):
    if named is None:
        overrides = [override, "optimizer.lr=1"]
        check_run_config(compose_cfg(*overrides))
        return
    cfg = compose_cfg(*override.split())
    with pytest.raises(ConfigValueError) as info:
        run(cfg, run_dir=tmp_path / "run")
    assert named in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing ran


def test_integral_float_steps_and_time_step_without_lr_are_accepted():
    check_run_config(compose_cfg("steps=3.0"))
    cfg = compose_cfg("optimizer.lr=null", "time_step=0.1")
    check_run_config(cfg)
    with pytest.raises(ConfigValueError, match="optimizer.lr=None"):
        check_run_config(compose_cfg("optimizer.lr=null"))


def test_a_number_given_as_a_string_says_how_to_decode_it(monkeypatch):
    monkeypatch.setenv("DSFLOW_TEST_SEED", "7")
    cfg = compose_cfg("seed=${oc.env:DSFLOW_TEST_SEED}")
    with pytest.raises(ConfigValueError, match=r"seed='7'.*oc\.decode"):
        check_run_config(cfg)
    cfg.seed = "${oc.decode:${oc.env:DSFLOW_TEST_SEED}}"  # the suggested fix works
    check_run_config(cfg)
    assert cfg.seed == 7


@pytest.mark.parametrize("override,new", [
    ("+holdout=0.2", "use task.holdout=0.2"),
    ("+source_labels=pseudo", "use task.source_labels='pseudo'"),
    ("+pushforward.enabled=true", "use task.pushforward.<option>=..."),
    ("+pseudo_labels.k=3", "task.pseudo_labels"),
])
def test_old_top_level_repurpose_keys_name_their_new_key(tmp_path, override, new):
    """The re-purposing options moved under the repurpose task (task.holdout, ...): a config or
    command line that still spells them at the top level is refused with the new key."""
    with pytest.raises(ConfigValueError) as info:
        run(compose_cfg(override), run_dir=tmp_path / "run")
    assert new in str(info.value) and "task=repurpose" in str(info.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
