"""Per-class minibatches of a fixed dataset, drawn afresh at every step of a flow.

The WoW distillation protocol flows toward "256 real samples per class per step"; both
`dsflow.functionals.mmd_sw.MMDSW` and `dsflow.functionals.otdd.OTDD` take ``target_batch``.
A batch depends only on ``(seed, step)``, so a resumed flow draws the batches the
uninterrupted one drew, with nothing to checkpoint.
"""

from __future__ import annotations


def per_class_rows(members, per_class: int, seed: int, step: int):
    """Row indices: ``per_class`` rows drawn without replacement from each tensor of ``members``
    (the rows of one class each; a class with fewer rows is used whole), from a generator seeded
    with ``seed`` and ``step``."""
    import torch

    gen = torch.Generator()
    gen.manual_seed((int(seed) * 1_000_003 + 7919 * (int(step) + 1)) % 2**63)
    picks = []
    for rows in members:
        if rows.numel() <= per_class:
            picks.append(rows)
        else:
            perm = torch.randperm(rows.numel(), generator=gen)[:per_class]
            picks.append(rows[perm.to(rows.device)])
    return torch.cat(picks)


def class_members(y):
    """The rows of each class of ``y`` (sorted class values), as a list of index tensors."""
    import torch

    from dsflow.ot.class_stats import class_index

    classes, idx = class_index(y)
    return [torch.nonzero(idx == c).flatten() for c in range(classes.numel())]


def check_batch(value, caller: str) -> int | None:
    """``target_batch``: ``None`` or an integer >= 1, refused by name otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{caller}: functional.target_batch must be null or an integer >= 1, got {value!r}")
    return int(value)


__all__ = ["per_class_rows", "class_members", "check_batch"]
