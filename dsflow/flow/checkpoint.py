"""Flow checkpoints: one ``ckpt_<step>.pt`` file per save, written atomically.

A checkpoint holds everything needed to continue a flow bit-for-bit: the state tensors
(features, labels, label Gaussians, ``meta`` such as k-means centres), the optimizer and
step-size scheduler states, the RNG states (the engine's noise generator, torch's global
CPU/CUDA generators, numpy's), the history, the trajectory bookkeeping, the early-stopping
counters and the step reached.  Files are written to a temporary name and renamed, so an
interrupted save never leaves a truncated "latest" checkpoint.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"ckpt_{int(step):08d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest step first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def save_checkpoint(directory: str | Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write ``payload`` as the checkpoint of ``step``; keep only the newest ``keep`` files."""
    import torch

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(d, step)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    if keep > 0:
        for old in list_checkpoints(d)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location=None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (trusted, local file)."""
    import torch

    return torch.load(Path(path), map_location=map_location, weights_only=False)


__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints", "checkpoint_path"]
