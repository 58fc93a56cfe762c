"""`pslg prelabel` against the real Label Studio server: 200 tasks, SIGKILL midway, resume, one prediction each."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from annotate.synthetic import make_scene
from tests.support.scenes import write_png
from tests.support.e2e import CONFIG
from tests.support.labelstudio_server import REPO_ROOT

N_IMAGES, TASKS_PER_IMAGE, SIZE = 20, 10, 96


def _project(ls, name: str) -> tuple[int, list[int]]:
    project = ls.api("POST", "/api/projects", kind="pat", json={"title": name, "label_config": CONFIG}).json()
    folder = ls.local_files_dir(name)
    tasks = []
    for i in range(N_IMAGES):
        scene = make_scene(seed=i, height=SIZE, width=SIZE, n_objects=2)
        image = write_png(folder / f"s{i}.png", scene.image)
        for j in range(TASKS_PER_IMAGE):
            obj = scene.objects[j % len(scene.objects)]
            x0, y0, x1, y1 = obj.box
            tasks.append({"image": ls.local_file_url(image), "expression": obj.expression,
                          "bbox": [x0, y0, x1 - x0, y1 - y0]})
    ls.connect_local_storage(project["id"], folder)
    ls.api("POST", f"/api/projects/{project['id']}/import", kind="pat", json=tasks)
    listed = ls.api("GET", f"/api/tasks?project={project['id']}&page_size=1000", kind="pat").json()
    listed = listed["tasks"] if isinstance(listed, dict) else listed
    return project["id"], [t["id"] for t in listed]


def _prelabel(ls, project: int, checkpoint: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "PSLG_"))}
    env.update({"PYTHONPATH": str(REPO_ROOT), "LABEL_STUDIO_API_KEY": ls.pat, "COLUMNS": "200"})
    return subprocess.Popen(
        [sys.executable, "-m", "converters.cli.main", "prelabel", "--url", ls.url, "--project", str(project),
         "--progress-file", str(checkpoint), "--chunk-size", "5", "--batch-size", "10"],
        cwd=str(REPO_ROOT), env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _predictions_per_task(ls, project: int) -> collections.Counter:
    preds = ls.api("GET", f"/api/predictions?project={project}", kind="pat").json()
    return collections.Counter(p["task"] for p in preds)


@pytest.mark.e2e
def test_killed_prelabel_resumes_with_exactly_one_prediction_per_task(labelstudio_server, tmp_path):
    ls = labelstudio_server
    project, task_ids = _project(ls, "prelabel-kill")
    assert len(task_ids) == N_IMAGES * TASKS_PER_IMAGE == 200
    checkpoint, log = tmp_path / "progress.jsonl", tmp_path / "prelabel.log"

    proc = _prelabel(ls, project, checkpoint, log)
    deadline = time.monotonic() + 120
    while _lines(checkpoint) < 40 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    recorded = _lines(checkpoint)
    assert 40 <= recorded < 200, f"the run was not killed midway ({recorded} recorded): {log.read_text()[-2000:]}"
    killed_progress = checkpoint.read_text().splitlines()
    midway = _predictions_per_task(ls, project)
    assert recorded <= sum(midway.values()) < 200 and max(midway.values()) == 1

    resumed = _prelabel(ls, project, checkpoint, log)
    assert resumed.wait(180) == 0, log.read_text()[-3000:]
    assert f"{200 - sum(midway.values())} predicted" in log.read_text()
    counts = _predictions_per_task(ls, project)
    assert sorted(counts) == sorted(task_ids) and set(counts.values()) == {1}
    assert not checkpoint.exists()  # every task done: the progress file is removed

    # a crash between importing predictions and recording them: the project's model versions still prevent doubles
    checkpoint.write_text("\n".join(killed_progress[:40]) + "\n")
    again = _prelabel(ls, project, checkpoint, log)
    assert again.wait(120) == 0, log.read_text()[-3000:]
    assert "0 predicted, 200 already up to date" in log.read_text()
    assert set(_predictions_per_task(ls, project).values()) == {1}

    versions = {p["model_version"] for p in ls.api("GET", f"/api/predictions?project={project}", kind="pat").json()}
    assert len(versions) == 1 and next(iter(versions)).startswith("pslg:")
    regions = ls.api("GET", f"/api/predictions?task={task_ids[0]}", kind="pat").json()[0]["result"]
    assert any(r["type"] == "brushlabels" and r["value"]["rle"] for r in regions)
