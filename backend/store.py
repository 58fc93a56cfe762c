"""The training store: every annotation Label Studio reports through ``/webhook``, in SQLite under MODEL_DIR.

Why SQLite with WAL and a lock: gunicorn threads answer concurrent webhooks; WAL lets readers (the trainer
exporting a training set) run while writers append, ``busy_timeout`` absorbs a second process, and a
process-level lock serialises our own writers so no event is lost. An annotation is keyed by its Label Studio id.

Why ``updated_at`` and tombstones: Label Studio retries webhooks and sends them from worker queues, so events
arrive late and out of order. A write older than the stored version (Label Studio's ``updated_at``) is ignored,
so a retried ``ANNOTATION_CREATED`` never overwrites a newer ``ANNOTATION_UPDATED``; a deleted annotation or task
leaves a tombstone, so a late create never resurrects it. Tombstones are kept only for ids the store had seen
(an annotation it held, a task it held annotations of or served a pre-label), at most ``MAX_TOMBSTONES``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

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
CREATE TABLE IF NOT EXISTS prelabels (
    project TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    score REAL NOT NULL,
    features TEXT NOT NULL,
    mask TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (project, task_id)
);
CREATE TABLE IF NOT EXISTS tombstones (
    kind TEXT NOT NULL,
    id INTEGER NOT NULL,
    deleted_at REAL NOT NULL,
    PRIMARY KEY (kind, id)
);
"""

#: Label Studio ids are 64-bit signed integers (Django BigAutoField / AutoField).
MAX_ID = 2**63 - 1

STORED, STALE, DELETED = "stored", "stale", "deleted"
#: Most tombstones kept (the oldest go first): each is a deleted id the store had seen
MAX_TOMBSTONES = 100_000
_CHUNK = 500  # ids per SQL statement (SQLite's host-parameter limit is 999 on older builds)


def parse_id(value: Any, what: str = "annotation id") -> int:
    """A Label Studio id: an int (not a bool) or a string of ASCII digits, 0 … 2^63−1; anything else is a ValueError.

    Why strict: ``int(12.9)`` and ``int(True)`` would silently store annotation 12 or 1 under the wrong key.
    """
    if isinstance(value, str) and value.isascii() and value.isdecimal():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise ValueError(f"{what} {value!r} is not an integer id")
    if not 0 <= number <= MAX_ID:
        raise ValueError(f"{what} {value!r} is outside 0 … 2^63-1")
    return number


def parse_updated_at(value: Any) -> Optional[float]:
    """Label Studio's ``updated_at`` (ISO 8601; naive means UTC) as epoch seconds; None when absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"updated_at {value!r} is not an ISO 8601 time")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"updated_at {value!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


@dataclass
class StoredAnnotation:
    annotation_id: int
    project: Optional[str]
    task_id: Optional[int]
    task: dict[str, Any]
    annotation: dict[str, Any]
    seq: int


@dataclass
class StoredPrelabel:
    """The pre-label a task was last served (before anyone corrected it): what the quality estimate learns from."""

    project: Optional[str]
    task_id: int
    model_version: str
    score: float
    features: dict[str, float]
    mask_rle: dict[str, Any]  #: COCO RLE (``annotate.masks.coco_rle_encode``)


@dataclass(frozen=True)
class WriteOutcome:
    """What an upsert did: ``stored`` (with its sequence number), ``stale`` (older than the stored version) or
    ``deleted`` (the annotation or its task was deleted before)."""

    status: str
    seq: Optional[int] = None


class TrainingStore:
    """Annotations received from Label Studio, with a monotonically increasing sequence number per write."""

    def __init__(self, path: str | Path, max_tombstones: int = MAX_TOMBSTONES) -> None:
        self.path = Path(path)
        self.max_tombstones = max(1, int(max_tombstones))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        with self._lock:
            self._conn.executescript(SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(annotations)")}
            if "source_updated_at" not in columns:  # stores written before updated_at was compared
                self._conn.execute("ALTER TABLE annotations ADD COLUMN source_updated_at REAL")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _next_seq(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key='seq'").fetchone()
        seq = (int(row[0]) if row else 0) + 1
        self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('seq', ?)", (str(seq),))
        return seq

    def _tombstoned(self, annotation_id: int, task_id: Optional[int]) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM tombstones WHERE (kind='annotation' AND id=?) OR (kind='task' AND id=?)",
            (annotation_id, -1 if task_id is None else task_id),
        ).fetchone()
        return row is not None

    def upsert(self, action: str, project: Any, task: dict[str, Any], annotation: dict[str, Any]) -> WriteOutcome:
        """Store (or replace) one annotation unless a newer version is stored or it was deleted.

        Ids are validated strictly (:func:`parse_id`); a bad one raises ``ValueError`` naming it.
        """
        if not isinstance(annotation, dict) or "id" not in annotation:
            raise ValueError("the webhook payload has no annotation with an id")
        ann_id = parse_id(annotation["id"])
        if not isinstance(task, dict):
            task = {"id": annotation.get("task")}
        raw_task_id = task.get("id", annotation.get("task"))
        if isinstance(raw_task_id, dict):  # some payloads nest the task object in the annotation
            raw_task_id = raw_task_id.get("id")
        task_id = None if raw_task_id is None else parse_id(raw_task_id, f"task id of annotation {ann_id}")
        project_id = None if project is None else str(parse_id(project, f"project id of annotation {ann_id}"))
        try:
            source_updated_at = parse_updated_at(annotation.get("updated_at"))
        except ValueError as exc:
            raise ValueError(f"annotation {ann_id}: {exc}") from None
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if self._tombstoned(ann_id, task_id):
                    self._conn.execute("COMMIT")
                    return WriteOutcome(DELETED)
                row = self._conn.execute(
                    "SELECT source_updated_at FROM annotations WHERE annotation_id=?", (ann_id,)
                ).fetchone()
                if row is not None and row[0] is not None and source_updated_at is not None and source_updated_at < row[0]:
                    self._conn.execute("COMMIT")
                    return WriteOutcome(STALE)
                seq = self._next_seq()
                self._conn.execute(
                    "INSERT OR REPLACE INTO annotations(annotation_id, project, task_id, task, annotation, action,"
                    " updated_at, seq, source_updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (ann_id, project_id, task_id, json.dumps(task), json.dumps(annotation), action, time.time(), seq,
                     source_updated_at),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return WriteOutcome(STORED, seq)

    def _bury(self, kind: str, ids: Iterable[int]) -> None:
        """Tombstones for ``ids`` (which the caller checked the store had seen), then the oldest beyond
        ``MAX_TOMBSTONES`` are forgotten: an anonymous bulk delete can neither grow the table without bound nor
        block ids forever."""
        now = time.time()
        self._conn.executemany("INSERT OR REPLACE INTO tombstones(kind, id, deleted_at) VALUES (?, ?, ?)",
                               [(kind, i, now) for i in ids])
        excess = int(self._conn.execute("SELECT COUNT(*) FROM tombstones").fetchone()[0]) - self.max_tombstones
        if excess > 0:
            self._conn.execute("DELETE FROM tombstones WHERE rowid IN (SELECT rowid FROM tombstones "
                               "ORDER BY deleted_at, rowid LIMIT ?)", (excess,))

    def _existing(self, query: str, ids: list[int]) -> list[tuple]:
        """Rows of ``query`` (with one ``{}`` for an ``IN`` list) for ``ids``, a chunk of ids per statement."""
        rows: list[tuple] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            rows += self._conn.execute(query.format(",".join("?" * len(chunk))), chunk).fetchall()
        return rows

    def delete(self, annotation_ids: int | Iterable[int]) -> int:
        """Remove annotations (and remember the stored ones as deleted); returns how many were stored.

        Only ids the store holds get a tombstone: a delete of ids it never saw (an anonymous bulk delete of
        200,000 ids) changes nothing, and cannot block those annotations from being stored later.
        """
        ids = [parse_id(annotation_ids)] if isinstance(annotation_ids, (int, str)) else [parse_id(i) for i in annotation_ids]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                gone = [r[0] for r in self._existing(
                    "SELECT annotation_id FROM annotations WHERE annotation_id IN ({})", list(dict.fromkeys(ids)))]
                for start in range(0, len(gone), _CHUNK):
                    chunk = gone[start:start + _CHUNK]
                    self._conn.execute(f"DELETE FROM annotations WHERE annotation_id IN ({','.join('?' * len(chunk))})",
                                       chunk)
                self._bury("annotation", gone)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return len(gone)

    def delete_tasks(self, task_ids: Iterable[int]) -> int:
        """Remove every annotation of these tasks; returns how many.

        A task gets a tombstone (so a late annotation of it is not stored) only when the store has seen it: it
        holds annotations of it or served it a pre-label. Unknown ids change nothing.
        """
        ids = list(dict.fromkeys(parse_id(i, "task id") for i in task_ids))
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                rows = self._existing("SELECT annotation_id, task_id FROM annotations WHERE task_id IN ({})", ids)
                gone = [r[0] for r in rows]
                seen = {r[1] for r in rows}
                seen |= {r[0] for r in self._existing("SELECT DISTINCT task_id FROM prelabels WHERE task_id IN ({})", ids)}
                for start in range(0, len(gone), _CHUNK):
                    chunk = gone[start:start + _CHUNK]
                    self._conn.execute(f"DELETE FROM annotations WHERE annotation_id IN ({','.join('?' * len(chunk))})",
                                       chunk)
                self._bury("annotation", gone)
                self._bury("task", [i for i in ids if i in seen])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return len(gone)

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0])

    def last_seq(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key='seq'").fetchone()
        return int(row[0]) if row else 0

    def digest(self) -> str:
        """A fingerprint of the stored annotations (ids and write sequence numbers): it changes when one is stored,
        updated or deleted, and only then, so a retrain can tell that nothing new arrived since the last one."""
        import hashlib

        with self._lock:
            rows = self._conn.execute("SELECT annotation_id, seq FROM annotations ORDER BY annotation_id").fetchall()
        h = hashlib.sha256()
        for aid, seq in rows:
            h.update(f"{aid}:{seq};".encode())
        return f"{len(rows)}-{h.hexdigest()[:16]}"

    def get_meta(self, key: str) -> Optional[str]:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def count_meta(self, prefix: str) -> int:
        """How many meta keys start with ``prefix`` (e.g. the labeling configs kept per project)."""
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*) FROM meta WHERE key >= ? AND key < ?", (prefix, prefix + "\uffff")).fetchone()
        return int(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def record_prelabel(self, project: Any, task_id: Any, model_version: str, score: float,
                        features: dict[str, float], mask_rle: dict[str, Any]) -> None:
        """Keep the pre-label served for a task beside its future correction (the latest served one wins).

        A task that already has an annotation keeps the pre-label it was corrected from: a re-prediction after
        the correction would pair the correction with a mask nobody corrected.
        """
        tid = parse_id(task_id, "task id")
        key = "" if project is None else str(project)
        with self._lock:
            corrected = self._conn.execute(
                "SELECT 1 FROM annotations WHERE task_id=? AND coalesce(project, '')=?", (tid, key)).fetchone()
            if corrected is not None and self._conn.execute(
                    "SELECT 1 FROM prelabels WHERE project=? AND task_id=?", (key, tid)).fetchone() is not None:
                return
            self._conn.execute(
                "INSERT OR REPLACE INTO prelabels(project, task_id, model_version, score, features, mask, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, tid, str(model_version), float(score), json.dumps(features), json.dumps(mask_rle), time.time()),
            )

    def prelabels(self) -> dict[tuple[Optional[str], int], StoredPrelabel]:
        """Every kept pre-label by (project, task id)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT project, task_id, model_version, score, features, mask FROM prelabels").fetchall()
        out = {}
        for proj, tid, version, score, feats, mask in rows:
            project = proj or None
            out[(project, int(tid))] = StoredPrelabel(project, int(tid), version, float(score), json.loads(feats),
                                                      json.loads(mask))
        return out

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
