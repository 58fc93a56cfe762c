"""The pre-labelling loop: pick the stale tasks, run them in chunks, store predictions, record progress.

Order of operations per batch (what makes a rerun safe): predictions are stored first (imported into the
project, or kept in the checkpoint for a tasks file), then the checkpoint records the tasks as done with the
``model_version``. A run killed between the two leaves predictions the checkpoint does not know; the rerun
still skips those tasks because the project reports a prediction of the current ``model_version`` for them.
So no task ever gets two predictions of one model version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from backend.prelabel.checkpoint import Checkpoint, task_digest
from converters.labelstudio.labels import LabelTally
from backend.prelabel.executors import Chunk, Executor
from backend.prelabel.worker import Outcome

#: Called with (finished, total) after each chunk; ``total`` is the number of tasks to predict in this run.
Progress = Callable[[int, int], None]


@dataclass
class PrelabelReport:
    model_version: str
    total: int = 0
    skipped: int = 0
    predicted: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    labels: LabelTally = field(default_factory=LabelTally)
    #: every stale task was attempted (no --limit cut the run short)
    complete: bool = True
    startup_seconds: float = 0.0  # workers started and models loaded
    seconds: float = 0.0  # from then to the last prediction stored

    @property
    def tasks_per_second(self) -> float:
        return self.predicted / self.seconds if self.seconds > 0 else 0.0


def make_chunks(todo: list[tuple[str, dict]], chunk_size: int, image_key: str = "image") -> Iterator[Chunk]:
    """Chunks of at most ``chunk_size`` tasks that never split one image's tasks unless they alone exceed it.

    The tasks of one image in one chunk share one image fetch and one ``set_image`` (for SAM: one encoder
    pass); split across chunks they would pay both again, possibly in another worker.
    """
    by_image: dict[str, list[tuple[str, dict]]] = {}
    for key, task in todo:
        by_image.setdefault(str((task.get("data") or {}).get(image_key)), []).append((key, task))
    chunk: Chunk = []
    for group in by_image.values():
        if chunk and len(chunk) + len(group) > chunk_size:
            yield chunk
            chunk = []
        for start in range(0, len(group), chunk_size):
            part = group[start:start + chunk_size]
            if len(part) == chunk_size:
                yield part
            else:
                chunk.extend(part)
    if chunk:
        yield chunk


def run_prelabel(source: Any, executor: Executor, checkpoint: Checkpoint, *, image_key: str = "image", chunk_size: int = 8,
                 store_every: int = 64, keep_predictions: bool = False, limit: Optional[int] = None,
                 progress: Optional[Progress] = None) -> PrelabelReport:
    """Predict every task of ``source`` that has no prediction of the executor's model version yet.

    ``keep_predictions`` stores each prediction in the checkpoint (a tasks-file job assembles its output from
    it); ``store_every`` is how many predictions are imported into a project per request; ``limit`` stops
    after that many tasks (a trial run on part of a project).
    """
    t0 = time.perf_counter()
    version = executor.model_version()
    report = PrelabelReport(model_version=version, startup_seconds=time.perf_counter() - t0)
    t0 = time.perf_counter()
    records = checkpoint.load()
    digests: dict[str, str] = {}
    todo: list[tuple[str, dict]] = []
    for key, task, versions in source.iter_tasks():
        report.total += 1
        digests[key] = digest = task_digest(task)
        rec = records.get(key)
        if version in versions or (rec is not None and rec.get("model_version") == version
                                   and rec.get("digest") == digest):
            report.skipped += 1
        else:
            todo.append((key, task))
    if limit is not None and len(todo) > limit:
        todo = todo[:limit]
        report.complete = False
    pending: list[Outcome] = []

    def flush() -> None:
        if not pending:
            return
        source.store(pending)
        checkpoint.append({"task": o.key, "digest": digests.get(o.key), "model_version": version,
                           **({"prediction": o.prediction} if keep_predictions else {})} for o in pending)
        report.predicted += len(pending)
        pending.clear()

    finished = 0
    if progress:
        progress(0, len(todo))
    try:
        for outcomes in executor.results(make_chunks(todo, chunk_size, image_key)):
            for outcome in outcomes:
                if outcome.labelled is not None:
                    report.labels.add(*outcome.labelled)
                if outcome.error is not None:
                    report.errors.append((outcome.key, outcome.error))
                else:
                    pending.append(outcome)
            if len(pending) >= store_every:
                flush()
            finished += len(outcomes)
            if progress:
                progress(finished, len(todo))
    finally:
        # also on Ctrl-C: what is computed is stored and recorded, so the rerun starts after it
        flush()
        report.seconds = time.perf_counter() - t0
    return report


def assemble_output(source: Any, checkpoint: Checkpoint, out: Path) -> int:
    """Write a tasks file's output from the predictions recorded in its checkpoint (all model versions), each
    only onto the task it was made for (same key and same data digest)."""
    current = {key: task_digest(task) for key, task in source.seen_tasks()}
    predictions = {key: rec["prediction"] for key, rec in checkpoint.load().items()
                   if "prediction" in rec and key in current and rec.get("digest") == current[key]}
    return source.write_output(out, predictions)
