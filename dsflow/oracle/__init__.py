"""Frozen-classifier oracles, evaluation, class correspondence, pseudo-labels, push-forward maps.

Everything is imported lazily (``dsflow.oracle.get_oracle`` imports torch on first use),
so ``import dsflow.oracle`` stays cheap.  See ``docs/oracle.md``.
"""

from __future__ import annotations

_LAZY = {
    # networks
    "Oracle": "networks",
    "MLP": "networks",
    "LeNet5": "networks",
    "ResNet18Cifar": "networks",
    "make_oracle": "networks",
    "ARCHITECTURES": "networks",
    # training / checkpoints
    "get_oracle": "training",
    "load_oracle": "training",
    "save_oracle": "training",
    "fit_classifier": "training",
    "load_training_data": "training",
    "stratified_split": "training",  # defined in dsflow.data.common
    "default_cache_dir": "training",
    "oracle_cache_key": "training",
    # evaluation
    "evaluate": "evaluation",
    "accuracy": "evaluation",
    "predict": "evaluation",
    "confusion_matrix": "evaluation",
    "Evaluation": "evaluation",
    "OracleMonitor": "evaluation",
    # class correspondence
    "ClassCorrespondence": "correspondence",
    "class_correspondence": "correspondence",
    "correspondence_from_data": "correspondence",
    "otdd_label_distances": "correspondence",
    "ComposedClassifier": "correspondence",
    # pseudo-labels
    "kmeans_pseudo_labels": "pseudo_labels",
    "align_clusters": "pseudo_labels",
    "label_costs": "pseudo_labels",
    "gaussian_w2_costs": "pseudo_labels",
    "idealized_cluster_accuracy": "pseudo_labels",
    "pseudo_label": "pseudo_labels",
    "assign": "pseudo_labels",
    # push-forward
    "fit_pushforward": "pushforward",
    "PushForward": "pushforward",
    "ConvAutoencoder": "pushforward",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"dsflow.oracle.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dsflow.oracle' has no attribute {name!r}")


def __dir__():
    return __all__
