import pytest
import torch

from dsflow.models import ConvAutoencoder, fit_pushforward


def nonlinear_map(x):
    return x + 0.8 * torch.sin(2.0 * x).roll(1, dims=1) + 0.5


def test_mlp_map_learns_a_known_nonlinear_map():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(600, 4, generator=gen)
    pf = fit_pushforward(x0, nonlinear_map(x0), epochs=40, restarts=2, batch_size=64, seed=0, device="cpu")
    assert pf.identity_val_mse > 0.3
    assert pf.val_mse < 0.1 * pf.identity_val_mse, (pf.val_mse, pf.identity_val_mse)
    for rec in pf.history:  # fitting error decreases with training
        assert rec["train_mse"][-1] < 0.2 * rec["train_mse"][0]
        assert rec["val_mse"][-1] < rec["val_mse"][0]
    assert pf.val_mse == min(r["final_val_mse"] for r in pf.history)  # best restart kept
    # samples that were never flowed
    x_new = torch.randn(300, 4, generator=gen)
    assert pf.mse(x_new, nonlinear_map(x_new)) < 0.1 * float(((x_new - nonlinear_map(x_new)) ** 2).mean())
    assert not any(p.requires_grad for p in pf.model.parameters())


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 8, 8), (1, 7, 9)])
def test_autoencoder_mirrors_shapes(shape):
    ae = ConvAutoencoder(shape)
    convs = [m for m in ae.encoder if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in ae.encoder if isinstance(m, torch.nn.Linear)]
    assert len(convs) == 2 and len(fcs) == 5  # paper appendix C: 2 conv + 5 fully connected
    assert [m.out_features for m in ae.decoder if isinstance(m, torch.nn.Linear)][::-1][1:] == [m.out_features for m in fcs][:-1]
    assert ae(torch.rand(2, *shape)).shape == (2, *shape)


def bumps(centres, side=8, width=1.2):
    """Images of one Gaussian bump each (a 2-parameter family the autoencoder can learn)."""
    g = torch.arange(float(side))
    d2 = (g[None, :, None] - centres[:, 0, None, None]) ** 2 + (g[None, None, :] - centres[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * width**2)).reshape(len(centres), -1)


def test_autoencoder_fit_beats_identity_on_images():
    gen = torch.Generator().manual_seed(0)
    centres = torch.rand(500, 2, generator=gen) * 5 + 1.5
    x0 = bumps(centres)
    xT = 1.0 - bumps(centres.flip(1))  # transpose the bump's position and invert: far from the identity
    pf = fit_pushforward(x0, xT, image_shape=(1, 8, 8), epochs=30, restarts=1, batch_size=32, seed=1, device="cpu",
                         options={"channels": (8, 16), "hidden": (64, 64, 32, 32, 16)})
    curve = pf.history[pf.best_restart]["val_mse"]
    assert curve[-1] < 0.5 * curve[0]
    assert pf.val_mse < 0.1 * pf.identity_val_mse, (pf.val_mse, pf.identity_val_mse)
    new = torch.rand(100, 2, generator=gen) * 5 + 1.5  # bumps that were never flowed
    assert pf.mse(bumps(new), 1.0 - bumps(new.flip(1))) < 0.1 * pf.identity_val_mse


def test_report_with_oracle(digits_oracle, digits_split):
    _, test = digits_split
    half = test.n // 2
    # "flow": the identity plus a shift; the map should undo nothing and keep the oracle's accuracy
    x0 = test.x[:half]
    pf = fit_pushforward(x0, x0 * 0.9 + 0.05, epochs=20, restarts=1, seed=0, device="cpu")
    rep = pf.report(test.x[half:], oracle=digits_oracle, y=test.y[half:], x_target=test.x[half:] * 0.9 + 0.05)
    assert rep["mse"] < rep["identity_val_mse"]
    assert rep["accuracy_unmapped"] > 0.85 and rep["accuracy_mapped"] > 0.8


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        fit_pushforward(torch.zeros(10, 3), torch.zeros(10, 4))
    with pytest.raises(ValueError, match="needs image data"):
        fit_pushforward(torch.zeros(10, 3), torch.zeros(10, 3), architecture="autoencoder")
    with pytest.raises(ValueError, match="val_fraction"):
        fit_pushforward(torch.zeros(10, 3), torch.zeros(10, 3), val_fraction=1.0)
    pf = fit_pushforward(torch.rand(20, 3), torch.rand(20, 3), epochs=1, restarts=1)
    with pytest.raises(ValueError, match="rows of 3 features"):
        pf(torch.zeros(2, 5))


def test_fit_is_seeded():
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(80, 3, generator=gen)
    a = fit_pushforward(x0, x0 ** 2, epochs=3, restarts=2, seed=5)
    b = fit_pushforward(x0, x0 ** 2, epochs=3, restarts=2, seed=5)
    c = fit_pushforward(x0, x0 ** 2, epochs=3, restarts=2, seed=6)
    assert a.val_mse == b.val_mse and torch.equal(a.val_index, b.val_index)
    assert a.val_mse != c.val_mse
