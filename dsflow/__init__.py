"""dsflow: transform labeled datasets by gradient flows in probability space.

Heavy dependencies (torch, POT, geomloss, scikit-learn, wandb) are imported lazily so that
``import dsflow`` and ``dsflow --help`` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "LabeledData": ("dsflow.data.container", "LabeledData"),
    "ParticleState": ("dsflow.state", "ParticleState"),
    "otdd": ("dsflow.ot", "otdd"),
    "OTDDResult": ("dsflow.ot", "OTDDResult"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dsflow' has no attribute {name!r}")


def __dir__():
    return __all__
