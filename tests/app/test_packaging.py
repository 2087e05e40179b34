"""The wheel carries every module and config; its installed command finds the configs."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build a wheel from a copy of the sources (never writes build/ into the work tree)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("dsflow", "configs"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", str(src), "-w", str(out)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = out.glob("dsflow-*.whl")
    return whl


def test_wheel_contains_every_module_and_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "dsflow").rglob("*.py")
               if "__pycache__" not in p.parts}
    configs = {"dsflow/configs/" + p.relative_to(REPO / "configs").as_posix()
               for p in (REPO / "configs").rglob("*.yaml")}
    assert "dsflow/configs/config.yaml" in configs and "dsflow/configs/distance.yaml" in configs
    missing = sorted((modules | configs) - names)
    assert not missing, f"not in the wheel (add the package to pyproject.toml): {missing}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "dsflow = dsflow.cli:main" in text and "dsflow-distance = dsflow.cli:distance_main" in text


def test_installed_wheel_command_finds_configs_from_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                           "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import dsflow.configs; print(dsflow.configs.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr  # not the work tree
    proc = subprocess.run([str(site / "bin" / "dsflow"), "--cfg", "job", "steps=7"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "steps: 7" in proc.stdout and "source:" in proc.stdout and "logger:" in proc.stdout
    assert not (elsewhere / "outputs").exists()  # --cfg only prints
