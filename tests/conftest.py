"""Test-wide settings: no network, no files outside tmp dirs, headless plots."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """wandb offline with every directory in a temp dir; matplotlib headless.

    Session-wide so subprocesses started by tests inherit it too.
    """
    base = tmp_path_factory.mktemp("env")
    saved = dict(os.environ)
    os.environ.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(base / "wandb"),
        WANDB_CACHE_DIR=str(base / "wandb-cache"),
        WANDB_DATA_DIR=str(base / "wandb-data"),
        WANDB_CONFIG_DIR=str(base / "wandb-config"),
        MPLBACKEND="Agg",
        MPLCONFIGDIR=str(base / "mpl"),
    )
    os.environ.pop("HYDRA_FULL_ERROR", None)
    yield
    os.environ.clear()
    os.environ.update(saved)
