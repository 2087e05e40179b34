"""Every hint the data loading prints is run as printed, in the run's own config (composed in
process with Hydra) and must get past the error it came with.  Once through the `dsflow`
command: the issue's RGB digits flowed toward MNIST."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from dsflow.app import load_datasets

HERE = Path(__file__).parent


def compose_run(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def fix_of(message: str) -> list[str]:
    """The overrides after "add " at the end of a feature-space message."""
    assert " add " in message, message
    return shlex.split(message.rsplit(" add ", 1)[1])


def load_error(*overrides) -> str:
    with pytest.raises(ValueError) as info:
        load_datasets(compose_run(*overrides))
    return str(info.value)


def rgb_npz(path, n=20, size=32):
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8), y=np.arange(n) % 10)
    return path


def test_rgb_digits_toward_mnist_suggests_resize_and_channels_that_work(tmp_path, writers):
    writers.idx_dataset(tmp_path, "MNIST", "train", n=20)
    run = ["dataset@source=npz", f"source.path={rgb_npz(tmp_path / 'mnist_m.npz')}", "dataset@target=mnist",
           f"target.root={tmp_path}"]
    message = load_error(*run)
    assert "source 'mnist_m' (d=3072, image 3x32x32) and target 'mnist' (d=784, image 1x28x28)" in message
    assert fix_of(message) == ["source.resize=[28,28]", "source.channels=1"]
    source, target = load_datasets(compose_run(*run, *fix_of(message)))
    assert source.image_shape == target.image_shape == (1, 28, 28)


def test_grey_toward_rgb_suggests_channels_3(tmp_path):
    run = ["dataset@source=digits", "dataset@target=npz", f"target.path={rgb_npz(tmp_path / 'rgb.npz', size=16)}"]
    message = load_error(*run)
    assert fix_of(message) == ["source.resize=[16,16]", "source.channels=3"]
    source, target = load_datasets(compose_run(*run, *fix_of(message)))
    assert source.image_shape == target.image_shape == (3, 16, 16)


def test_a_config_without_resize_or_channels_gets_transforms_appended_to_its_own(tmp_path):
    """A user's dataset config (on hydra.searchpath) whose loader options are not keys: the fix
    appends transforms and keeps the config's own (rotate90, invert)."""
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "my_digits.yaml").write_text(
        "_target_: dsflow.data.digits\ntransform: [rotate90, invert]\nseed: ${seed}\nname: my_digits\n")
    run = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "dataset@source=my_digits", "dataset@target=npz",
           f"target.path={rgb_npz(tmp_path / 'rgb.npz', size=16)}"]
    message = load_error(*run)
    fix = fix_of(message)
    assert fix == ["source.transform=[rotate90, invert, {name: resize, size: [16, 16]}, {name: channels, channels: 3}]"]
    source, target = load_datasets(compose_run(*run, *fix))
    assert source.image_shape == (3, 16, 16)
    assert [t["name"] for t in source.meta["transforms"]] == ["rotate90", "invert", "resize", "channels"]


@pytest.mark.parametrize("run,expected", [
    (["dataset@source=gaussians", "source.dim=3", "dataset@target=moons"], ["source.dim=2"]),
    (["dataset@source=moons", "dataset@target=gaussians", "target.dim=5"], ["target.dim=2"]),
])
def test_vector_data_suggest_the_dim_key_of_the_side_that_has_one(run, expected):
    message = load_error(*run)
    assert fix_of(message) == expected
    source, target = load_datasets(compose_run(*run, *expected))
    assert source.d == target.d == 2


def test_images_toward_vectors_suggest_no_override():
    message = load_error("dataset@source=digits", "dataset@target=moons")
    assert "'digits' holds images and 'moons' flat features" in message and " add " not in message


def test_missing_files_hint_names_the_side_and_works(tmp_path, writers, monkeypatch):
    run = ["dataset@source=digits", "dataset@target=mnist", f"target.root={tmp_path / 'nothing'}",
           "source.resize=28"]
    with pytest.raises(Exception) as info:
        load_datasets(compose_run(*run))
    message = str(info.value)
    assert "`target.root=/path/to/data`" in message and "`target.download=true`" in message
    writers.idx_dataset(tmp_path / "files", "MNIST", "train", n=20)
    source, target = load_datasets(compose_run(*run, f"target.root={tmp_path / 'files'}"))
    assert target.n == 20
    # download=true: torchvision's downloader (no network in tests: it writes the files it would fetch)
    import dsflow.data.vision as vision

    def fake_download(cls_name, root, **kwargs):
        assert cls_name == "MNIST" and kwargs == {"train": True}
        return lambda: writers.idx_dataset(root, "MNIST", "train", n=10)

    monkeypatch.setattr(vision, "_torchvision_download", fake_download)
    source, target = load_datasets(compose_run(*run, "target.download=true"))
    assert target.n == 10


def test_image_folder_and_csv_configs_compose_and_load(tmp_path):
    from test_image_folder import write_folder
    from test_pixel_csv import kaggle

    write_folder(tmp_path / "scans", ["a", "b"], n=4, size=(8, 8), mode="L")
    kaggle(tmp_path / "train.csv", n=8, d=64, classes=2)
    source, target = load_datasets(compose_run("dataset@source=image_folder", f"source.path={tmp_path / 'scans'}",
                                               "source.n_per_class=3", "dataset@target=csv",
                                               f"target.path={tmp_path / 'train.csv'}"))
    assert source.n == 6 and source.image_shape == target.image_shape == (1, 8, 8) and target.n == 8
    assert source.names == ["a", "b"] and source.meta["dataset"] == "image_folder"


def _dsflow():
    beside = Path(sys.executable).parent / "dsflow"
    return str(beside) if beside.exists() else "dsflow"


def _scans_toward_mnist(tmp_path, writers):
    from test_image_folder import write_folder

    writers.idx_dataset(tmp_path / "data", "MNIST", "train", n=20)
    write_folder(tmp_path / "scans", ["0", "1"], n=3, size=(32, 32), mode="RGB")
    return ["dataset@source=image_folder", f"source.path={tmp_path / 'scans'}", "dataset@target=mnist",
            f"target.root={tmp_path / 'data'}", "steps=2", "logger=none", "progress=false", "plot=false",
            "optimizer.lr=10", "device=cpu", "threads=1"]


def _dsflow_run(args, cwd):
    return subprocess.run([_dsflow(), *args], cwd=cwd, capture_output=True, text=True, timeout=240)


def test_dsflow_command_flows_an_image_folder_toward_mnist(tmp_path, writers):
    """`dsflow` with image_folder and MNIST files in their real formats, with the fix the
    in-process tests above get for this pair (resize + channels)."""
    base = _scans_toward_mnist(tmp_path, writers)
    ok = _dsflow_run([*base, "source.resize=[28,28]", "source.channels=1", f"hydra.run.dir={tmp_path / 'ok'}"],
                     tmp_path)
    assert ok.returncode == 0, ok.stderr
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["source"]["n"] == 6, summary


@pytest.mark.slow
def test_dsflow_command_prints_the_fix_and_runs_with_it(tmp_path, writers):
    """The issue, as a new user meets it: the error line's fix, pasted back, runs."""
    base = _scans_toward_mnist(tmp_path, writers)
    failed = _dsflow_run([*base, f"hydra.run.dir={tmp_path / 'fail'}"], tmp_path)
    assert failed.returncode == 1, failed.stderr
    line = [ln for ln in failed.stderr.splitlines() if ln.startswith("dsflow: error:")][0]
    fix = fix_of(line)
    assert fix == ["source.resize=[28,28]", "source.channels=1"]
    ok = _dsflow_run([*base, *fix, f"hydra.run.dir={tmp_path / 'ok'}"], tmp_path)
    assert ok.returncode == 0, ok.stderr
