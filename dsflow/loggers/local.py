"""Local files of a run: ``metrics.jsonl`` (one JSON object per flow step) and ``summary.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from dsflow.loggers.base import RunLogger, to_jsonable

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented strict JSON (tensors and non-finite floats converted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    # write-then-rename: a reader (dsflow-report on a running sweep) never sees half a file
    tmp.write_text(json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def read_metrics(path: str | Path, *, skip_damaged: bool = False) -> list[dict]:
    """The records of a ``metrics.jsonl`` file, in order.

    ``skip_damaged=True`` drops lines that are not JSON (the half-written last line of a
    process killed with ``kill -9``) instead of raising.
    """
    rows = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if not skip_damaged:
                    raise
    return rows


class LocalLogger(RunLogger):
    """Streams metrics to ``run_dir/metrics.jsonl`` (flushed every step, so a crashed run
    keeps what it did) and writes ``run_dir/summary.json``.

    ``resume=True`` keeps an existing ``metrics.jsonl`` (a resumed run appends to it, see
    `rewind`); otherwise the file starts empty.
    """

    name = "local"

    def __init__(self, run_dir: str | Path, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.summary_path = self.run_dir / SUMMARY_FILE
        self._metrics = open(self.metrics_path, "a" if resume else "w")

    def rewind(self, start_step: int, history: list[Mapping[str, Any]] = ()) -> list[dict]:
        """Make ``metrics.jsonl`` the history up to ``start_step`` (a resume point); return it.

        Rows of steps before ``start_step`` are kept as they are; steps missing from the file
        (it was lost, or the checkpoint lives elsewhere) are filled from ``history`` (the
        checkpoint's engine records).  Rows of steps at or after ``start_step``, written by an
        interrupted run after its checkpoint, are dropped: the resumed run writes those steps
        again for the particles it actually continues.  The file is rewritten atomically
        (temporary file + rename) and then appended to.
        """
        start_step = int(start_step)
        old = read_metrics(self.metrics_path, skip_damaged=True) if self.metrics_path.exists() else []
        by_step: dict[int, dict] = {}
        for row in old:
            step = row.get("step")
            if isinstance(step, int) and 0 <= step < start_step and step not in by_step:
                by_step[step] = row
        for record in history:
            step = int(record.get("step", -1))
            if 0 <= step < start_step and step not in by_step:
                by_step[step] = {**to_jsonable({k: v for k, v in dict(record).items() if k != "step"}), "step": step}
        rows = [by_step[k] for k in sorted(by_step)]
        self._metrics.close()
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))
        tmp.replace(self.metrics_path)
        self._metrics = open(self.metrics_path, "a")
        return rows

    def log_metrics(self, record: Mapping[str, Any], step: int) -> None:
        line = dict(to_jsonable(record))
        line["step"] = int(step)
        self._metrics.write(json.dumps(line, allow_nan=False) + "\n")
        self._metrics.flush()

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        write_json(self.summary_path, summary)

    def finish(self, exit_code: int = 0) -> None:
        if not self._metrics.closed:
            self._metrics.close()
