"""Frozen-classifier evaluation, class correspondence and pseudo-labels: a library, no orchestration.

The networks, their training and cache and the push-forward maps live in `dsflow.models`
(any task trains classifiers); they are re-exported here so that ``dsflow.oracle.get_oracle``
and the other public names keep working.  The re-purposing protocol that uses all of this
is the task `dsflow.tasks.repurpose`.  Everything is imported lazily (torch on first use),
so ``import dsflow.oracle`` stays cheap.  See ``docs/oracle.md``.
"""

from __future__ import annotations

_LAZY = {
    # networks
    "Oracle": "dsflow.models.networks",
    "MLP": "dsflow.models.networks",
    "LeNet5": "dsflow.models.networks",
    "ResNet18Cifar": "dsflow.models.networks",
    "make_oracle": "dsflow.models.networks",
    "ARCHITECTURES": "dsflow.models.networks",
    # training / checkpoints
    "get_oracle": "dsflow.models.cache",
    "load_oracle": "dsflow.models.cache",
    "save_oracle": "dsflow.models.cache",
    "fit_classifier": "dsflow.models.training",
    "fine_tune_classifier": "dsflow.models.training",
    "load_training_data": "dsflow.models.training",
    "stratified_split": "dsflow.models.training",  # defined in dsflow.data.common
    "default_cache_dir": "dsflow.models.cache",
    "oracle_cache_key": "dsflow.models.cache",
    # evaluation
    "evaluate": "dsflow.oracle.evaluation",
    "accuracy": "dsflow.oracle.evaluation",
    "predict": "dsflow.oracle.evaluation",
    "confusion_matrix": "dsflow.oracle.evaluation",
    "Evaluation": "dsflow.oracle.evaluation",
    "OracleMonitor": "dsflow.oracle.evaluation",
    # class correspondence
    "ClassCorrespondence": "dsflow.oracle.correspondence",
    "class_correspondence": "dsflow.oracle.correspondence",
    "correspondence_from_data": "dsflow.oracle.correspondence",
    "otdd_label_distances": "dsflow.oracle.correspondence",
    "ComposedClassifier": "dsflow.oracle.correspondence",
    # pseudo-labels
    "kmeans_pseudo_labels": "dsflow.oracle.pseudo_labels",
    "align_clusters": "dsflow.oracle.pseudo_labels",
    "label_costs": "dsflow.oracle.pseudo_labels",
    "gaussian_w2_costs": "dsflow.oracle.pseudo_labels",
    "idealized_cluster_accuracy": "dsflow.oracle.pseudo_labels",
    "pseudo_label": "dsflow.oracle.pseudo_labels",
    "assign": "dsflow.oracle.pseudo_labels",
    # push-forward
    "fit_pushforward": "dsflow.models.pushforward",
    "PushForward": "dsflow.models.pushforward",
    "ConvAutoencoder": "dsflow.models.pushforward",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dsflow.oracle' has no attribute {name!r}")


def __dir__():
    return __all__
