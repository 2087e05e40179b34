"""What the transfer and distillation tasks share: a classifier trained on a dataset and scored
on a test split, repeated over seeds, and the mean ± std of those scores.

Both protocols judge a dataset by how well a classifier trained *on it* does on real test
data (transfer: k-shot target plus flowed source; distillation: the synthetic set alone), so
the classifier is a config of its own (``task.classifier``):

    {architecture: logreg | mlp | lenet5 | convnet | resnet18_cifar, options: {...},
     epochs: 20, lr: 1e-3, weight_decay: 1e-6, batch_size: 128, min_updates: 0}

``logreg`` is the ``mlp`` with no hidden layer (one linear layer + softmax, trained with
Adam and cross-entropy like every other network).  ``min_updates`` raises the epochs of a
training on a small set so that it makes at least that many optimizer updates: 20 epochs of
a 50-image k-shot set are 20 updates, and a comparison in which the larger (augmented) sets
also train longer would credit the data with what the optimizer did.  The test split is a variant of a run's
dataset config (`dataset_variant`): the same loader and options, with ``split`` (or
``rows``) changed and the per-class draw removed, so ``dataset@target=usps`` scores on the
USPS test split without another key.

Nothing here imports torch at module import: ``dsflow-report`` reads the tables' helpers
(`mean_std`, `format_mean_std`) without it.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Any, Iterable, Mapping

#: classifier architectures a task may train (``logreg`` = ``mlp`` without hidden layers)
CLASSIFIERS = ("logreg", "mlp", "lenet5", "convnet", "resnet18_cifar")
CLASSIFIER_KEYS = ("architecture", "options", "epochs", "lr", "weight_decay", "batch_size", "min_updates")
#: appendix C of Alvarez-Melis & Fusi: 20 epochs, Adam 1e-3, weight decay 1e-6
DEFAULT_CLASSIFIER = {"architecture": "lenet5", "options": {}, "epochs": 20, "lr": 1e-3, "weight_decay": 1e-6,
                      "batch_size": 128, "min_updates": 0}


def classifier_spec(options: Mapping | None, *, what: str = "task.classifier", base: Mapping | None = None) -> dict:
    """A validated classifier spec: ``base`` (default `DEFAULT_CLASSIFIER`) updated by ``options``.

    Errors name the key (``task.classifier.epochs``) and the fix."""
    spec = {**DEFAULT_CLASSIFIER, **dict(base or {})}
    options = dict(options or {})
    unknown = sorted(set(options) - set(CLASSIFIER_KEYS))
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; valid keys: {', '.join(CLASSIFIER_KEYS)}")
    spec.update(options)
    arch = str(spec["architecture"]).lower()
    if arch not in CLASSIFIERS:
        raise ValueError(f"{what}.architecture={spec['architecture']!r}; use one of {', '.join(CLASSIFIERS)}")
    spec["architecture"] = arch
    for key, kind, low in (("epochs", int, 0), ("batch_size", int, 1), ("min_updates", int, 0), ("lr", float, None),
                           ("weight_decay", float, 0)):
        value = spec[key]
        try:
            number = kind(value)
            if isinstance(value, bool) or (kind is int and number != float(value)):
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"{what}.{key}={value!r} must be {'an integer' if kind is int else 'a number'}") from None
        if (low is None and not number > 0) or (low is not None and number < low) or not math.isfinite(number):
            bound = "> 0" if low is None else f">= {low}"
            raise ValueError(f"{what}.{key}={value!r} must be {bound}")
        spec[key] = number
    spec["options"] = dict(spec.get("options") or {})
    return spec


def build_classifier(spec: Mapping, data, classes, seed: int):
    """An untrained `dsflow.models.Oracle` for ``data``'s features (weights seeded)."""
    from dsflow.models import make_oracle

    arch, options = spec["architecture"], dict(spec.get("options") or {})
    if arch == "logreg":
        arch, options = "mlp", {**options, "hidden": []}
    return make_oracle(arch, input_dim=data.d, image_shape=data.image_shape, classes=classes, seed=int(seed),
                       **options)


def epochs_for(spec: Mapping, n: int) -> int:
    """``spec['epochs']``, raised so that ``n`` samples make at least ``spec['min_updates']`` updates."""
    per_epoch = max(1, math.ceil(int(n) / int(spec["batch_size"])))
    return max(int(spec["epochs"]), math.ceil(int(spec.get("min_updates") or 0) / per_epoch))


def train_classifier(spec: Mapping, data, classes, *, seed: int, device=None):
    """A classifier of ``spec`` trained on ``data`` (Adam + cross-entropy; `dsflow.models.fit_classifier`)."""
    from dsflow.models import fit_classifier

    model = build_classifier(spec, data, classes, seed)
    with quiet_training():
        fit_classifier(model, data, epochs=epochs_for(spec, data.n), lr=spec["lr"], weight_decay=spec["weight_decay"],
                       batch_size=spec["batch_size"], seed=int(seed), device=device)
    return model


@contextmanager
def quiet_training():
    """Per-epoch training lines at DEBUG level only: a task trains dozens of classifiers, and
    their epochs would bury the run's log (the task logs one line per setting instead)."""
    logger = logging.getLogger("dsflow.models.training")
    before = logger.level
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


def score(model, test) -> float:
    """Accuracy of ``model`` on the ``test`` LabeledData."""
    from dsflow.models.evaluation import accuracy

    return accuracy(model, test.x.detach(), test.y.detach())


def train_and_score(spec: Mapping, data, test, *, seed: int, device=None, classes=None) -> float:
    """Train a classifier of ``spec`` on ``data`` and return its accuracy on ``test``."""
    classes = test.classes if classes is None else classes
    return score(train_classifier(spec, data, classes, seed=seed, device=device), test)


def run_seeds(cfg_seed: int, runs: int) -> list[int]:
    """The classifier seeds of one run: ``1000 * seed + r`` for ``r < runs``, so two runs with
    different ``seed`` never share a classifier initialisation and one seed repeats them."""
    return [1000 * int(cfg_seed) + r for r in range(int(runs))]


def concat(parts: Iterable, name: str):
    """One LabeledData from several with the same features (labels as given)."""
    import torch

    parts = [p for p in parts if p is not None and p.n]
    first = parts[0]
    x = torch.cat([p.x.detach().to(first.x.device, first.x.dtype) for p in parts])
    y = torch.cat([p.y.detach().to(first.y.device) for p in parts])
    return first.with_(x=x, y=y, name=name, meta={})


# ---------------------------------------------------------------------------- data variants
#: selection keys a test split drops from the config it is derived from (the k-shot draw)
SELECTION_KEYS = ("n_per_class", "max_samples")


def dataset_variant(node, overrides: Mapping | None, *, keep_selection: bool = False):
    """Instantiate the dataset config ``node`` (a run's ``source`` or ``target``) with
    ``overrides`` (e.g. ``{split: test}``), the per-class draw removed unless kept."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    base = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    if not keep_selection:
        for key in SELECTION_KEYS:
            if key in base:
                base[key] = None
    # a null for an option the loader lacks is no change (task configs list rows: null for all loaders)
    overrides = {k: v for k, v in dict(overrides or {}).items() if k in base or v is not None}
    unknown = sorted(k for k in overrides if k not in base)
    if unknown:
        raise ValueError(f"test split: {unknown} are not options of the dataset {base.get('_target_')}; "
                         f"its options are {', '.join(k for k in base if not k.startswith('_'))}")
    base.update(overrides)
    return instantiate(base, _convert_="all")


def drop_overlap(data, other):
    """``data`` without the samples ``other`` also holds (same loader file and split, by the
    loaders' ``meta['indices']``); returns ``(data, number removed)``.  A k-shot target drawn
    from a split must not be scored on itself."""
    import torch

    a, b = data.meta or {}, other.meta or {}
    same_file = a.get("dataset") == b.get("dataset") and a.get("split") == b.get("split") \
        and a.get("root") == b.get("root")
    if not (same_file and a.get("indices") is not None and b.get("indices") is not None):
        return data, 0
    taken = set(int(i) for i in b["indices"])
    keep = [i for i, j in enumerate(a["indices"]) if int(j) not in taken]
    if len(keep) == data.n:
        return data, 0
    if not keep:
        raise ValueError(f"the test split {data.name!r} holds only samples of the training target; "
                         "score on another split (task.test.split=test) or rows (task.test.rows=[START, STOP])")
    kept = data.subset(torch.as_tensor(keep, dtype=torch.long, device=data.y.device))
    kept.meta = {**a, "indices": [a["indices"][i] for i in keep]}
    return kept, data.n - len(keep)


# ---------------------------------------------------------------------------- aggregation
def mean_std(values: Iterable) -> tuple[float, float, int] | None:
    """``(mean, sample std (ddof=1; 0 for one value), count)`` of the finite numbers, or None."""
    vals = []
    for v in values or ():
        if isinstance(v, bool) or v is None:
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            vals.append(f)
    if not vals:
        return None
    m = sum(vals) / len(vals)
    s = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, s, len(vals)


def format_mean_std(values: Iterable, *, percent: bool = True, digits: int = 1) -> str:
    """``"97.1 ± 0.3"`` (percent by default), ``""`` for no value."""
    stats = mean_std(values)
    if stats is None:
        return ""
    m, s, _ = stats
    k = 100.0 if percent else 1.0
    return f"{k * m:.{digits}f} ± {k * s:.{digits}f}"


def number(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def family_of(cfg_or_summary: Any) -> str:
    """The flow family of a run: the ``family`` key a `configs/family` preset sets (``otdd``,
    ``wow``), else its functional's class name (``otdd``, ``mmd_sw``, ...)."""
    if isinstance(cfg_or_summary, Mapping) and "flow_family" in cfg_or_summary:
        return str(cfg_or_summary["flow_family"])
    chosen = cfg_or_summary.get("family") if hasattr(cfg_or_summary, "get") else None
    if chosen:
        return str(chosen)
    node = cfg_or_summary.get("functional") if hasattr(cfg_or_summary, "get") else None
    target = str((node.get("_target_") if hasattr(node, "get") else None) or "")
    name = target.rsplit(".", 1)[-1] if target else "weighted_sum"
    known = {"OTDD": "otdd", "MMDSW": "mmd_sw", "MMD_SW": "mmd_sw", "MMDSWFunctional": "mmd_sw"}
    return known.get(name, name.lower())
