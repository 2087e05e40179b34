"""Type checks of the run-level config keys, before anything runs.

Hydra parses ``steps=abc`` as the string ``'abc'`` and ``steps=2.5`` as a float; without a
check the first gives a Python ``TypeError`` deep inside the flow that does not name the
key, and the second silently runs 2 steps.  `check_run_config` names the key, the value
and a valid example.  Pure Python (no torch): cheap, and importable from the CLI.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ConfigValueError", "check_run_config", "check_distance_config", "check_optimizer_config"]


class ConfigValueError(ValueError):
    """A config key holds a value of the wrong type or range (the message names the key)."""


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value == int(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _string_hint(value: Any) -> str:
    """A number that arrived as a string (``${oc.env:SEED}`` resolves to one) is still a string
    to every consumer of the key (numpy's seeding, torch's optimizers): say how to decode it."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return (" (it is the string " + repr(value) + ", e.g. from ${oc.env:VAR}: decode it with "
                "${oc.decode:${oc.env:VAR}})")
    return ""


def check_int(cfg, key: str, *, minimum: int | None = None, optional: bool = False, example: str = "") -> None:
    """``cfg[key]`` is a whole number (>= ``minimum``; null allowed when ``optional``)."""
    if key not in cfg:
        return
    value = cfg[key]
    if value is None and optional:
        return
    floor = f" >= {minimum}" if minimum is not None else ""
    if not _is_int(value) or (minimum is not None and value < minimum):
        raise ConfigValueError(
            f"{key}={_shown(value)} is not valid: {key} must be a whole number{floor}"
            + (" or null" if optional else "") + (f", e.g. {example}" if example else "") + _string_hint(value)
        )


def check_number(cfg, key: str, *, positive: bool = False, minimum: float | None = None,
                 optional: bool = False, example: str = "", prefix: str = "") -> None:
    """``cfg[key]`` is a finite number (> 0 when ``positive``, >= ``minimum``)."""
    if key not in cfg:
        return
    value = cfg[key]
    name = f"{prefix}{key}"
    if value is None and optional:
        return
    ok = _is_number(value) and math.isfinite(value)
    if ok and positive:
        ok = value > 0
    if ok and minimum is not None:
        ok = value >= minimum
    if not ok:
        need = "a positive number" if positive else (f"a number >= {minimum}" if minimum is not None else "a number")
        raise ConfigValueError(
            f"{name}={_shown(value)} is not valid: {name} must be {need}"
            + (" or null" if optional else "") + (f", e.g. {example}" if example else "") + _string_hint(value)
        )


def check_bool(cfg, key: str, *, prefix: str = "") -> None:
    if key in cfg and not isinstance(cfg[key], bool):
        name = f"{prefix}{key}"
        raise ConfigValueError(f"{name}={_shown(cfg[key])} is not valid: {name} must be true or false")


def check_optimizer_config(optimizer, *, lr_optional: bool = False) -> None:
    """``optimizer.lr`` is a positive number (null allowed when ``time_step`` sets it); every
    other optimizer option is a number, a boolean, null or a list of numbers (``betas``)."""
    if optimizer is None:
        return
    check_number(optimizer, "lr", positive=True, optional=lr_optional, example="optimizer.lr=0.1",
                 prefix="optimizer.")
    for key in optimizer:
        if str(key).startswith("_"):
            continue
        value = optimizer[key]
        if value is None or isinstance(value, bool) or _is_number(value):
            continue
        if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
            if all(_is_number(v) for v in value):
                continue
        raise ConfigValueError(
            f"optimizer.{key}={_shown(value)} is not valid: optimizer options are numbers "
            f"(or true/false), e.g. optimizer.{key}=0.9"
        )


#: Run-level keys that moved into a task's config: old key -> new key.  The re-purposing
#: options belong to the repurpose task since tasks exist (configs/task/repurpose.yaml).
MOVED_KEYS = {
    "holdout": "task.holdout",
    "source_labels": "task.source_labels",
    "pseudo_labels": "task.pseudo_labels",
    "pushforward": "task.pushforward",
}


def moved_key_message(key: str, value: Any = None) -> str:
    """The fix for a key given under its old spelling (e.g. ``holdout=0.2``)."""
    new = MOVED_KEYS[key]
    example = f"{new}={_shown(value)}" if value is not None and not hasattr(value, "keys") else f"{new}.<option>=..."
    return (f"{key} is now {new} (an option of the repurpose task, configs/task/repurpose.yaml): "
            f"use {example} with task=repurpose (the re-purposing experiments select it)")


def check_moved_keys(cfg) -> None:
    """Refuse the old top-level spellings of task options with the new key (a config written
    before tasks, or ``+holdout=...`` on the command line)."""
    for key in MOVED_KEYS:
        if key in cfg:
            raise ConfigValueError(moved_key_message(key, cfg[key]))


def check_run_config(cfg) -> None:
    """Types of the top-level keys of a `dsflow` run and of ``optimizer.*`` (see module doc)."""
    check_int(cfg, "seed", example="seed=0")
    check_int(cfg, "steps", minimum=0, example="steps=100")
    check_int(cfg, "threads", minimum=1, optional=True, example="threads=1")
    for key in ("progress", "plot", "overwrite"):
        check_bool(cfg, key)
    check_moved_keys(cfg)
    check_number(cfg, "time_step", positive=True, optional=True, example="time_step=0.05")
    check_optimizer_config(cfg.get("optimizer"), lr_optional=cfg.get("time_step") is not None)


def check_distance_config(cfg) -> None:
    """Types of the top-level keys of `dsflow-distance`."""
    check_int(cfg, "seed", example="seed=0")
    check_bool(cfg, "plot")
    check_bool(cfg, "allow_singletons")
    check_number(cfg, "p", positive=True, example="p=2")
    check_number(cfg, "entreg", positive=True, example="entreg=0.1")
    for key in ("feature_weight", "label_weight"):
        check_number(cfg, key, minimum=0, example=f"{key}=1.0")
