"""Classifier networks, their training and fine-tuning, checkpoints and the weight cache,
and the push-forward maps: models any task can train or evaluate.

Here rather than in `dsflow.oracle` because re-purposing is not their only user: transfer
learning trains LeNet-5 on flowed data, distillation trains on synthetic sets, and the
fine-tuning baseline fine-tunes a pretrained classifier.  `dsflow.oracle` keeps the
frozen-classifier evaluation and class correspondence.

Names are imported lazily (torch on first use), so ``import dsflow.models`` stays cheap.
"""

from __future__ import annotations

_LAZY = {
    # networks
    "Oracle": "networks",
    "MLP": "networks",
    "LeNet5": "networks",
    "ResNet18Cifar": "networks",
    "ConvNet": "networks",
    "make_oracle": "networks",
    "build_network": "networks",
    "batched_apply": "networks",
    "ARCHITECTURES": "networks",
    # predictions
    "predict": "evaluation",
    "accuracy": "evaluation",
    # training
    "fit_classifier": "training",
    "fine_tune_classifier": "training",
    "load_training_data": "training",
    "label_indices": "training",
    "small_model_threads": "training",
    "stratified_split": "training",  # defined in dsflow.data.common
    # checkpoints and cache
    "get_oracle": "cache",
    "load_oracle": "cache",
    "save_oracle": "cache",
    "default_cache_dir": "cache",
    "oracle_cache_key": "cache",
    # push-forward maps
    "fit_pushforward": "pushforward",
    "PushForward": "pushforward",
    "ConvAutoencoder": "pushforward",
    "check_pushforward_options": "pushforward",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"dsflow.models.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dsflow.models' has no attribute {name!r}")


def __dir__():
    return __all__
