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


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file, in order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class LocalLogger(RunLogger):
    """Streams metrics to ``run_dir/metrics.jsonl`` (flushed every step, so a crashed run
    keeps what it did) and writes ``run_dir/summary.json``."""

    name = "local"

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.summary_path = self.run_dir / SUMMARY_FILE
        self._metrics = open(self.metrics_path, "w")

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
