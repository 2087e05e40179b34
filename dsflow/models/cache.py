"""Saving, loading and caching classifiers; `get_oracle`, the ``_target_`` of ``oracle/``.

* ``checkpoint`` given: the file is loaded with ``torch.load(..., weights_only=True)``;
* ``checkpoint: null``: the classifier is trained on its own dataset (``train``, a dataset
  config, a dataset name or a `LabeledData`) with Adam (lr 1e-3, weight decay 1e-6 as in
  the paper's appendix C) and the weights are cached under a key that hashes everything
  that determines them (architecture, options, training options, dataset config), so a
  second call with the same config loads instead of retraining.

The returned classifier is frozen (no parameter requires grad, eval mode); fine-tune it
with `dsflow.models.training.fine_tune_classifier`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from dsflow.data.common import stratified_split, to_plain
from dsflow.data.container import LabeledData
from dsflow.models.networks import Oracle, make_oracle
from dsflow.models.training import fit_classifier, load_training_data, resolve_device

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "dsflow-oracle"
CHECKPOINT_VERSION = 1


def default_cache_dir() -> Path:
    """``$DSFLOW_CACHE/oracles`` when the variable is set, else ``~/.cache/dsflow/oracles``."""
    root = os.environ.get("DSFLOW_CACHE")
    if root:
        return Path(root).expanduser() / "oracles"
    return Path.home() / ".cache" / "dsflow" / "oracles"


def data_digest(data: LabeledData) -> str:
    """SHA-256 of a dataset's features and labels (for cache keys of in-memory data)."""
    h = hashlib.sha256()
    x, y = data.numpy()
    h.update(str((x.shape, str(x.dtype))).encode())
    h.update(x.tobytes())
    h.update(y.astype("int64").tobytes())
    return h.hexdigest()



# ---------------------------------------------------------------------------- checkpoints
def save_oracle(oracle: Oracle, path, meta: Mapping | None = None) -> Path:
    """Write weights, normalisation, architecture and ``meta`` (plain values) to ``path``.

    The file holds only tensors and plain Python values, so it loads with
    ``torch.load(path, weights_only=True)``.  The write is atomic (temporary file + rename).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "oracle": oracle.describe(),
        "state_dict": {k: v.detach().cpu() for k, v in oracle.state_dict().items()},
        "meta": json.loads(json.dumps(dict(meta or {}), default=str)),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_oracle(path, *, device=None, architecture: str | None = None, options: Mapping | None = None,
                input_dim: int | None = None, image_shape=None, classes=None) -> Oracle:
    """Load a frozen oracle from ``path`` with ``torch.load(..., weights_only=True)``.

    Files written by `save_oracle` describe themselves.  A bare ``state_dict`` of an
    `Oracle` (or of its network) also loads when ``architecture``, ``input_dim``,
    ``classes`` (and ``image_shape`` for convolutional networks) are given; a bare network
    state dict has no normalisation (identity).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"oracle checkpoint not found: {path} (set oracle.checkpoint to an existing file, "
            "or to null to train the oracle on oracle.train and cache it)"
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(payload, Mapping) and payload.get("format") == CHECKPOINT_FORMAT:
        desc = payload["oracle"]
        oracle = make_oracle(desc["architecture"], input_dim=desc["input_dim"], image_shape=desc["image_shape"],
                             classes=desc["classes"], seed=None, **desc.get("options", {}))
        oracle.load_state_dict(payload["state_dict"])
        oracle.checkpoint_meta = dict(payload.get("meta", {}))
    elif isinstance(payload, Mapping):
        if architecture is None or input_dim is None or classes is None:
            raise ValueError(
                f"{path} is a bare state dict; pass architecture, input_dim, classes (and image_shape for "
                "convolutional networks) to load it, or save checkpoints with dsflow.models.save_oracle"
            )
        oracle = make_oracle(architecture, input_dim=input_dim, image_shape=image_shape, classes=classes,
                             seed=None, **dict(options or {}))
        if any(k.startswith("network.") for k in payload):
            oracle.load_state_dict(payload)
        else:
            oracle.network.load_state_dict(payload)
        oracle.checkpoint_meta = {}
    else:
        raise ValueError(f"{path}: not an oracle checkpoint (got a {type(payload).__name__})")
    oracle.checkpoint_path = str(path)
    return oracle.to(resolve_device(device)).freeze()


# ---------------------------------------------------------------------------- config entry point
def oracle_cache_key(architecture: str, options: Mapping, training: Mapping, train) -> str:
    """Hex digest of everything that determines trained weights."""
    if isinstance(train, LabeledData):
        train_key: Any = {"data_sha256": data_digest(train)}
    else:
        train_key = to_plain(train)
    blob = json.dumps(
        {"architecture": str(architecture).lower(), "options": to_plain(options), "training": dict(training),
         "train": train_key, "format": CHECKPOINT_VERSION},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def get_oracle(
    architecture: str = "mlp",
    *,
    checkpoint: str | None = None,
    train=None,
    options: Mapping | None = None,
    epochs: int = 20,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    batch_size: int = 128,
    seed: int = 0,
    val_fraction: float = 0.1,
    cache_dir: str | None = None,
    use_cache: bool = True,
    device=None,
    eval_every: int | None = None,
    input_dim: int | None = None,
    image_shape=None,
    classes=None,
    name: str | None = None,
    correspondence="auto",
    matching: str = "otdd",
) -> Oracle:
    """A frozen oracle from a checkpoint, the cache, or by training (config ``oracle/``).

    Parameters
    ----------
    architecture, options:
        ``mlp`` / ``lenet5`` / ``resnet18_cifar`` and keyword options of the network.
    checkpoint:
        Path of a checkpoint to load (`load_oracle`); ``None`` trains on ``train``.
    train:
        The oracle's own training set (dataset config, name or `LabeledData`), see
        `load_training_data`.  ``val_fraction`` of it (stratified, seeded) is held out to
        report validation accuracy in ``oracle.checkpoint_meta``.
    epochs, lr, weight_decay, batch_size, seed:
        Adam training options (paper: 20 epochs, lr 1e-3, weight decay 1e-6).
    cache_dir, use_cache:
        Where trained weights are cached (default `default_cache_dir`); the file name is
        ``<architecture>-<hash>.pt`` with the hash of `oracle_cache_key`.
    eval_every:
        Stored on the oracle (``oracle.eval_every``) for the flow's `OracleMonitor`.
    input_dim, image_shape, classes:
        Only to load a *bare* state dict (see `load_oracle`).
    name, correspondence, matching:
        Config keys read by the re-purposing task (`dsflow.tasks.repurpose`); ignored here.
    """
    options = dict(to_plain(options) or {})
    if checkpoint is not None:
        oracle = load_oracle(checkpoint, device=device, architecture=architecture, options=options,
                             input_dim=input_dim, image_shape=image_shape, classes=classes)
        oracle.eval_every = eval_every
        return oracle
    training = {"epochs": int(epochs), "lr": float(lr), "weight_decay": float(weight_decay),
                "batch_size": int(batch_size), "seed": int(seed), "val_fraction": float(val_fraction)}
    if train is None:
        raise ValueError("oracle: checkpoint is null, so oracle.train must be a dataset config to train it on")
    key = oracle_cache_key(architecture, options, training, train)
    cache_path = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    cache_file = cache_path / f"{str(architecture).lower()}-{key[:20]}.pt"
    if use_cache and cache_file.is_file():
        log.info("oracle: loading cached weights %s", cache_file)
        oracle = load_oracle(cache_file, device=device)
        oracle.cache_hit = True
        oracle.eval_every = eval_every
        return oracle

    data = load_training_data(train)
    if val_fraction > 0:
        tr_idx, val_idx = stratified_split(data.y, val_fraction, seed)
        fit_data, val_data = data.subset(tr_idx), data.subset(val_idx)
    else:
        fit_data, val_data = data, None
    oracle = make_oracle(architecture, input_dim=data.d, image_shape=data.image_shape, classes=data.classes,
                         seed=seed, **options)
    t0 = time.perf_counter()
    history = fit_classifier(oracle, fit_data, epochs=epochs, lr=lr, weight_decay=weight_decay,
                             batch_size=batch_size, seed=seed, device=device, val_data=val_data)
    meta = {
        "cache_key": key,
        "training": training,
        "history": history,
        "train_seconds": time.perf_counter() - t0,
        "train_samples": fit_data.n,
        "val_samples": 0 if val_data is None else val_data.n,
        "val_accuracy": (history.get("val_accuracy") or [None])[-1],
        "dataset": data.name,
    }
    if use_cache:
        save_oracle(oracle, cache_file, meta)
        log.info("oracle: trained in %.1fs, cached at %s", meta["train_seconds"], cache_file)
    oracle.checkpoint_meta = meta
    oracle.checkpoint_path = str(cache_file) if use_cache else None
    oracle.cache_hit = False
    oracle.eval_every = eval_every
    return oracle.to(resolve_device(device)).freeze()
