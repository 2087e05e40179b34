"""`dsflow.state`: the particle state below flow and functionals, with a typed label slot."""

import pytest
import torch

from dsflow.state import GaussianLabels, LabelState, ParticleState


def test_old_spelling_builds_a_gaussian_label_state_and_old_import_paths_work():
    import dsflow
    from dsflow.flow import ParticleState as FlowState
    from dsflow.flow.state import ParticleState as OldState

    assert dsflow.ParticleState is ParticleState and FlowState is ParticleState and OldState is ParticleState
    m, f, i = torch.zeros(2, 3), torch.ones(2, 3, 1), torch.tensor([0, 1, 1])
    st = ParticleState(x=torch.zeros(3, 3), y=torch.tensor([0, 1, 1]), label_means=m, label_factors=f, label_index=i)
    assert isinstance(st.labels, GaussianLabels) and st.labels.kind == "gaussian"
    assert st.label_means is m and st.label_factors is f and st.label_index is i
    # checkpoint keys are the historical ones, so older checkpoints still resume
    assert list(st.tensors()) == ["x", "y", "label_means", "label_factors", "label_index"]
    new = torch.ones(2, 3)
    st.set_tensor("label_means", new)
    assert st.labels.means is new and st.label_means is new
    snap = st.snapshot()
    assert snap.labels is not st.labels and torch.equal(snap.labels.means, new)


def test_feature_driven_state_has_no_label_state():
    st = ParticleState(x=torch.zeros(3, 2), y=torch.tensor([0, 0, 1]))
    assert st.labels is None and st.label_means is None and list(st.tensors()) == ["x", "y"]
    with pytest.raises(AttributeError, match="GaussianLabels"):
        st.label_means = torch.zeros(1, 2)
    with pytest.raises(KeyError, match="no label state"):
        st.set_tensor("label_means", torch.zeros(1, 2))
    with pytest.raises(ValueError, match="need label_means"):
        ParticleState(x=torch.zeros(3, 2), y=torch.tensor([0, 0, 1]), label_index=torch.arange(3))
    with pytest.raises(ValueError, match="not both"):
        ParticleState(x=torch.zeros(3, 2), y=torch.tensor([0, 0, 1]), label_means=torch.zeros(2, 2),
                      labels=GaussianLabels(torch.zeros(2, 2)))


def test_otdd_refuses_a_label_state_it_does_not_know_by_name():
    from dsflow.data.container import LabeledData
    from dsflow.functionals.otdd import OTDD

    class Masses(LabelState):
        kind = "class_masses"

        def tensors(self):
            return {}

    g = torch.Generator().manual_seed(0)
    data = LabeledData(torch.randn(12, 2, generator=g), torch.tensor([0, 1] * 6))
    F = OTDD().bind(target=data)
    st = ParticleState(x=data.x.clone(), y=data.y.clone(), labels=Masses())
    with pytest.raises(TypeError, match="kind 'class_masses'"):
        F(st)


def test_dynamics_own_their_label_state():
    from dsflow.data.container import LabeledData
    from dsflow.flow.dynamics import make_dynamics

    g = torch.Generator().manual_seed(0)
    data = LabeledData(torch.randn(12, 2, generator=g), torch.tensor([0, 1] * 6))
    for name in ("fd", "jd_fl", "jd_vl"):
        dyn = make_dynamics(name)
        st = dyn.init_state(data)
        expected = dyn.label_state
        assert (st.labels is None) if expected is None else isinstance(st.labels, expected), name
