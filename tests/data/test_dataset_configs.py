"""Every configs/dataset/*.yaml composes with Hydra, matches its loader's signature and instantiates."""

import inspect
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import dsflow.data as D

DATASET_DIR = Path(str(files("dsflow.configs"))) / "dataset"
CONFIG_NAMES = sorted(p.stem for p in DATASET_DIR.glob("*.yaml"))
EMBEDDED = {"digits", "digits_rotated", "gaussians", "swissroll", "moons", "rings"}
EXPECTED = EMBEDDED | {"npz", "mnist", "usps", "fashion_mnist", "kmnist", "emnist", "cifar10", "stl10", "camelyon"}


def _target_function(target: str):
    module, _, attr = target.rpartition(".")
    assert module == "dsflow.data", f"_target_ {target} is not a dsflow.data loader"
    return getattr(D, attr)


def test_every_dataset_has_a_config():
    assert EXPECTED <= set(CONFIG_NAMES)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_keys_are_exactly_the_loader_arguments_with_comments(name):
    text = (DATASET_DIR / f"{name}.yaml").read_text()
    cfg = OmegaConf.load(DATASET_DIR / f"{name}.yaml")
    loader = _target_function(cfg._target_)
    keys = set(cfg.keys()) - {"_target_"}
    params = set(inspect.signature(loader).parameters)
    assert keys == params, f"{name}.yaml keys differ from {loader.__name__}(): {sorted(keys ^ params)}"
    assert OmegaConf.to_container(cfg)["seed"] == "${seed}"  # the run seed flows in
    top_level = [line for line in text.splitlines() if line and not line.startswith((" ", "#", "_target_"))]
    assert top_level and all("#" in line for line in top_level), f"{name}.yaml: every key needs a comment"


@pytest.fixture
def compose(tmp_path):
    """Compose ``dataset@source=NAME`` from a tiny primary config that searches dsflow.configs."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    primary = tmp_path / "conf"
    primary.mkdir()
    (primary / "primary.yaml").write_text(
        "defaults:\n  - dataset@source: digits\n  - _self_\nseed: 3\n"
        "hydra:\n  searchpath:\n    - pkg://dsflow.configs\n"
    )
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(primary), version_base="1.3"):
        yield lambda name, *overrides: hydra_compose("primary", overrides=[f"dataset@source={name}", *overrides])
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_embedded_configs_compose_and_instantiate(compose, name):
    from hydra.utils import instantiate

    cfg = compose(name, "source.max_samples=40")
    assert cfg.source.seed == 3
    data = instantiate(cfg.source)
    assert isinstance(data, D.LabeledData) and data.n == 40
    assert data.x.dtype.is_floating_point and str(data.x.dtype) == "torch.float32"
    again = instantiate(compose(name, "source.max_samples=40").source)
    assert np.array_equal(again.x.numpy(), data.x.numpy())


def test_digits_rotated_is_rotated_inverted_permuted(compose):
    from hydra.utils import instantiate

    data = instantiate(compose("digits_rotated").source)
    assert data.name == "digits_rotated" and data.n == 1797
    assert [t["name"] for t in data.meta["transforms"]] == ["rotate90", "invert", "permute_labels"]
    assert sorted(data.meta["label_permutation"].values()) == list(range(10))
    base = D.digits()
    # invert: background pixels (0 in digits) become 1
    assert float(data.x.mean()) == pytest.approx(1.0 - float(base.x.mean()), abs=1e-5)


def test_typo_in_an_override_fails_at_compose_time(compose):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose("moons", "source.n_per_clas=3")


def test_transform_override_from_the_command_line(compose):
    from hydra.utils import instantiate

    cfg = compose("moons", "source.n_samples=10", "source.transform=[{name: shift, offset: [1.0, 2.0]},standardize]")
    data = instantiate(cfg.source)
    assert [t["name"] for t in data.meta["transforms"]] == ["shift", "standardize"]
    assert abs(float(data.x.mean())) < 1e-5


def test_real_dataset_configs_instantiate_on_tiny_files(compose, tmp_path, writers):
    from hydra.utils import instantiate

    root = tmp_path / "data"
    writers.idx_dataset(root, "MNIST", "train", n=20)
    writers.idx_dataset(root, "FashionMNIST", "train", n=20)
    writers.idx_dataset(root, "KMNIST", "train", n=20)
    writers.idx_dataset(root, "EMNIST", "emnist-letters-train", n=26, n_classes=26, offset=1)
    writers.usps(root, n=20)
    writers.cifar10(root, per_batch=4)
    writers.stl10(root, n=10)
    writers.pcam(root, n=6)
    np.savez(root / "mine.npz", x=np.zeros((4, 3)), y=np.arange(4) % 2)
    shapes = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "kmnist": (1, 28, 28), "emnist": (1, 28, 28),
              "usps": (1, 28, 28), "cifar10": (3, 32, 32), "stl10": (3, 32, 32), "camelyon": (3, 32, 32)}
    for name, shape in shapes.items():
        data = instantiate(compose(name, f"source.root={root}", "source.max_samples=4").source)
        assert data.n == 4 and data.image_shape == shape, name
    data = instantiate(compose("npz", f"source.path={root / 'mine.npz'}").source)
    assert data.n == 4 and data.d == 3
    with pytest.raises(Exception, match="Missing mandatory value"):
        instantiate(compose("npz").source)
