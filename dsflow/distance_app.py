"""``dsflow-distance``: the OTDD between two labeled datasets, with class-level views.

Writes to the run directory: ``config.yaml``, ``summary.json`` (distance, label-to-label
distances, class-to-class transport mass, timings), ``distance.npz`` (the same matrices)
and, with ``plot=true``, ``label_distances.png`` and ``class_coupling.png``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger("dsflow")

#: config keys passed to `dsflow.otdd` as keyword arguments (plus everything in ``options``)
OTDD_KEYS = ("inner", "outer", "p", "entreg", "feature_weight", "label_weight", "allow_singletons")


def class_coupling(coupling, y_source, y_target, classes_source, classes_target):
    """Mass the sample coupling moves between each pair of classes: ``(k, k')``.

    ``C[a, b] = sum_{i: y_i = a, j: y'_j = b} P[i, j]`` computed as ``A^T P B`` with one-hot
    class indicator matrices ``A`` (n x k) and ``B`` (m x k').
    """
    import torch

    P = torch.as_tensor(coupling)
    cs = torch.as_tensor(classes_source, device=P.device)
    ct = torch.as_tensor(classes_target, device=P.device)
    A = (torch.as_tensor(y_source, device=P.device)[:, None] == cs[None, :]).to(P.dtype)
    B = (torch.as_tensor(y_target, device=P.device)[:, None] == ct[None, :]).to(P.dtype)
    if P.shape != (A.shape[0], B.shape[0]):
        raise ValueError(f"class_coupling: coupling has shape {tuple(P.shape)}, expected "
                         f"({A.shape[0]}, {B.shape[0]}) (source x target samples)")
    return A.T @ P @ B


def _classes(result, attr: str, data):
    values = getattr(result, attr, None)
    return data.classes.tolist() if values is None else [int(v) for v in values]


def run_distance(cfg, run_dir: str | Path | None = None) -> dict:
    """Compute the OTDD of ``cfg.source`` to ``cfg.target`` and write its outputs.

    Returns the summary (also ``summary.json``, `dsflow.runs.RunRecord`): ``status: failed``
    and the error when it raises, ``status: interrupted`` on SIGINT/SIGTERM (`RunInterrupted`,
    a KeyboardInterrupt, propagates: exit status 130/143 in the CLI).
    """
    from omegaconf import OmegaConf

    import dsflow
    from dsflow.app import (describe_data, hydra_run_dir, load_datasets, plain_config, resolve_device,
                            resolve_dtype, seed_everything)
    from dsflow.config_checks import check_distance_config
    from dsflow.runs import RunRecord

    check_distance_config(cfg)
    run_dir = Path(run_dir) if run_dir is not None else hydra_run_dir()
    if run_dir is None:
        raise ValueError("run_distance(cfg): pass run_dir=... or run through `dsflow-distance`")
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.set_struct(cfg, True)
    summary: dict = {}
    # config.yaml, summary.json (running -> ok / failed / interrupted) and SIGINT/SIGTERM
    with RunRecord(run_dir, plain_config(cfg), summary):
        seed_everything(cfg.seed)
        device, dtype = resolve_device(cfg.device), resolve_dtype(cfg.dtype)
        source, target = load_datasets(cfg, device, dtype)
        options = {k: cfg[k] for k in OTDD_KEYS if k in cfg}
        options.update(OmegaConf.to_container(cfg.options, resolve=True) if cfg.get("options") else {})
        summary.update(device=str(device), dtype=str(cfg.dtype), otdd_options=options,
                       source=describe_data(source), target=describe_data(target))
        tic = time.perf_counter()
        from dsflow.ot.gaussian import SingletonClassError

        try:
            result = dsflow.otdd(source, target, return_label_distances=True, return_coupling=True, **options)
        except SingletonClassError as exc:
            raise exc.with_fix("allow_singletons=true") from None
        summary["otdd_time_s"] = time.perf_counter() - tic
        summary["distance"] = float(result.distance)
        if getattr(result, "cost", None) is not None:
            summary["cost"] = float(result.cost)  # the OT value, distance**p
        cls_s = _classes(result, "source_classes", source)
        cls_t = _classes(result, "target_classes", target)
        names_s = getattr(result, "source_names", None) or [source.class_name(c) for c in cls_s]
        names_t = getattr(result, "target_names", None) or [target.class_name(c) for c in cls_t]
        arrays = {}
        W = getattr(result, "label_distances", None)
        if W is not None:
            W = W.detach().cpu().double()
            arrays["label_distances"] = W.numpy()
            summary["label_distances"] = W.tolist()
        C = None
        if getattr(result, "coupling", None) is not None:
            C = class_coupling(result.coupling.detach(), source.y, target.y, cls_s, cls_t).cpu().double()
            arrays["class_coupling"] = C.numpy()
            summary["class_coupling"] = C.tolist()
        if getattr(result, "timings", None):
            summary["timings"] = dict(result.timings)
        summary.update(source_class_names=names_s, target_class_names=names_t)
        if arrays:
            import numpy as np

            np.savez_compressed(run_dir / "distance.npz", **arrays,
                                source_classes=np.array(cls_s), target_classes=np.array(cls_t))
        if cfg.get("plot", True):
            from dsflow.plotting.core import plot_heatmap

            if W is not None:
                plot_heatmap(W, run_dir / "label_distances.png", row_names=names_s, col_names=names_t,
                             title=f"label-to-label W_{cfg.p}^{cfg.p}: {source.name} vs {target.name}")
            if C is not None:
                plot_heatmap(C, run_dir / "class_coupling.png", row_names=names_s, col_names=names_t,
                             title="class-to-class transport mass", cmap="magma")
    return summary


def print_distance(summary: dict) -> None:
    print(f"OTDD({summary['source']['name']} -> {summary['target']['name']}) = {summary['distance']:.6g}\n"
          f"  outputs: {summary['run_dir']}", flush=True)
