"""Every config of the groups dynamics/, optimizer/, flow/, functional/ (except otdd.yaml)
composes and instantiates to the right object, and flow/default.yaml matches run_flow."""

import inspect
from importlib import resources

import pytest
import torch

from dsflow.flow.dynamics_base import Dynamics
from dsflow.functionals.base import Functional, WeightedSum


def _names(group):
    root = resources.files("dsflow.configs") / group
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _compose(group, name):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="dsflow.configs", version_base="1.3"):
        return compose(config_name=None, overrides=[f"+{group}={name}"])[group]


@pytest.mark.parametrize("name", _names("dynamics"))
def test_dynamics_configs(name):
    from hydra.utils import instantiate

    dyn = instantiate(_compose("dynamics", name))
    assert isinstance(dyn, Dynamics)
    expected = {"fd": "fd", "jd_fl": "jd_fl"}.get(name, "jd_vl")
    assert dyn.name == expected
    if name.startswith("jd_vl"):
        assert dyn.clustering == ("kmeans" if name == "jd_vl_kmeans" else "dbscan")
        assert (dyn.eps, dyn.min_samples) == (5.0, 4)  # paper appendix C


@pytest.mark.parametrize("name", _names("optimizer"))
def test_optimizer_configs(name):
    from hydra.utils import instantiate

    factory = instantiate(_compose("optimizer", name))
    opt = factory([{"params": [torch.zeros(3, requires_grad=True)]}])
    assert isinstance(opt, torch.optim.Optimizer)
    if name == "momentum":
        assert opt.param_groups[0]["momentum"] == 0.9


def test_flow_default_matches_run_flow_signature():
    from dsflow.flow.engine import run_flow

    cfg = _compose("flow", "default")
    params = inspect.signature(run_flow).parameters
    assert set(cfg) <= set(params)
    for key, value in cfg.items():
        if key not in ("checkpoint_dir",):
            assert params[key].default == value, key


@pytest.mark.parametrize("name", [n for n in _names("functional") if n != "otdd"])
def test_functional_configs(name):
    from hydra.utils import instantiate

    import dsflow.functionals as F

    cfg = _compose("functional", name)
    if "otdd" in name and not hasattr(F, "OTDD"):
        pytest.skip("dsflow.functionals.OTDD is not there yet")
    fn = instantiate(cfg, _convert_="partial")
    if isinstance(fn, dict):
        fn = WeightedSum(fn)
    assert isinstance(fn, Functional)
    if "otdd" in name:
        assert isinstance(fn, WeightedSum) and "otdd" in fn.terms
    if name == "entropy" or name == "otdd_entropy":
        assert fn.temperature > 0
