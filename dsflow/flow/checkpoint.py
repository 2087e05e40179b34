"""Flow checkpoints: one ``ckpt_<step>.pt`` file per save, written atomically, read safely.

A checkpoint holds everything needed to continue a flow bit-for-bit: the state tensors
(features, labels, label Gaussians, ``meta`` such as k-means centres), the optimizer and
step-size scheduler states, the RNG states (the engine's noise generator, torch's global
CPU/CUDA generators, numpy's, python's), the history, the trajectory bookkeeping, the
early-stopping counters, the step reached and the *fingerprint* of the config that
determines the flow (given by the caller, compared on resume).  Files are written to a
temporary name and renamed, so an interrupted save never leaves a truncated "latest"
checkpoint; a checkpoint truncated or damaged some other way (disk full, a copy cut short)
is detected on load (`CorruptCheckpointError`) and the engine falls back to an older one.

Loading never runs code from the file.  ``torch.load(weights_only=True)`` only rebuilds
what is on its allow-list: tensors, dtypes, ``torch.Size``, ``OrderedDict`` and python's
plain scalars and containers.  That is all a dsflow checkpoint holds, because `save_checkpoint`
converts the two other things a flow has on hand before pickling: numpy arrays (numpy's RNG
state, in-memory trajectory frames) become tensors tagged with their numpy dtype, and paths
become strings (`encode` / `decode`).  No extra global is allow-listed (`SAFE_GLOBALS` is
empty on purpose): a file that needs one, e.g. a pickle whose ``__reduce__`` calls
``os.system``, was not written by dsflow and is refused with `UnsafeCheckpointError`
before anything in it is executed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePath
from typing import Any

_NAME = re.compile(r"^ckpt_(\d+)\.pt$")

#: Globals allow-listed on load beyond torch's ``weights_only`` set.  Empty on purpose: what
#: a flow checkpoints is converted to tensors and plain containers by `encode`.
SAFE_GLOBALS: tuple = ()

#: Keys every dsflow checkpoint payload has (a file without them is not a flow checkpoint).
REQUIRED_KEYS = ("state", "optimizer", "rng", "history")

_NDARRAY = "__dsflow_ndarray__"
_PATH = "__dsflow_path__"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; ``path`` is the file concerned."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, damaged or not a dsflow checkpoint (an older one may be intact)."""


class UnsafeCheckpointError(CheckpointError):
    """The file asks to rebuild objects outside the allow-list (it may run code): refused."""


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a flow with a different config; ``differences`` maps
    each differing key to ``(checkpointed value, current value)``."""

    def __init__(self, message: str, differences: dict[str, tuple[Any, Any]]):
        super().__init__(message)
        self.differences = differences


_MISSING = "<absent>"


# ----------------------------------------------------------------------------- paths
def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"ckpt_{int(step):08d}.pt"


def checkpoint_step(path: str | Path) -> int | None:
    """The step in a checkpoint's file name, or None if it is not a ``ckpt_<step>.pt`` name."""
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


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


def check_writable(directory: str | Path) -> Path:
    """Create ``directory`` if needed and prove a file can be written there (then removed).

    Called before step 0 so that a flow does not run for hours and then fail on its first
    checkpoint.  Raises `CheckpointError` naming the directory.
    """
    import tempfile

    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_test_", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CheckpointError(
            f"checkpoint_dir {d} is not writable ({type(err).__name__}: {err.strerror or err}); "
            "choose a directory you can write to (flow.checkpoint_dir=...) or set flow.checkpoint_every=0",
            d,
        ) from None
    return d


# ----------------------------------------------------------------------------- encoding
def encode(obj: Any) -> Any:
    """``obj`` with numpy arrays/scalars and paths replaced by tensors, numbers and strings,
    so that ``torch.load(weights_only=True)`` can read it back; `decode` inverts it."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        import torch

        arr = np.ascontiguousarray(obj)
        # every numpy dtype a flow produces (float16/32/64, int, uint32 RNG keys, bool) has a
        # torch counterpart; the dtype name restores the exact numpy type
        return {_NDARRAY: torch.from_numpy(arr.copy()), "dtype": arr.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, PurePath):
        return {_PATH: str(obj)}
    if isinstance(obj, dict):
        return {k: encode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [encode(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(encode(v) for v in obj)
    return obj


def decode(obj: Any) -> Any:
    """Inverse of `encode`."""
    if isinstance(obj, dict):
        if _NDARRAY in obj:
            import numpy as np

            return obj[_NDARRAY].numpy().astype(np.dtype(obj["dtype"]), copy=True)
        if _PATH in obj:
            return Path(obj[_PATH])
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(decode(v) for v in obj)
    return obj


# ----------------------------------------------------------------------------- save / load
def save_checkpoint(directory: str | Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write ``payload`` as the checkpoint of ``step``; keep only the newest ``keep`` files."""
    import torch

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(d, step)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(encode(payload), tmp)
    os.replace(tmp, path)
    if keep > 0:
        for old in list_checkpoints(d)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, without executing anything in it.

    Tensors load on the CPU by default (the engine moves them to the state's device), so a
    checkpoint written on a GPU resumes on a CPU-only machine instead of failing to load.
    A file that cannot be *read* (permissions) is a `CheckpointError`, not corruption: it is
    neither skipped nor renamed.

    Raises `UnsafeCheckpointError` for a file that needs a global outside the allow-list
    (nothing of it ran), `CorruptCheckpointError` for a truncated/damaged file or one that is
    not a flow checkpoint.  Both messages name the file.
    """
    import pickle

    import torch

    import warnings

    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)), warnings.catch_warnings():
            # torch warns about the pickle protocol of foreign files before refusing them
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"GLOBAL (\S+)", text)
        if found:  # the file names a callable/class to rebuild: what a code-running pickle does
            raise UnsafeCheckpointError(
                f"refused to load checkpoint {path}: it asks to rebuild {found.group(1)}, which is not on the "
                "allow-list of a dsflow checkpoint (tensors, plain containers, RNG states), so it was "
                "not written by dsflow or was tampered with. Nothing in it was executed. Remove it "
                "(never resume from a checkpoint you did not write).",
                path,
            ) from None
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt ({type(err).__name__}: {err})", path) from None
    except FileNotFoundError:
        raise CorruptCheckpointError(f"checkpoint {path} does not exist", path) from None
    except (PermissionError, IsADirectoryError) as err:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({err.strerror or type(err).__name__}); fix its permissions "
            "or point flow.checkpoint_dir elsewhere", path,
        ) from None
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - torch reports damage as RuntimeError, EOFError, OSError, KeyError...
        raise CorruptCheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(err).__name__}: {str(err)[:200]})", path
        ) from None
    if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED_KEYS):
        raise CorruptCheckpointError(
            f"checkpoint {path} is not a dsflow flow checkpoint (expected a dict with {list(REQUIRED_KEYS)})", path
        )
    return decode(payload)


# ----------------------------------------------------------------------------- fingerprint
def fingerprint(values: dict[str, Any]) -> dict[str, Any]:
    """``{"hash": sha256, "values": values}`` of a flat mapping of plain config values.

    The caller decides what goes in (the keys that determine the trajectory); the hash is of
    the canonical JSON of ``values``.  Stored in every checkpoint, compared on resume.
    """
    import hashlib
    import json

    values = {str(k): v for k, v in dict(values).items()}
    canonical = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return {"hash": hashlib.sha256(canonical.encode()).hexdigest(), "values": values}


def fingerprint_differences(old: dict | None, new: dict | None) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two `fingerprint` results: ``{key: (old, new)}``."""
    if not old or not new or old.get("hash") == new.get("hash"):
        return {}
    a, b = dict(old.get("values") or {}), dict(new.get("values") or {})
    return {k: (a.get(k, _MISSING), b.get(k, _MISSING))
            for k in sorted(set(a) | set(b)) if a.get(k, _MISSING) != b.get(k, _MISSING)}


__all__ = [
    "save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints", "checkpoint_path",
    "checkpoint_step", "check_writable", "encode", "decode", "fingerprint", "fingerprint_differences",
    "CheckpointError", "CorruptCheckpointError", "UnsafeCheckpointError", "CheckpointMismatchError",
    "SAFE_GLOBALS",
]
