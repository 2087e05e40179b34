"""The declared interface of a functional: defaults the engine relies on instead of probing."""

import pytest
import torch

from dsflow.functionals import BallConstraint, Entropy, Functional, OTDD, WeightedSum
from dsflow.units import lr_from_time_step


class Square(Functional):
    name = "square"

    def __call__(self, state):
        return (state.x ** 2).sum(1).mean()


def test_defaults_of_the_base_class():
    f = Square()
    assert f.temperature == 0.0 and f.parts() == {} and f.state_dict() == {}
    assert f.time_scaling == "particle_average"
    assert f.velocity_factor(torch.zeros(7, dtype=torch.long)) == 7
    f.load_state_dict({})  # a no-op that forgets caches


def test_weighted_sum_exposes_its_parts_temperature_and_scaling():
    s = WeightedSum({"a": Square(), "noise": {"weight": 2.0, "functional": Entropy(0.5)}})
    assert list(s.parts()) == ["a", "noise"] and s.temperature == 1.0
    assert s.time_scaling == "particle_average" and s.velocity_factor(torch.zeros(5)) == 5
    assert s.state_dict() == {}  # parts without resumable state are left out


def test_a_sum_of_terms_with_an_unknown_time_scaling_is_refused():
    class Unknown(Square):
        time_scaling = "per_sample_weights"

    class ClassMassWithoutMasses(Square):
        time_scaling = "class_mass"

    with pytest.raises(ValueError, match="not one of"):
        WeightedSum({"a": Square(), "b": Unknown()})
    with pytest.raises(ValueError, match="override velocity_factor"):
        Unknown().velocity_factor(torch.zeros(3))
    # a class-mass functional must say what its masses are (the engine divides by them)
    with pytest.raises(NotImplementedError, match="needs particle_masses"):
        ClassMassWithoutMasses().particle_masses(torch.zeros(3))
    assert Square().particle_masses(torch.zeros(3)) is None  # particle average: folded into lr


def test_lr_of_a_time_step_asks_the_functional():
    y = torch.zeros(40, dtype=torch.long)
    for f in (OTDD(), BallConstraint(), Square()):
        assert lr_from_time_step(0.01, 40, "SGD", velocity_factor=f.velocity_factor(y)) == 0.01 * 40
    assert lr_from_time_step(0.01, 40, "SGD") == 0.01 * 40
    with pytest.raises(ValueError, match="different rates"):
        lr_from_time_step(0.01, 3, "SGD", velocity_factor=torch.tensor([3.0, 3.0, 1.5]))
