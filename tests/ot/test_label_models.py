"""Label models (dsflow/ot/label_models.py) and the OTDD problem (dsflow/ot/problem.py)."""

import pytest
import torch

from dsflow.ot.class_stats import class_index
from dsflow.ot.label_models import INNER_CHOICES, LABEL_MODELS, label_distances, make_label_model
from dsflow.ot.problem import BACKENDS, make_problem


def _samples(seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(24, 3, dtype=torch.float64, generator=g)
    xt = torch.randn(18, 3, dtype=torch.float64, generator=g) + 0.5
    return xs, torch.arange(24) % 3, xt, torch.tensor([4, 7] * 9)


@pytest.mark.parametrize("inner", INNER_CHOICES)
def test_every_label_model_fits_and_returns_pairwise_distances(inner):
    xs, ys, xt, yt = _samples()
    model = make_label_model(inner, exact_inner_solver="sinkhorn")
    cs, idx_s = class_index(ys)
    ct, idx_t = class_index(yt)
    s, t = model.fit(xs, idx_s, cs), model.fit(xt, idx_t, ct)
    W_st, W_ss = model.distances(s, t), model.distances(s, s, same=True)
    assert W_st.shape == (3, 2) and W_ss.shape == (3, 3)
    assert float(W_ss.diagonal().abs().max()) == 0.0 and bool((W_st >= 0).all())
    torch.testing.assert_close(W_st, label_distances(xs, ys, xt, yt, inner=inner, exact_solver="sinkhorn").st)


def test_means_and_gaussian_read_joint_parameters_the_others_refuse():
    means, factors = torch.randn(3, 2), torch.randn(3, 2, 2)
    assert make_label_model("means").from_parameters(means, factors) is means
    assert make_label_model("gaussian").from_parameters(means, factors) == (means, factors)
    for inner in ("exact", "none"):
        with pytest.raises(ValueError, match="joint-driven.*set inner='gaussian'"):
            make_label_model(inner).from_parameters(means, factors)


def test_factory_errors_name_the_choices_and_the_fix():
    with pytest.raises(ValueError, match=r"otdd: inner must be one of \('exact', 'gaussian', 'means', 'none'\)"):
        make_label_model("bures")
    with pytest.raises(ValueError, match="use p=2 or inner='exact'"):
        make_label_model("gaussian", p=1)
    with pytest.raises(ValueError, match="exact_inner_solver must be 'emd' or 'sinkhorn'"):
        make_label_model("exact", exact_inner_solver="lp")
    assert set(LABEL_MODELS) == set(INNER_CHOICES)
    assert make_label_model("gaussian").checks_singletons and not make_label_model("means").checks_singletons


def test_one_backend_table_and_one_validation():
    assert set(BACKENDS) == {"dsflow", "geomloss", "exact"}
    assert make_problem(outer="exact").backend == "exact"
    assert make_problem(solver="geomloss").backend == "geomloss"
    assert make_problem(inner="none").uses_labels is False and make_problem(label_weight=0).blocks == ("st", "ss", "tt")
    assert make_problem(outer="sinkhorn_biased").blocks == ("st",)
    with pytest.raises(ValueError, match="OTDD: entreg must be > 0"):
        make_problem(entreg=0.0, caller="OTDD")
    with pytest.raises(ValueError, match="solver must be 'dsflow' or 'geomloss'"):
        make_problem(solver="pot")
    with pytest.raises(ValueError, match="return_coupling=False"):
        make_problem(solver="geomloss", return_coupling=True)


def test_functional_and_otdd_share_the_problem():
    from dsflow.data.container import LabeledData
    from dsflow.flow.state import ParticleState
    from dsflow.functionals import OTDD
    from dsflow.ot import otdd

    xs, ys, xt, yt = _samples(1)
    for inner in ("means", "gaussian"):
        F = OTDD(inner=inner, tol=1e-9, max_iter=5000, warm_start=False, target=LabeledData(xt, yt))
        assert F.labels is F.problem.labels and F.labels.name == inner
        ref = otdd(LabeledData(xs, ys), LabeledData(xt, yt), inner=inner, tol=1e-9, max_iter=5000).cost
        assert float(F(ParticleState(x=xs, y=ys))) == pytest.approx(float(ref), rel=1e-7)


def test_pseudo_label_alignment_uses_the_label_models():
    from dsflow.data.container import LabeledData
    from dsflow.oracle.pseudo_labels import label_costs

    xs, ys, xt, yt = _samples(2)
    C = label_costs(xs, ys, LabeledData(xt, yt), "means")
    torch.testing.assert_close(C, label_distances(xs, ys, xt, yt, inner="means").st)
