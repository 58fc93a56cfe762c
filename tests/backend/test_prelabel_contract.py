"""Bulk pre-labelling into a project, without a Label Studio server: a stand-in project records what the job
imports (as ``LiveProjectTasks.store`` would send it with ``import_predictions``). The promise: every task gets
exactly one prediction of the served model version -- no prediction is imported twice, however many batches the
run stores, and a task the project already holds a prediction of that version for is not predicted again."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from annotate.synthetic import make_scene
from backend.config import Settings
from backend.prelabel.checkpoint import Checkpoint
from backend.prelabel.executors import InProcessExecutor
from backend.prelabel.job import run_prelabel
from backend.prelabel.sources import TaskFile, default_label_config
from backend.prelabel.worker import WorkerSpec
from tests.support.scenes import write_png


class RecordingProject(TaskFile):
    """A project's tasks (with their existing predictions) that records every prediction imported into it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.imported: list[tuple[str, str]] = []

    def store(self, outcomes) -> None:
        self.imported += [(o.key, o.prediction["model_version"]) for o in outcomes if o.prediction is not None]


@pytest.fixture()
def executor(tmp_path):
    root = tmp_path / "files"
    spec = WorkerSpec(settings=Settings(local_files_root=str(root)), label_config=default_label_config())
    ex = InProcessExecutor(spec)
    yield ex, root
    ex.close()


def _tasks(root: Path, path: Path, version: str, existing: dict[int, str]) -> list[dict]:
    tasks = []
    for seed in range(2):
        scene = make_scene(seed=seed, height=96, width=96, n_objects=3)
        write_png(root / "img" / f"s{seed}.png", scene.image)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            tid = 100 + len(tasks)
            task = {"id": tid, "data": {"image": f"/data/local-files/?d=img/s{seed}.png", "expression": obj.expression,
                                        "bbox": [x0, y0, x1 - x0, y1 - y0]}}
            if tid in existing:
                task["predictions"] = [{"model_version": existing[tid], "result": []}]
            tasks.append(task)
    path.write_text(json.dumps(tasks))
    return tasks


def test_every_prediction_is_imported_once_across_many_stored_batches(tmp_path, executor):
    ex, root = executor
    version = ex.model_version()
    tasks = _tasks(root, tmp_path / "tasks.json", version, {})
    project = RecordingProject(tmp_path / "tasks.json")
    report = run_prelabel(project, ex, Checkpoint(tmp_path / "cp.jsonl"), chunk_size=2, store_every=2)
    assert report.errors == [] and report.predicted == len(tasks)
    counts = Counter(key for key, _ in project.imported)
    assert counts == Counter({str(t["id"]): 1 for t in tasks})
    assert {v for _, v in project.imported} == {version}


def test_tasks_with_a_prediction_of_the_served_version_are_not_predicted_again(tmp_path, executor):
    ex, root = executor
    version = ex.model_version()
    # 100 and 103 already hold this version's prediction (e.g. an earlier run killed before its checkpoint);
    # 101 holds an older version's: it is stale and gets a new one
    tasks = _tasks(root, tmp_path / "tasks.json", version, {100: version, 103: version, 101: "pslg:older"})
    project = RecordingProject(tmp_path / "tasks.json")
    report = run_prelabel(project, ex, Checkpoint(tmp_path / "cp.jsonl"), chunk_size=2, store_every=2)
    assert report.skipped == 2 and report.predicted == len(tasks) - 2
    imported = Counter(key for key, _ in project.imported)
    assert "100" not in imported and "103" not in imported
    assert imported == Counter({str(t["id"]): 1 for t in tasks if t["id"] not in (100, 103)})
    # a rerun finds everything done: nothing is imported again
    again = RecordingProject(tmp_path / "tasks.json")
    rerun = run_prelabel(again, ex, Checkpoint(tmp_path / "cp.jsonl"), chunk_size=2, store_every=2)
    assert again.imported == [] and rerun.skipped == len(tasks)
