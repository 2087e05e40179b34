"""Particle trajectories: frames of ``x`` kept in memory or streamed to a ``.npy`` file.

On disk the file is a valid ``.npy`` array ``(T, n, d)`` at every moment: frames are
appended after a fixed-size header that is rewritten with the current frame count after
each append, so a crashed or interrupted flow leaves a readable file
(``np.load(path, mmap_mode="r")``) and memory stays ``O(n d)`` however long the flow.
The step of each frame is written next to it in ``<path>.steps.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_MAGIC = b"\x93NUMPY\x01\x00"
#: Total header size (magic + length + dict), a multiple of 64 as the format requires.
_HEADER_BYTES = 128

_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64}


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (dtype.str, tuple(shape))
    room = _HEADER_BYTES - len(_MAGIC) - 2
    if len(text) + 1 > room:
        raise ValueError(f"trajectory shape {shape} does not fit the .npy header")
    text = text.ljust(room - 1) + "\n"
    return _MAGIC + len(text).to_bytes(2, "little") + text.encode("latin1")


class TrajectoryRecorder:
    """Collects frames ``x_t`` (``(n, d)``) at chosen steps.

    Parameters
    ----------
    dtype:
        ``"float32"`` or ``"float16"`` (halves the storage; ~3 significant digits).
    path:
        ``None`` keeps frames in memory; a path streams them to that ``.npy`` file.
    """

    def __init__(self, dtype: str = "float32", path: str | Path | None = None) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"trajectory_dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.dtype = np.dtype(_DTYPES[dtype])
        self.path = None if path is None else Path(path)
        if self.path is not None and self.path.suffix != ".npy":
            self.path = self.path.with_name(self.path.name + ".npy")
        self.steps: list[int] = []
        self._frames: list[np.ndarray] = []
        self._frame_shape: tuple[int, ...] | None = None

    @property
    def steps_path(self) -> Path | None:
        return None if self.path is None else self.path.with_name(self.path.name + ".steps.json")

    def __len__(self) -> int:
        return len(self.steps)

    def append(self, step: int, x) -> None:
        """Record ``x`` (tensor or array ``(n, d)``) as the frame of ``step``."""
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        # Always a copy: on CPU ``tensor.numpy()`` shares memory with the live particles.
        frame = np.array(x, dtype=self.dtype, order="C", copy=True)
        if self._frame_shape is None:
            self._frame_shape = frame.shape
        elif frame.shape != self._frame_shape:
            raise ValueError(f"trajectory frame shape changed from {self._frame_shape} to {frame.shape}")
        if self.path is None:
            self._frames.append(frame)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            mode = "r+b" if self.steps and self.path.exists() else "wb"
            with open(self.path, mode) as f:
                f.seek(0, 2 if mode == "r+b" else 0)
                if mode == "wb":
                    f.write(_header(self.dtype, (0, *frame.shape)))
                f.write(frame.tobytes())
                f.seek(0)
                f.write(_header(self.dtype, (len(self.steps) + 1, *frame.shape)))
        self.steps.append(int(step))
        if self.path is not None:
            self.steps_path.write_text(json.dumps(self.steps))

    def truncate(self, n_frames: int) -> None:
        """Keep the first ``n_frames`` frames (used when resuming from a checkpoint)."""
        n_frames = int(n_frames)
        if n_frames > len(self.steps):
            raise ValueError(f"cannot truncate {len(self.steps)} frames to {n_frames}")
        self.steps = self.steps[:n_frames]
        if self.path is None:
            self._frames = self._frames[:n_frames]
        elif self._frame_shape is not None:
            frame_bytes = int(np.prod(self._frame_shape)) * self.dtype.itemsize
            with open(self.path, "r+b") as f:
                f.truncate(_HEADER_BYTES + n_frames * frame_bytes)
                f.seek(0)
                f.write(_header(self.dtype, (n_frames, *self._frame_shape)))
            self.steps_path.write_text(json.dumps(self.steps))

    def state_dict(self) -> dict:
        """What a checkpoint needs to restore this recorder (frames themselves if in memory)."""
        out = {"steps": list(self.steps), "frame_shape": self._frame_shape, "path": self.path}
        if self.path is None:
            out["frames"] = [f.copy() for f in self._frames]
        return out

    def load_state_dict(self, sd: dict) -> None:
        self._frame_shape = None if sd.get("frame_shape") is None else tuple(sd["frame_shape"])
        n_frames = len(sd["steps"])
        if self.path is None:
            frames = sd.get("frames")
            if frames is None:
                raise ValueError(
                    "the checkpoint streamed its trajectory to disk; resume with the same trajectory_path"
                )
            self._frames = [np.asarray(f, dtype=self.dtype) for f in frames]
            self.steps = list(sd["steps"])
        else:
            if not self.path.exists() and n_frames:
                raise FileNotFoundError(
                    f"trajectory file {self.path} is missing; the checkpoint expects {n_frames} frames in it"
                )
            self.steps = list(sd["steps"])
            if self.path.exists():
                on_disk = np.load(self.path, mmap_mode="r")
                if on_disk.shape[0] < n_frames:
                    raise ValueError(
                        f"trajectory file {self.path} has {on_disk.shape[0]} frames, the checkpoint expects {n_frames}"
                    )
                del on_disk
                self.truncate(n_frames)

    def result(self):
        """The frames: an array ``(T, n, d)`` in memory mode, else the file's ``Path``."""
        if self.path is not None:
            return self.path
        if not self._frames:
            return None
        return np.stack(self._frames)


def load_trajectory(traj, mmap: bool = True) -> np.ndarray:
    """An array ``(T, n, d)`` from an array or a ``.npy`` path written by the recorder."""
    if isinstance(traj, (str, Path)):
        return np.load(Path(traj), mmap_mode="r" if mmap else None)
    return np.asarray(traj)


__all__ = ["TrajectoryRecorder", "load_trajectory"]
