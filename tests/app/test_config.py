"""Every config group option and every experiment composes (in-process, no run)."""

from importlib import resources

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError

from dsflow.app import DTYPES

CONFIG_DIR = resources.files("dsflow.configs")
# group -> key the selected option lands at (dataset is used twice)
GROUPS = {"dataset": "source", "functional": "functional", "dynamics": "dynamics",
          "optimizer": "optimizer", "flow": "flow", "oracle": "oracle", "logger": "logger"}
TOP_LEVEL = {"seed", "device", "dtype", "steps", "progress", "plot", "name"}


def options(group: str) -> list[str]:
    return sorted(p.name[:-5] for p in CONFIG_DIR.joinpath(group).iterdir() if p.name.endswith(".yaml"))


def compose_cfg(*overrides: str, name: str = "config"):
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def test_default_config_has_every_group_and_top_level_key():
    cfg = compose_cfg()
    assert TOP_LEVEL | set(GROUPS.values()) | {"target"} <= set(cfg)
    assert "experiment" not in cfg  # experiments are opt-in: +experiment=NAME
    assert cfg.dtype in DTYPES and cfg.device == "auto"
    assert cfg.logger.name == "wandb" and cfg.logger.mode == "offline"
    assert cfg.oracle.name == "none"
    assert cfg.source._target_ and cfg.target._target_
    assert OmegaConf.is_struct(cfg)


def test_typo_keys_fail_loudly():
    with pytest.raises(ConfigCompositionException, match="stepz"):
        compose_cfg("stepz=3")
    cfg = compose_cfg()
    with pytest.raises(ConfigAttributeError):
        cfg.stepz  # noqa: B018 - struct mode


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_option_of_every_group_composes(group):
    names = options(group)
    assert names, f"configs/{group}/ has no option"
    key = "dataset@source" if group == "dataset" else group
    for name in names:
        extra = ["source.path=x.npz"] if name == "npz" else []
        cfg = compose_cfg(f"{key}={name}", *extra)
        node = cfg[GROUPS[group]]
        assert node is not None, f"{group}={name} composed to nothing"
        if group in ("dataset", "functional", "dynamics", "optimizer"):
            assert "_target_" in node, f"{group}/{name}.yaml has no _target_"
        OmegaConf.to_container(node, resolve=True)  # interpolations resolve


def test_dataset_group_also_composes_as_target():
    cfg = compose_cfg("dataset@target=moons", "dataset@source=rings")
    assert cfg.target._target_.endswith("moons") and cfg.source._target_.endswith("rings")


def test_every_experiment_composes():
    names = options("experiment")
    assert "default" in names
    for name in names:
        cfg = compose_cfg(f"+experiment={name}")
        plain = OmegaConf.to_container(cfg, resolve=True)
        assert TOP_LEVEL <= set(plain), f"experiment {name} lost top-level keys"
        assert int(plain["steps"]) >= 0


def test_unknown_option_lists_valid_names():
    with pytest.raises(Exception) as info:
        compose_cfg("dataset@source=nope")
    message = str(info.value)
    assert "nope" in message and "digits" in message and "moons" in message


def test_distance_config():
    cfg = compose_cfg(name="distance")
    assert {"inner", "outer", "p", "entreg", "feature_weight", "label_weight", "source", "target"} <= set(cfg)
    assert cfg.inner in ("exact", "gaussian", "means", "none")
