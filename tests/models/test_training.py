import json

import pytest
import torch

from dsflow.data.container import LabeledData
from dsflow.models import get_oracle, load_oracle, load_training_data, save_oracle
from dsflow.models import cache as cache_mod
from dsflow.oracle import evaluate
from dsflow.models import training as training_mod


def test_mlp_oracle_on_digits_reaches_090_test_accuracy(digits_oracle, digits_split):
    _, test = digits_split
    acc = evaluate(digits_oracle, test).accuracy
    assert acc >= 0.9, acc
    assert digits_oracle.checkpoint_meta["val_accuracy"] >= 0.85
    assert digits_oracle.frozen and not digits_oracle.training


def test_second_call_hits_the_cache_without_training(digits_split, tmp_path, monkeypatch):
    train, test = digits_split
    small = train.subset(torch.arange(0, train.n, 3))
    kw = dict(train=small, epochs=2, batch_size=64, cache_dir=tmp_path, device="cpu", options={"hidden": [32]})
    first = get_oracle("mlp", **kw)
    assert first.cache_hit is False and len(list(tmp_path.glob("mlp-*.pt"))) == 1

    def no_training(*a, **k):
        raise AssertionError("retrained although the weights are cached")

    monkeypatch.setattr(cache_mod, "fit_classifier", no_training)
    second = get_oracle("mlp", **kw)
    assert second.cache_hit is True
    for (k, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), k
    # anything that changes the weights changes the key: a different epoch count retrains
    with pytest.raises(AssertionError, match="retrained"):
        get_oracle("mlp", **{**kw, "epochs": 3})


def test_cache_dir_defaults_to_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DSFLOW_CACHE", str(tmp_path))
    assert cache_mod.default_cache_dir() == tmp_path / "oracles"


def test_checkpoint_roundtrip_with_weights_only(digits_oracle, digits_split, tmp_path):
    _, test = digits_split
    path = save_oracle(digits_oracle, tmp_path / "ck" / "oracle.pt", meta={"note": "x"})
    payload = torch.load(path, weights_only=True)  # plain tensors and values only
    assert payload["oracle"]["architecture"] == "mlp"
    loaded = get_oracle("mlp", checkpoint=str(path), device="cpu")
    assert loaded.frozen and loaded.checkpoint_meta["note"] == "x"
    assert torch.equal(loaded.predict(test.x), digits_oracle.predict(test.x))
    assert torch.equal(loaded.mean, digits_oracle.mean) and torch.equal(loaded.std, digits_oracle.std)


def test_bare_state_dict_loads_with_architecture(digits_oracle, digits_split, tmp_path):
    _, test = digits_split
    torch.save(digits_oracle.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="bare state dict"):
        load_oracle(tmp_path / "bare.pt")
    loaded = load_oracle(tmp_path / "bare.pt", architecture="mlp", input_dim=64, classes=list(range(10)),
                         options={"hidden": [256, 128]})
    assert torch.equal(loaded.predict(test.x), digits_oracle.predict(test.x))


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "oracle.pt"
    with pytest.raises(FileNotFoundError, match="nope/oracle.pt"):
        get_oracle("mlp", checkpoint=str(missing))


def test_training_needs_a_dataset():
    with pytest.raises(ValueError, match="oracle.train"):
        get_oracle("mlp", checkpoint=None, train=None)


def test_labels_outside_the_oracle_classes_are_rejected(digits_oracle):
    from dsflow.models.training import label_indices

    with pytest.raises(ValueError, match=r"labels \[12\] are not among"):
        label_indices(digits_oracle.classes, torch.tensor([1, 12]))


def test_inhouse_split_for_loaders_without_split():
    cfg = {"_target_": "dsflow.data.moons", "split": "train", "n_samples": 400}  # moons has no split option
    train = load_training_data(cfg)
    test = load_training_data({**cfg, "split": "test"})
    everything = load_training_data({**cfg, "split": "all"})
    assert train.n + test.n == everything.n == 400
    assert abs(test.n / everything.n - training_mod.INHOUSE_TEST_FRACTION) < 0.01
    rows = {tuple(r) for r in train.x.tolist()}
    assert not any(tuple(r) in rows for r in test.x.tolist())  # disjoint samples
    with pytest.raises(ValueError, match="'train', 'test' or 'all'"):
        load_training_data({**cfg, "split": "val"})


def test_loaders_with_a_split_get_it_directly():
    cfg = {"_target_": "dsflow.data.digits", "split": "train"}
    train = load_training_data(cfg)
    test = load_training_data({**cfg, "split": "test"})
    assert train.n + test.n == 1797 and abs(test.n - train.n) <= 10  # the digits' own fixed halves
    assert not set(train.meta["indices"]) & set(test.meta["indices"])


def test_config_file_instantiates_a_trained_oracle(tmp_path):
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import dsflow.configs

    cfg = OmegaConf.load(Path(dsflow.configs.__file__).parent / "oracle" / "mlp_digits.yaml")
    cfg.device = "cpu"  # the run-level ${device} interpolation is the app's
    cfg.cache_dir = str(tmp_path)
    cfg.epochs = 3
    cfg.train.max_samples = 300
    oracle = instantiate(cfg)
    assert oracle.frozen and oracle.eval_every == cfg.eval_every
    assert oracle.checkpoint_meta["train_samples"] + oracle.checkpoint_meta["val_samples"] == 300
    key = json.dumps(OmegaConf.to_container(cfg.train), sort_keys=True)
    assert "digits" in key and len(list(tmp_path.glob("mlp-*.pt"))) == 1


def _resized(data, side, channels=1):
    imgs = torch.nn.functional.interpolate(data.images(), size=(side, side), mode="bilinear", align_corners=False)
    imgs = imgs.expand(-1, channels, -1, -1)
    return LabeledData(x=imgs.reshape(data.n, -1), y=data.y, image_shape=(channels, side, side))


def test_lenet5_learns_digits_at_16x16(digits_split, tmp_path):
    train, test = (_resized(d, 16) for d in digits_split)
    oracle = get_oracle("lenet5", train=train, epochs=4, batch_size=32, cache_dir=tmp_path, device="cpu")
    acc = evaluate(oracle, test).accuracy
    assert acc >= 0.8, acc


@pytest.mark.slow
def test_small_resnet_learns_colour_digits(digits_split, tmp_path):
    train, test = (_resized(d, 16, channels=3) for d in digits_split)
    oracle = get_oracle("resnet18_cifar", train=train, epochs=3, batch_size=64, cache_dir=tmp_path, device="cpu",
                        options={"width": 8})
    assert evaluate(oracle, test).accuracy >= 0.8


def test_training_is_seeded(digits_split):
    train, _ = digits_split
    small = train.subset(torch.arange(0, train.n, 4))
    kw = dict(train=small, epochs=2, use_cache=False, device="cpu", options={"hidden": [16]})
    a, b = get_oracle("mlp", seed=1, **kw), get_oracle("mlp", seed=1, **kw)
    c = get_oracle("mlp", seed=2, **kw)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.network.layers[0].weight, c.network.layers[0].weight)


def test_fine_tuning_a_frozen_classifier_works_on_a_copy(digits_oracle, digits_split):
    """The fine-tuning baseline continues a pretrained oracle's training, which fit_classifier
    refuses for a frozen one (its message names the function that does it)."""
    import torch

    from dsflow.models import fine_tune_classifier, fit_classifier

    train, test = digits_split
    shifted = test.with_(x=1.0 - test.x)  # inverted digits: the pretrained oracle reads few of them
    with pytest.raises(ValueError, match="fine_tune_classifier"):
        fit_classifier(digits_oracle, shifted, epochs=1)
    before = {k: v.clone() for k, v in digits_oracle.state_dict().items()}
    tuned, history = fine_tune_classifier(digits_oracle, shifted, epochs=15, lr=3e-3, batch_size=32)
    assert tuned is not digits_oracle and tuned.frozen and not any(p.requires_grad for p in tuned.parameters())
    assert all(torch.equal(before[k], v) for k, v in digits_oracle.state_dict().items())  # the oracle is untouched
    assert torch.equal(tuned.mean, digits_oracle.mean)  # the pretrained normalisation is kept
    assert evaluate(tuned, shifted).accuracy > evaluate(digits_oracle, shifted).accuracy + 0.3
    assert len(history["loss"]) == 15
