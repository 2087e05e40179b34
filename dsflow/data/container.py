"""`LabeledData`: the one container every part of dsflow passes datasets in.

A labeled dataset is a finite sample of a joint distribution over (features, label).
Features are flattened to an ``n x d`` float tensor; labels are integers that need not
be contiguous (``{3, 7}`` is a valid label set).  Images keep their original shape in
``image_shape`` so that plots and oracles can reshape ``x`` back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence


@dataclass
class LabeledData:
    """A labeled dataset: features ``x`` (n x d float tensor) and labels ``y`` (n int64).

    Parameters
    ----------
    x:
        Features, ``(n, d)``.  Anything ``torch.as_tensor`` accepts; images are flattened.
    y:
        Integer labels, ``(n,)``.  Values may be any integers (non-contiguous is fine).
    class_names:
        Optional mapping ``label value -> name`` (a dict, or a sequence indexed by label value).
    image_shape:
        Optional ``(C, H, W)`` of one sample when the features are a flattened image.
    name:
        Human-readable name, used in plots and logs.
    """

    x: Any
    y: Any
    class_names: dict[int, str] | Sequence[str] | None = None
    image_shape: tuple[int, ...] | None = None
    name: str = "data"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import torch

        x = torch.as_tensor(self.x)
        if not torch.is_floating_point(x):
            x = x.float()
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim > 2:
            if self.image_shape is None:
                self.image_shape = tuple(int(s) for s in x.shape[1:])
            x = x.reshape(x.shape[0], -1)
        y = torch.as_tensor(self.y)
        if y.ndim != 1:
            raise ValueError(f"LabeledData: labels y must be 1-D, got shape {tuple(y.shape)}")
        if torch.is_floating_point(y):
            if not bool(torch.all(y == torch.round(y))):
                raise ValueError("LabeledData: labels y must be integers (got non-integral floats)")
        y = y.long()
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"LabeledData: x has {x.shape[0]} rows but y has {y.shape[0]} labels; "
                "they must describe the same samples"
            )
        if x.shape[0] == 0:
            raise ValueError("LabeledData: the dataset is empty")
        if self.image_shape is not None:
            prod = 1
            for s in self.image_shape:
                prod *= int(s)
            if prod != x.shape[1]:
                raise ValueError(
                    f"LabeledData: image_shape {tuple(self.image_shape)} has {prod} values "
                    f"but features have dimension {x.shape[1]}"
                )
            self.image_shape = tuple(int(s) for s in self.image_shape)
        if isinstance(self.class_names, (list, tuple)):
            self.class_names = {i: str(n) for i, n in enumerate(self.class_names)}
        elif self.class_names is not None:
            self.class_names = {int(k): str(v) for k, v in dict(self.class_names).items()}
        self.x = x
        self.y = y

    # ------------------------------------------------------------------ basic facts
    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def d(self) -> int:
        return int(self.x.shape[1])

    def __len__(self) -> int:
        return self.n

    @property
    def classes(self):
        """Sorted unique label values, a 1-D int64 tensor."""
        import torch

        return torch.unique(self.y.detach().cpu(), sorted=True)

    @property
    def num_classes(self) -> int:
        return int(self.classes.numel())

    def class_name(self, label: int) -> str:
        if self.class_names and int(label) in self.class_names:
            return self.class_names[int(label)]
        return str(int(label))

    @property
    def names(self) -> list[str]:
        """Names of ``classes`` in the same order."""
        return [self.class_name(int(c)) for c in self.classes]

    def class_counts(self):
        import torch

        _, counts = torch.unique(self.y.detach().cpu(), sorted=True, return_counts=True)
        return counts

    @property
    def is_image(self) -> bool:
        return self.image_shape is not None and len(self.image_shape) == 3

    def images(self):
        """Features reshaped to ``(n, C, H, W)``; raises if this is not image data."""
        if not self.is_image:
            raise ValueError(f"{self.name}: not image data (image_shape={self.image_shape})")
        return self.x.reshape(self.n, *self.image_shape)

    def check_finite(self, role: str = "") -> "LabeledData":
        """Raise a ValueError naming the dataset (``role``: ``source``/``target``) when its
        features hold NaN or Inf; returns ``self``.  Every entry point runs it on its inputs
        (`dsflow.app.load_datasets`): a NaN would otherwise give a NaN (or a clamped 0) OTDD."""
        import torch

        x = self.x.detach()
        finite = torch.isfinite(x)
        if bool(finite.all()):
            return self
        nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        rows = torch.nonzero(~finite.all(1)).flatten()
        what = " and ".join(f"{k} {label}" for k, label in ((nan, "NaN"), (inf, "Inf")) if k)
        who = f"{role} dataset {self.name!r}" if role else f"dataset {self.name!r}"
        raise ValueError(
            f"{who}: the features hold {what} value(s) in {rows.numel()} of {self.n} samples (first at row "
            f"{int(rows[0])}); clean the data or drop those samples, e.g. keep = np.isfinite(x).all(axis=1); "
            "np.savez(path, x=x[keep], y=y[keep])"
        )

    # ------------------------------------------------------------------ derived copies
    def with_(self, **changes) -> "LabeledData":
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def to(self, device=None, dtype=None) -> "LabeledData":
        x = self.x.to(device=device, dtype=dtype) if dtype is not None else self.x.to(device)
        return replace(self, x=x, y=self.y.to(device))

    def subset(self, index) -> "LabeledData":
        import torch

        index = torch.as_tensor(index, device=self.y.device)
        return replace(self, x=self.x[index], y=self.y[index])

    def detach(self) -> "LabeledData":
        return replace(self, x=self.x.detach(), y=self.y.detach())

    # ------------------------------------------------------------------ I/O
    def numpy(self):
        return self.x.detach().cpu().numpy(), self.y.detach().cpu().numpy()

    def save_npz(self, path: str | Path, **extra) -> Path:
        """Write ``x``, ``y`` (and any ``extra`` arrays) to a compressed ``.npz``."""
        import json

        import numpy as np

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        x, y = self.numpy()
        meta = {
            "name": self.name,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "class_names": {str(k): v for k, v in (self.class_names or {}).items()},
        }
        np.savez_compressed(path, x=x, y=y, meta=np.array(json.dumps(meta)), **extra)
        return path

    @classmethod
    def load_npz(cls, path: str | Path) -> "LabeledData":
        """Read a file written by :meth:`save_npz` (or any npz with ``x`` and ``y``)."""
        import json

        import numpy as np

        with np.load(Path(path), allow_pickle=False) as f:
            x, y = f["x"], f["y"]
            meta = json.loads(str(f["meta"])) if "meta" in f.files else {}
        names = meta.get("class_names") or None
        if names:
            names = {int(k): v for k, v in names.items()}
        shape = meta.get("image_shape")
        return cls(
            x=x,
            y=y,
            class_names=names,
            image_shape=tuple(shape) if shape else None,
            name=meta.get("name", Path(path).stem),
        )

    def __repr__(self) -> str:
        return (
            f"LabeledData(name={self.name!r}, n={self.n}, d={self.d}, "
            f"classes={self.num_classes}, image_shape={self.image_shape}, "
            f"dtype={self.x.dtype}, device={self.x.device})"
        )
