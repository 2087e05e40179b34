"""Training and fine-tuning classifiers (`Oracle` networks) on a `LabeledData`.

Any task may train, evaluate or fine-tune a classifier: the re-purposing task trains its
frozen oracle here (through `dsflow.models.cache.get_oracle`), transfer learning trains on
flowed data, distillation on synthetic sets, and the fine-tuning baseline continues the
training of a pretrained (frozen) classifier with `fine_tune_classifier`.  Weights, caches
and checkpoints live in `dsflow.models.cache`.
"""

from __future__ import annotations

import contextvars
import copy
import inspect
import logging
import sys
from contextlib import contextmanager
from typing import Mapping

import torch

from dsflow.data.common import stratified_split, to_plain  # noqa: F401 (stratified_split: re-exported)
from dsflow.data.container import LabeledData
from dsflow.models.networks import Oracle

log = logging.getLogger(__name__)

#: Fraction of a split-less dataset (e.g. 8x8 digits) held out as its deterministic
#: ``test`` split when an oracle config asks for ``train.split`` and the loader has none.
INHOUSE_TEST_FRACTION = 0.25
INHOUSE_SPLIT_SEED = 0


def resolve_device(device=None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---------------------------------------------------------------------------- progress bars
#: What ``progress=None`` means in `fit_classifier` / `fit_pushforward`: a task sets it from the
#: run's ``progress`` key (`show_progress`) around code that trains, e.g. an oracle built by
#: ``instantiate(cfg.oracle)``, whose config cannot carry the run's setting.
_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("dsflow_models_progress", default=True)


@contextmanager
def show_progress(enabled: bool):
    """Within the block, training without an explicit ``progress`` shows a bar iff ``enabled``."""
    token = _PROGRESS.set(bool(enabled))
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def progress_bar(total: int, desc: str, progress: bool | None = None):
    """A tqdm bar on stderr as the flow loop has one (`dsflow.flow.engine`): off with
    ``progress=False`` (``None``: the `show_progress` setting) and silent when stderr is not a
    terminal (logs, CI, sweeps), so it never fills a log file.  Returns ``None`` when off."""
    enabled = _PROGRESS.get() if progress is None else bool(progress)
    if not enabled or total <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=int(total), desc=desc, disable=not sys.stderr.isatty(), dynamic_ncols=True, leave=False)


# ---------------------------------------------------------------------------- datasets


def load_training_data(train, config_key: str = "oracle.train") -> LabeledData:
    """The oracle's training set from a `LabeledData`, a dataset config or a dataset name.

    A config is a mapping with ``_target_`` (instantiated with Hydra) or with ``name``
    (looked up by `dsflow.data.load_dataset`).  A ``split`` key (``train``/``test``/
    ``all``) is passed to loaders that accept it; for loaders without a split (8x8
    digits) the split is done here: a deterministic stratified split holding out
    `INHOUSE_TEST_FRACTION` of every class (seed `INHOUSE_SPLIT_SEED`).  A loader's hints
    name its options under ``config_key`` (e.g. ``oracle.train.root=...``).
    """
    from dsflow.data.common import config_prefix

    if isinstance(train, LabeledData):
        return train
    with config_prefix(config_key):
        return _load_training_data(train)


def _load_training_data(train) -> LabeledData:
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
    part.meta = {**part.meta, "split": split, "split_by": "dsflow.models (stratified, deterministic)"}
    return part


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


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
    progress: bool | None = None,
) -> dict:
    """Train ``oracle`` in place with Adam + cross-entropy; returns the history.

    The history holds per-epoch ``loss`` and ``train_accuracy`` (running, over the
    epoch's batches) and ``val_accuracy`` when ``val_data`` is given.  ``progress``: a bar
    over the epochs on a terminal (`progress_bar`; ``None``: the `show_progress` setting).
    """
    if epochs < 0 or batch_size <= 0:
        raise ValueError(f"epochs must be >= 0 and batch_size > 0, got epochs={epochs}, batch_size={batch_size}")
    if oracle.frozen:
        raise ValueError("fit_classifier: the classifier is frozen (a pretrained oracle); fine-tune it with "
                         "dsflow.models.fine_tune_classifier, or train a fresh one (make_oracle)")
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
                      device=device, val_data=val_data, progress=progress)
    oracle.eval()
    return history


def fine_tune_classifier(
    classifier: Oracle,
    data: LabeledData,
    *,
    epochs: int = 5,
    lr: float = 1e-4,
    weight_decay: float = 1e-6,
    batch_size: int = 128,
    seed: int = 0,
    device=None,
    val_data: LabeledData | None = None,
    copy_weights: bool = True,
    refit_normalization: bool = False,
    progress: bool | None = None,
) -> tuple[Oracle, dict]:
    """Continue training a (frozen, pretrained) classifier on ``data``: ``(model, history)``.

    The fine-tuning baseline of transfer learning starts from the oracle's weights, which
    `fit_classifier` refuses (a frozen oracle must not change under an evaluation).  So this
    works on a copy by default (``copy_weights``: the caller's oracle stays frozen and
    unchanged), unfreezes it, trains with Adam (a smaller default ``lr`` than training from
    scratch, to stay near the pretrained weights) and returns it frozen again.  The input
    normalisation learnt on the original training set is kept unless ``refit_normalization``:
    refitting it on the new data would move every input the pretrained weights see.
    """
    model = copy.deepcopy(classifier) if copy_weights else classifier
    model.unfreeze()
    history = fit_classifier(model, data, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                             seed=seed, device=device, val_data=val_data, fit_normalization=refit_normalization,
                             progress=progress)
    model.freeze()
    return model, history


def _train_epochs(oracle, x, target, opt, gen, history, *, epochs, batch_size, device, val_data,
                  progress=None) -> None:
    """The epochs of `fit_classifier`: Adam + cross-entropy, history appended per epoch."""
    n = x.shape[0]
    bar = progress_bar(int(epochs), "oracle training", progress)
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
            from dsflow.models.evaluation import accuracy

            oracle.eval()
            history["val_accuracy"].append(accuracy(oracle, val_data))
        log.info("oracle epoch %d/%d: %s", epoch + 1, epochs, {k: v[-1] for k, v in history.items()})
        if bar is not None:
            bar.set_postfix({k.replace("_accuracy", "_acc"): f"{v[-1]:.3g}" for k, v in history.items()}, refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()


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


