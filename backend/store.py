"""The training store: every annotation Label Studio reports through ``/webhook``, in SQLite under MODEL_DIR.

Why SQLite with WAL and a lock: gunicorn threads answer concurrent webhooks; WAL lets readers (the trainer
exporting a training set) run while writers append, ``busy_timeout`` absorbs a second process, and a
process-level lock serialises our own writers so no event is lost. An annotation is keyed by its Label Studio id:
``ANNOTATION_UPDATED`` replaces it, ``ANNOTATION_DELETED`` removes it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    annotation_id INTEGER PRIMARY KEY,
    project TEXT,
    task_id INTEGER,
    task TEXT NOT NULL,
    annotation TEXT NOT NULL,
    action TEXT NOT NULL,
    updated_at REAL NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class StoredAnnotation:
    annotation_id: int
    project: Optional[str]
    task_id: Optional[int]
    task: dict[str, Any]
    annotation: dict[str, Any]
    seq: int


class TrainingStore:
    """Annotations received from Label Studio, with a monotonically increasing sequence number per write."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        with self._lock:
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _next_seq(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key='seq'").fetchone()
        seq = (int(row[0]) if row else 0) + 1
        self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('seq', ?)", (str(seq),))
        return seq

    def upsert(self, action: str, project: Any, task: dict[str, Any], annotation: dict[str, Any]) -> int:
        """Store (or replace) one annotation; returns its sequence number."""
        if not isinstance(annotation, dict) or "id" not in annotation:
            raise ValueError("the webhook payload has no annotation with an id")
        if not isinstance(task, dict):
            task = {"id": annotation.get("task")}
        ann_id = int(annotation["id"])
        task_id = task.get("id", annotation.get("task"))
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                seq = self._next_seq()
                self._conn.execute(
                    "INSERT OR REPLACE INTO annotations(annotation_id, project, task_id, task, annotation, action, updated_at, seq)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (ann_id, None if project is None else str(project), None if task_id is None else int(task_id),
                     json.dumps(task), json.dumps(annotation), action, time.time(), seq),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return seq

    def delete(self, annotation_id: int) -> bool:
        with self._lock:
            cur = self._conn.execute("DELETE FROM annotations WHERE annotation_id = ?", (int(annotation_id),))
            return cur.rowcount > 0

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0])

    def last_seq(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key='seq'").fetchone()
        return int(row[0]) if row else 0

    def get_meta(self, key: str) -> Optional[str]:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def annotations(self, project: Optional[str] = None) -> Iterator[StoredAnnotation]:
        """All stored annotations (of one project when given), oldest write first."""
        with self._lock:
            if project is None:
                rows = self._conn.execute(
                    "SELECT annotation_id, project, task_id, task, annotation, seq FROM annotations ORDER BY seq"
                ).fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT annotation_id, project, task_id, task, annotation, seq FROM annotations WHERE project=? ORDER BY seq",
                    (str(project),),
                ).fetchall()
        for aid, proj, tid, task, ann, seq in rows:
            yield StoredAnnotation(int(aid), proj, tid, json.loads(task), json.loads(ann), int(seq))
