"""The record of finished tasks that makes ``pslg prelabel`` resumable.

One JSON object per line, appended and fsynced after each batch of predictions is stored. A crash or SIGKILL
can only tear the last line, which :meth:`Checkpoint.load` ignores, so the file never needs rewriting. A task
counts as done only for the ``model_version`` recorded with it: after a retrain the same file says which tasks
are stale.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping


def task_digest(task: Mapping[str, Any]) -> str:
    """A digest of what a task's prediction depends on: its ``data`` (canonical JSON), not its id."""
    data = task.get("data") if isinstance(task.get("data"), dict) else task
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class Checkpoint:
    """Finished tasks: ``{"task": key, "model_version": version[, "prediction": {...}]}`` per line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, dict[str, Any]]:
        """The last record of each task key (a torn final line from a crash is skipped)."""
        records: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return records
        with open(self.path, "r", encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line a killed run was writing
                if isinstance(record, dict) and "task" in record:
                    records[str(record["task"])] = record
        return records

    def done(self, model_version: str, digests: Mapping[str, str] | None = None) -> set[str]:
        """Keys of the tasks finished with ``model_version`` (and, given ``digests`` {key: task_digest}, whose
        record was made for a task with that same digest)."""
        return {key for key, rec in self.load().items() if rec.get("model_version") == model_version
                and (digests is None or rec.get("digest") == digests.get(key))}

    def remove(self) -> None:
        """Delete the file (after a complete run: nothing is left to resume)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append ``records`` with one write and make them durable before returning."""
        lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            if fh.tell() > 0 and not self._ends_with_newline():
                fh.write("\n")  # a killed run left half a line: start ours on a fresh one
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
