"""The parts of the particle loop: rules, divergence guard, checkpoint payload, interfaces."""

from functools import partial

import pytest
import torch

from dsflow.data.container import LabeledData
from dsflow.flow.dynamics import FeatureDriven
from dsflow.flow.engine import run_flow
from dsflow.flow.rules import Box, BrownianNoise, GradientClip
from dsflow.functionals import Entropy, Functional


class Square(Functional):
    name = "square"

    def __call__(self, state):
        return (state.x ** 2).sum(1).mean()


def _state(n=6):
    data = LabeledData(torch.arange(2 * n, dtype=torch.float32).reshape(n, 2), torch.tensor([0, 1] * (n // 2)))
    dyn = FeatureDriven()
    return dyn.init_state(data), dyn


def test_rules_parse_their_options_once_and_refuse_bad_ones():
    assert GradientClip.parse(None) is None and Box.parse(None) is None
    assert GradientClip.parse(2).mode == "global"
    assert GradientClip.parse({"max_norm": 1, "mode": "per_particle"}).mode == "per_particle"
    with pytest.raises(ValueError, match="global' or 'per_particle"):
        GradientClip.parse({"max_norm": 1, "mode": "rows"})
    with pytest.raises(ValueError, match="lo must be < hi"):
        Box.parse([1, 0])


def test_noise_over_n_divides_by_the_functionals_velocity_factor():
    st, _ = _state(6)
    assert BrownianNoise.for_objective(Square(), st, seed=0, noise_scale="lr") is None  # T = 0: no noise
    noise = BrownianNoise.for_objective(Entropy(0.5), st, seed=0, noise_scale="lr_over_n")
    assert noise.divisor == 6 and noise.temperature == 0.5
    with pytest.raises(ValueError, match="noise_scale"):
        BrownianNoise.for_objective(Entropy(0.5), st, seed=0, noise_scale="n")


def test_run_flow_refuses_objects_without_the_declared_interfaces():
    st, dyn = _state()
    with pytest.raises(TypeError, match="subclass Functional"):
        run_flow(st, lambda s: s.x.sum(), dyn, partial(torch.optim.SGD, lr=0.1), steps=1, progress=False)
    with pytest.raises(TypeError, match="subclass Dynamics"):
        run_flow(st, Square(), object(), partial(torch.optim.SGD, lr=0.1), steps=1, progress=False)


def test_checkpoint_payload_holds_the_objective_state_of_the_interface(tmp_path):
    from dsflow.flow.checkpoint import list_checkpoints, load_checkpoint

    st, dyn = _state()
    run_flow(st, Square(), dyn, partial(torch.optim.SGD, lr=0.1), steps=2, progress=False,
             checkpoint_every=1, checkpoint_dir=tmp_path)
    payload = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert payload["objective"] == {} and payload["state"]["step"] == 2 and set(payload["state"]["tensors"]) == {"x", "y"}
