"""Training, saving, loading and caching frozen oracles.

`get_oracle` is the ``_target_`` of the ``oracle/`` config group:

* ``checkpoint`` given: the file is loaded with ``torch.load(..., weights_only=True)``;
* ``checkpoint: null``: the oracle is trained on its own dataset (``train``, a dataset
  config, a dataset name or a `LabeledData`) with Adam (lr 1e-3, weight decay 1e-6 as in
  the paper's appendix C) and the weights are cached under a key that hashes everything
  that determines them (architecture, options, training options, dataset config), so a
  second call with the same config loads instead of retraining.

The returned oracle is frozen (no parameter requires grad, eval mode).
"""

from __future__ import annotations

from contextlib import contextmanager

import hashlib
import inspect
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from dsflow.data.common import stratified_split, to_plain  # noqa: F401 (stratified_split: re-exported)
from dsflow.data.container import LabeledData
from dsflow.oracle.networks import Oracle, make_oracle

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "dsflow-oracle"
CHECKPOINT_VERSION = 1
#: Fraction of a split-less dataset (e.g. 8x8 digits) held out as its deterministic
#: ``test`` split when an oracle config asks for ``train.split`` and the loader has none.
INHOUSE_TEST_FRACTION = 0.25
INHOUSE_SPLIT_SEED = 0


def default_cache_dir() -> Path:
    """``$DSFLOW_CACHE/oracles`` when the variable is set, else ``~/.cache/dsflow/oracles``."""
    root = os.environ.get("DSFLOW_CACHE")
    if root:
        return Path(root).expanduser() / "oracles"
    return Path.home() / ".cache" / "dsflow" / "oracles"


def resolve_device(device=None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---------------------------------------------------------------------------- datasets


def load_training_data(train) -> LabeledData:
    """The oracle's training set from a `LabeledData`, a dataset config or a dataset name.

    A config is a mapping with ``_target_`` (instantiated with Hydra) or with ``name``
    (looked up by `dsflow.data.load_dataset`).  A ``split`` key (``train``/``test``/
    ``all``) is passed to loaders that accept it; for loaders without a split (8x8
    digits) the split is done here: a deterministic stratified split holding out
    `INHOUSE_TEST_FRACTION` of every class (seed `INHOUSE_SPLIT_SEED`).
    """
    if isinstance(train, LabeledData):
        return train
    if train is None:
        raise ValueError("oracle: checkpoint is null, so a training dataset is needed: set oracle.train to a dataset config")
    if isinstance(train, str):
        from dsflow.data import load_dataset  # provided by the data module

        return load_dataset(train)
    cfg = to_plain(train)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"oracle.train must be a dataset config, a dataset name or LabeledData, got {type(train).__name__}")
    cfg = dict(cfg)
    split = cfg.pop("split", None)
    if "_target_" in cfg:
        from hydra.utils import get_method, instantiate

        loader = get_method(cfg["_target_"])
        call = lambda **extra: instantiate({**cfg, **extra}, _convert_="all")  # noqa: E731
    elif "name" in cfg:
        from dsflow.data import load_dataset

        name = cfg.pop("name")
        loader = None
        call = lambda **extra: load_dataset(name, **{**cfg, **extra})  # noqa: E731
    else:
        raise ValueError(f"oracle.train config needs a '_target_' (loader) or a 'name'; got keys {sorted(cfg)}")
    if split is None:
        return call()
    split = str(split)
    if loader is not None and _accepts(loader, "split"):
        return call(split=split)
    if split == "all":
        return call()
    if split not in ("train", "test"):
        raise ValueError(f"oracle.train.split must be 'train', 'test' or 'all', got {split!r}")
    data = call()
    train_idx, test_idx = stratified_split(data.y, INHOUSE_TEST_FRACTION, INHOUSE_SPLIT_SEED)
    part = data.subset(train_idx if split == "train" else test_idx)
    part.meta = {**part.meta, "split": split, "split_by": "dsflow.oracle (stratified, deterministic)"}
    return part


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def data_digest(data: LabeledData) -> str:
    """SHA-256 of a dataset's features and labels (for cache keys of in-memory data)."""
    h = hashlib.sha256()
    x, y = data.numpy()
    h.update(str((x.shape, str(x.dtype))).encode())
    h.update(x.tobytes())
    h.update(y.astype("int64").tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- training
#: CPU training of networks with fewer parameters than this uses one intra-op thread
SMALL_MODEL_PARAMETERS = 2_000_000


@contextmanager
def small_model_threads(model, device):
    """One torch intra-op thread while training a small ``model`` on the CPU.

    Tiny matrix products gain nothing from threads, and on a busy 2-core machine the
    threads' contention made training 8-25x slower (measured: a 64-128-64 MLP, 30 epochs
    on 800 samples, 1.6-5.0 s with 2 threads vs 0.2 s with 1).  The setting is restored after.
    """
    device = torch.device(device)
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS
    if device.type != "cpu" or not small:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_classifier(
    oracle: Oracle,
    data: LabeledData,
    *,
    epochs: int = 20,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    batch_size: int = 128,
    seed: int = 0,
    device=None,
    val_data: LabeledData | None = None,
    fit_normalization: bool = True,
) -> dict:
    """Train ``oracle`` in place with Adam + cross-entropy; returns the history.

    The history holds per-epoch ``loss`` and ``train_accuracy`` (running, over the
    epoch's batches) and ``val_accuracy`` when ``val_data`` is given.
    """
    if epochs < 0 or batch_size <= 0:
        raise ValueError(f"epochs must be >= 0 and batch_size > 0, got epochs={epochs}, batch_size={batch_size}")
    if oracle.frozen:
        raise ValueError("fit_classifier: the oracle is frozen; train a fresh one (make_oracle) instead")
    device = resolve_device(device)
    oracle.to(device)
    x = data.x.to(device=device, dtype=torch.float32)
    target = label_indices(oracle.classes.to(device), data.y.to(device), what=data.name)
    if fit_normalization:
        oracle.set_normalization(x)
    opt = torch.optim.Adam(oracle.parameters(), lr=float(lr), weight_decay=float(weight_decay))
    gen = torch.Generator().manual_seed(int(seed))
    history: dict[str, list] = {"loss": [], "train_accuracy": []}
    if val_data is not None:
        history["val_accuracy"] = []
    with small_model_threads(oracle, device):
        _train_epochs(oracle, x, target, opt, gen, history, epochs=int(epochs), batch_size=int(batch_size),
                      device=device, val_data=val_data)
    oracle.eval()
    return history


def _train_epochs(oracle, x, target, opt, gen, history, *, epochs, batch_size, device, val_data) -> None:
    """The epochs of `fit_classifier`: Adam + cross-entropy, history appended per epoch."""
    n = x.shape[0]
    for epoch in range(int(epochs)):
        oracle.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for start in range(0, n, int(batch_size)):
            idx = perm[start : start + int(batch_size)]
            if idx.numel() < 2 and n > 1:
                continue  # BatchNorm cannot train on a single sample
            logits = oracle(x[idx])
            loss = torch.nn.functional.cross_entropy(logits, target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.detach() * idx.numel()
            correct += (logits.detach().argmax(1) == target[idx]).sum()
        history["loss"].append(float(total_loss) / n)
        history["train_accuracy"].append(float(correct) / n)
        if val_data is not None:
            from dsflow.oracle.evaluation import accuracy

            oracle.eval()
            history["val_accuracy"].append(accuracy(oracle, val_data))
        log.info("oracle epoch %d/%d: %s", epoch + 1, epochs, {k: v[-1] for k, v in history.items()})


def label_indices(classes, y, what: str = "data"):
    """Column index in ``classes`` of every label in ``y``; raises on labels it lacks."""
    from dsflow.ot.class_stats import class_index

    missing = ~torch.isin(y, classes.to(y.device))
    if bool(missing.any()):
        raise ValueError(
            f"{what}: labels {torch.unique(y[missing]).tolist()[:10]} are not among the oracle's classes "
            f"{classes.tolist()}; relabel the data or add a class-correspondence layer "
            "(dsflow.oracle.class_correspondence)"
        )
    return class_index(y, classes)[1]


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
                "convolutional networks) to load it, or save checkpoints with dsflow.oracle.save_oracle"
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
    stage: str | None = None,
    correspondence="auto",
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
    name, stage, correspondence:
        Config keys read by the app's oracle stage (`dsflow.oracle.stage`); ignored here.
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
