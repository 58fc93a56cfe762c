"""Where tasks come from and where predictions go: a Label Studio tasks JSON file, or a live project.

A live project is read and written through label-studio-sdk only: tasks (with the model versions of their
existing predictions) from ``tasks.list``, predictions stored in bulk with ``projects.import_predictions``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from backend.prelabel.worker import Outcome


def default_label_config() -> str:
    """The labeling config the converters ship for one expression per task."""
    return resources.files("converters").joinpath("configs/rrsis_expression_per_task.xml").read_text()


def _versions(task: dict) -> set[str]:
    return {str(p.get("model_version")) for p in task.get("predictions") or [] if isinstance(p, dict)}


class TaskFile:
    """A Label Studio tasks JSON (a list of tasks, ``{"data": {...}}`` or bare data dicts) and its output file."""

    def __init__(self, path: Path, label_config: Optional[str] = None) -> None:
        self.path = Path(path)
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"tasks file {self.path}: cannot read it as JSON ({exc})") from None
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list):
            raise ValueError(f"tasks file {self.path}: expected a list of tasks, got {type(raw).__name__}")
        self.tasks: list[dict] = [t if isinstance(t, dict) and "data" in t else {"data": t} for t in raw]
        self._config = label_config

    def label_config(self) -> str:
        return self._config or default_label_config()

    def keys(self) -> list[str]:
        """Task ids where the file has them, else ``#<position>`` (stable for the same file)."""
        return [str(t["id"]) if t.get("id") is not None else f"#{i}" for i, t in enumerate(self.tasks)]

    def iter_tasks(self) -> Iterator[tuple[str, dict, set[str]]]:
        for key, task in zip(self.keys(), self.tasks):
            yield key, task, _versions(task)

    def seen_tasks(self) -> list[tuple[str, dict]]:
        """``(key, task)`` of every task the output will hold."""
        return list(zip(self.keys(), self.tasks))

    def describe(self, key: str) -> str:
        """How a message names a task: its id and its position in the file (``task 17 (#3)``, ``task #3``)."""
        if key.startswith("#"):
            return f"task {key}"
        position = next((i for i, k in enumerate(self.keys()) if k == key), None)
        return f"task {key} (#{position})" if position is not None else f"task {key}"

    def store(self, outcomes: Sequence[Outcome]) -> None:
        """Predictions of a file job live in the checkpoint until :meth:`write_output` assembles them."""

    def write_output(self, out: Path, predictions: dict[str, dict[str, Any]]) -> int:
        return write_tasks_with_predictions(zip(self.keys(), self.tasks), predictions, out)


def write_tasks_with_predictions(tasks: Iterable[tuple[str, dict]], predictions: dict[str, dict[str, Any]],
                                 out: Path) -> int:
    """Write the tasks with their new predictions (importable into Label Studio) atomically; how many got one.

    A task's earlier prediction of the same ``model_version`` is replaced, never doubled.
    """
    from annotate.atomic import atomic_write_text

    written = 0
    rows = []
    for key, task in tasks:
        task = dict(task)
        prediction = predictions.get(key)
        if prediction is not None:
            version = prediction.get("model_version")
            kept = [p for p in task.get("predictions") or [] if p.get("model_version") != version]
            task["predictions"] = kept + [prediction]
            written += 1
        rows.append(task)
    atomic_write_text(out, json.dumps(rows))
    return written


class LiveProjectTasks:
    """A Label Studio project through label-studio-sdk; the token is never put in messages."""

    PAGE_SIZE = 500

    def __init__(self, url: str, token: str, project: int, post: bool = True) -> None:
        from label_studio_sdk import LabelStudio

        self.url = url.rstrip("/")
        self.project = int(project)
        self.post = post  # False: predictions go to a tasks file (``write_output``), not into the project
        self._client = LabelStudio(base_url=self.url, api_key=token)
        self._seen: list[tuple[str, dict]] = []

    def label_config(self) -> str:
        return str(self._client.projects.get(id=self.project).label_config)

    def iter_tasks(self) -> Iterator[tuple[str, dict, set[str]]]:
        """``(task id, task, model versions of its predictions)`` for every task of the project."""
        pager = self._client.tasks.list(project=self.project, page_size=self.PAGE_SIZE, fields="all",
                                        include="id,data,predictions")
        for item in pager:
            task = item.dict() if hasattr(item, "dict") else dict(item)
            versions = _versions(task)
            raw = task.get("predictions_model_versions")
            if isinstance(raw, str):
                versions |= {v.strip() for v in raw.split(",") if v.strip()}
            elif isinstance(raw, list):
                versions |= {str(v) for v in raw}
            key, slim = str(task["id"]), {"id": task["id"], "data": task.get("data") or {}}
            if not self.post:
                self._seen.append((key, slim))
            yield key, slim, versions

    def store(self, outcomes: Sequence[Outcome]) -> None:
        """Import the predictions of ``outcomes`` in one request."""
        from label_studio_sdk import PredictionRequest

        if not self.post:
            return

        request = [PredictionRequest(task=int(o.task_id), result=o.prediction["result"],  # type: ignore[index,arg-type]
                                     score=o.prediction.get("score"), model_version=o.prediction.get("model_version"))
                   for o in outcomes if o.prediction is not None]
        if request:
            self._client.projects.import_predictions(id=self.project, request=request)

    def seen_tasks(self) -> list[tuple[str, dict]]:
        return list(self._seen)

    def describe(self, key: str) -> str:
        return f"task {key}"

    def write_output(self, out: Path, predictions: dict[str, dict[str, Any]]) -> int:
        return write_tasks_with_predictions(self._seen, predictions, out)
