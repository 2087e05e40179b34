"""`dsflow-distance` in-process: value against POT, outputs, failure summary."""

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from dsflow.distance_app import run_distance

SMALL = ["dataset@source=moons", "dataset@target=rings", "source.n_samples=16", "target.n_per_class=5",
         "dtype=float64", "device=cpu"]


def compose_distance(*overrides, base=SMALL):
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose(config_name="distance", overrides=[*base, *overrides])


def reference_otdd(xs, ys, xt, yt):
    """Exact OTDD (p=2) with POT only: W_2^2 between class-conditionals, then the outer OT
    on ||x - x'||^2 + W_2^2(y, y'); returns (distance, label distances)."""
    import ot

    cs, ct = np.unique(ys), np.unique(yt)
    W = np.zeros((len(cs), len(ct)))
    for a, c in enumerate(cs):
        for b, e in enumerate(ct):
            A, B = xs[ys == c], xt[yt == e]
            W[a, b] = ot.emd2(np.full(len(A), 1 / len(A)), np.full(len(B), 1 / len(B)), ot.dist(A, B))
    M = ot.dist(xs, xt) + W[np.searchsorted(cs, ys)][:, np.searchsorted(ct, yt)]
    cost = ot.emd2(np.full(len(xs), 1 / len(xs)), np.full(len(xt), 1 / len(xt)), M)
    return np.sqrt(cost), W


def test_exact_distance_matches_pot_and_outputs_exist(tmp_path):
    from dsflow.data import moons, rings

    summary = run_distance(compose_distance("inner=exact", "outer=exact", "p=2"), run_dir=tmp_path)
    xs, ys = moons(n_samples=16, seed=0).numpy()
    xt, yt = rings(n_per_class=5, seed=0).numpy()
    distance, W = reference_otdd(xs.astype(np.float64), ys, xt.astype(np.float64), yt)
    # float64 network simplex on both sides: agreement to round-off
    assert summary["distance"] == pytest.approx(distance, rel=1e-6)
    np.testing.assert_allclose(summary["label_distances"], W, rtol=1e-6, atol=1e-9)
    C = np.array(summary["class_coupling"])
    np.testing.assert_allclose(C.sum(axis=1), [0.5, 0.5], atol=1e-9)  # class masses of the source
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == "ok" and on_disk["source_class_names"] == ["0", "1"]
    for name in ("label_distances.png", "class_coupling.png", "distance.npz", "config.yaml"):
        assert (tmp_path / name).is_file()


def test_distance_failure_is_recorded(tmp_path):
    with pytest.raises(ValueError, match="resize"):
        cfg = compose_distance("dataset@source=digits", "source.n_per_class=2", "dataset@target=moons", base=[])
        run_distance(cfg, run_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "resize" in summary["error"]
