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

import logging
import os
import random
import re
from pathlib import Path, PurePath
from typing import Any

log = logging.getLogger("dsflow")

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


# ----------------------------------------------------------------------------- a flow's payload
# What the engine saves and restores.  It lives here, next to the file format, so that the
# particle loop (`dsflow.flow.engine`) only says *when* to save and *that* it resumes.
PAYLOAD_VERSION = 2


def rng_states(noise_generator) -> dict:
    """Every generator a flow draws from: the noise generator, torch CPU/CUDA, numpy, python."""
    import numpy as np
    import torch

    out = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "noise": None if noise_generator is None else noise_generator.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict, noise_generator) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if noise_generator is not None and states.get("noise") is not None:
        noise_generator.set_state(states["noise"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def flow_payload(*, state, step: int, optimizer, scheduler, noise_generator, history: list, early_stop: dict,
                 recorder, objective, fingerprint) -> dict[str, Any]:
    """The checkpoint of a flow at ``step``: everything needed to continue it bit for bit."""
    return {
        "version": PAYLOAD_VERSION,
        "state": {"tensors": {k: v.detach().cpu() for k, v in state.tensors().items()},
                  "step": step, "meta": dict(state.meta)},
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": rng_states(noise_generator),
        "history": history,
        "early_stop": dict(early_stop),
        "trajectory": None if recorder is None else recorder.state_dict(),
        "objective": objective.state_dict(),
        "fingerprint": fingerprint,
    }


def load_resume_checkpoint(checkpoint_dir) -> tuple[dict | None, Path | None, list[str]]:
    """The newest intact checkpoint in ``checkpoint_dir``: ``(payload, path, skipped)``.

    Corrupt files (truncated copies, a disk that filled up) are skipped with a warning
    naming each one, and renamed to ``<name>.corrupt`` so they are neither tried again nor
    mistaken for the newest checkpoint later; ``(None, None, [])`` when there is none at all;
    `CheckpointError` when there are checkpoints but none is intact.  A file refused as
    unsafe (`UnsafeCheckpointError`) stops the resume: it was planted, not damaged.
    """
    skipped: list[str] = []
    reasons: list[str] = []
    for path in reversed(list_checkpoints(checkpoint_dir)):
        try:
            return load_checkpoint(path), path, skipped
        except CorruptCheckpointError as err:
            reasons.append(str(err))
            moved = path.with_name(path.name + ".corrupt")
            try:
                path.replace(moved)
                where = f"renamed to {moved.name}"
            except OSError:
                where = "left in place"
            skipped.append(str(path))
            log.warning("skipping checkpoint %s (%s); trying the one before it", path, f"{err}; {where}")
    if reasons:
        raise CheckpointError(
            f"cannot resume: no intact checkpoint in {checkpoint_dir} ({'; '.join(reasons)}). "
            "Start afresh with flow.resume=false (or remove the damaged files)",
            checkpoint_dir,
        )
    return None, None, skipped


def describe_differences(differences: dict) -> str:
    return "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in differences.items())


def check_fingerprint(ckpt: dict, path, fingerprint, ignore: bool) -> dict:
    """Differences between the checkpoint's config fingerprint and ``fingerprint``; raises
    `CheckpointMismatchError` for any unless ``ignore``."""
    if fingerprint is None:
        return {}
    old = ckpt.get("fingerprint")
    if old is None:
        log.warning("checkpoint %s records no config fingerprint (written by an older dsflow or "
                    "without one): cannot check that the config is unchanged", path)
        return {}
    differences = fingerprint_differences(old, dict(fingerprint))
    if not differences:
        return {}
    text = describe_differences(differences)
    if not ignore:
        raise CheckpointMismatchError(
            f"cannot resume from {path}: the config differs from the checkpointed run's in "
            f"{len(differences)} key(s) (checkpoint -> now): {text}. Resume with the checkpointed "
            "values, start a new run (flow.resume=false, or another run directory), or set "
            "flow.resume_ignore_config=true to continue the checkpointed particles under the new config",
            differences,
        )
    log.warning("resuming from %s although the config changed (resume_ignore_config): %s; the "
                "particles, RNG states and history are the checkpoint's, the optimizer and "
                "schedule settings the new config's", path, text)
    return differences


def restore_state(state, saved: dict) -> None:
    """Copy checkpointed tensors into ``state`` (fresh leaves for the moving tensors)."""
    tensors = state.tensors()
    for key, value in saved["tensors"].items():
        current = tensors.get(key)
        if current is None or tuple(current.shape) != tuple(value.shape):
            raise ValueError(
                f"cannot resume: checkpoint tensor {key!r} has shape {tuple(value.shape)} but the "
                f"state has {None if current is None else tuple(current.shape)}; resume with the "
                "same data and dynamics as the checkpointed run"
            )
        new = value.to(device=current.device, dtype=current.dtype)
        if current.requires_grad:
            new = new.detach().clone().requires_grad_(True)
        state.set_tensor(key, new)
    state.step = int(saved["step"])
    state.meta = dict(saved["meta"])


def load_optimizer_keeping_settings(opt, saved: dict) -> None:
    """Load the optimizer's saved *state* (moments, step counts) under the current settings
    (lr, betas, momentum, ... of the new config): the ``resume_ignore_config`` path.  A
    different optimizer (other state keys) starts from a fresh state."""
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    saved_keys = [set(g) - {"params"} for g in saved.get("param_groups", [])]
    if saved_keys != [set(g) for g in fresh]:
        log.warning("the checkpoint's optimizer differs from the configured one: its state "
                    "(moments, step counts) is not restored")
        return
    opt.load_state_dict(saved)
    for group, settings in zip(opt.param_groups, fresh):
        group.update(settings)


def restore_run(ckpt: dict, *, optimizer, scheduler, start_step: int, changed_config: dict, noise_generator,
                recorder, objective, dynamics) -> None:
    """Put the optimizer, schedule, RNGs, trajectory and objective back where ``ckpt`` left
    them (the state tensors are restored before the optimizer is built: `restore_state`).

    With ``changed_config`` (``resume_ignore_config``) the optimizer keeps its moments under
    the new settings and the new schedule is advanced to ``start_step``.  An objective saved
    without resumable state restarts cold; under dynamics whose labels change it also drops
    caches keyed on the labels.
    """
    if changed_config:  # resume_ignore_config: the new settings apply from here on
        import warnings

        load_optimizer_keeping_settings(optimizer, ckpt["optimizer"])
        if scheduler is not None:  # the new schedule, at the step reached
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for _ in range(start_step):
                    scheduler.step()
    else:
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_states(ckpt["rng"], noise_generator)
    if recorder is not None:
        if ckpt.get("trajectory") is None:
            raise ValueError("cannot resume: the checkpointed run recorded no trajectory; resume with "
                             "trajectory_every=0 or start afresh (flow.resume=false)")
        recorder.load_state_dict(ckpt["trajectory"])
    if ckpt.get("objective") is not None:
        objective.load_state_dict(ckpt["objective"])
    elif dynamics.variable_labels:
        objective.reset()


__all__ = [
    "save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints", "checkpoint_path",
    "checkpoint_step", "check_writable", "encode", "decode", "fingerprint", "fingerprint_differences",
    "CheckpointError", "CorruptCheckpointError", "UnsafeCheckpointError", "CheckpointMismatchError",
    "SAFE_GLOBALS", "flow_payload", "load_resume_checkpoint", "check_fingerprint", "restore_state",
    "restore_run", "rng_states", "set_rng_states", "load_optimizer_keeping_settings", "PAYLOAD_VERSION",
]
