"""Entropy: no particle value (absent from the logged parts), temperature through sums."""

import pytest
import torch

from dsflow.flow.state import ParticleState
from dsflow.functionals import BallConstraint, Entropy, WeightedSum


def test_entropy_reports_no_part_and_carries_temperature():
    st = ParticleState(x=torch.randn(5, 2, requires_grad=True), y=torch.zeros(5, dtype=torch.long))
    ent = Entropy(temperature=0.3)
    assert ent.temperature == 0.3
    v, parts = ent.evaluate(st)
    assert parts == {} and v.item() == 0.0 and not v.requires_grad  # exact: a constant, no arithmetic
    total = WeightedSum({"ball": BallConstraint(radius=0.1),
                         "noise": {"weight": 2.0, "functional": ent}})
    value, parts = total.evaluate(st)
    assert set(parts) == {"ball", "total"}
    assert parts["total"] == pytest.approx(parts["ball"])
    assert total.temperature == pytest.approx(0.6)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_entropy_rejects_bad_temperature(bad):
    with pytest.raises(ValueError, match="temperature"):
        Entropy(bad)
