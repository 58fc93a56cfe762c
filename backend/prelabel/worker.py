"""One loaded pipeline answering chunks of tasks with the backend's own prediction code.

A ``PrelabelWorker`` lives once per process (local worker processes) or per Ray actor: the models are
loaded once, images are fetched by the worker itself (from Label Studio with the token, or from local files),
and each chunk goes through ``PSLGModel._predict_batch`` — the same function the backend's batch ``/predict``
runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from backend.config import Settings


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to build itself (picklable: sent to worker processes and Ray actors)."""

    settings: Settings
    label_config: str
    project: Optional[str] = None


@dataclass
class Outcome:
    """The answer for one task: a prediction, or the reason there is none."""

    key: str
    task_id: Optional[int]
    prediction: Optional[dict[str, Any]] = None
    error: Optional[str] = None
    #: how the task got its label: (``name`` | ``map`` | ``none`` | ``unmatched``, its category or None)
    labelled: Optional[tuple[str, Optional[str]]] = None


def quiet_task_warnings() -> None:
    """A bulk job reports each failed task once, in its summary: the model's per-task warnings (which an
    unconfigured ``logging`` prints to stderr too, as "task None: ...") are not repeated. Called by the CLI
    process and by each worker process, never by a library user's process."""
    import logging

    logger = logging.getLogger("pslg.backend.model")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False


class PrelabelWorker:
    """The engine, image fetching and ``PSLGModel`` of one worker: the ``runtime`` ``PSLGModel`` expects, without
    the backend's training store and trainer (a bulk job learns nothing; corrections reach the backend)."""

    def __init__(self, spec: WorkerSpec) -> None:
        from backend.engine import Engine
        from backend.model import PSLGModel

        # one process per worker: the engine must not start its own pool of processes inside it
        self.settings = dataclasses.replace(spec.settings, workers=1)
        self.engine = Engine(self.settings).start()
        if not self.engine.wait_ready():
            raise RuntimeError(f"the models failed to load: {self.engine.error}")
        from backend.runtime import build_fetcher

        self._fetcher = build_fetcher(self.settings, self.credentials())
        self.model = PSLGModel(self, project_id=spec.project, label_config=spec.label_config)

    def credentials(self, project: Optional[str] = None) -> Optional[tuple[str, str]]:
        """(Label Studio URL, token) from the command line or environment, or None."""
        s = self.settings
        return (s.label_studio_url, s.label_studio_api_key) if s.label_studio_url and s.label_studio_api_key else None

    def fetcher(self, project: Optional[str] = None):
        return self._fetcher

    @property
    def model_version(self) -> str:
        return self.engine.model_version

    def load_image(self, url: str, project: Optional[str] = None):
        """Decoded pixels of a task image (a chunk groups the tasks of one image, so no cache is needed)."""
        from annotate.image_io import load_image
        from converters.labelstudio.fetch import display_url

        return load_image(self._fetcher.fetch(url), name=display_url(url), max_pixels=self.settings.max_pixels)

    def predict(self, chunk: list[tuple[str, dict]]) -> list[Outcome]:
        """Outcomes for ``(key, task)`` pairs, in order."""
        tasks = [task for _, task in chunk]
        errors: dict[int, str] = {}
        predictions = self.model._predict_batch(tasks, errors=errors)
        how = self.model.last_label_how
        out = []
        for i, ((key, task), prediction) in enumerate(zip(chunk, predictions)):
            task_id = task.get("id")
            if i in errors:
                out.append(Outcome(key, task_id, error=errors[i], labelled=how.get(i)))
            else:
                out.append(Outcome(key, task_id, prediction=prediction, labelled=how.get(i)))
        return out
