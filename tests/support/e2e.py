"""Helpers of the end-to-end tests: `pslg serve` as a real process, projects on the real Label Studio server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import requests

from tests.support.scenes import write_png
from tests.support.labelstudio_server import REPO_ROOT, LabelStudioServer, free_port

# the labeling config the converters ship for one expression per task (what users paste into Label Studio)
CONFIG = (REPO_ROOT / "converters" / "configs" / "rrsis_expression_per_task.xml").read_text()


class Backend:
    def __init__(self, url: str, proc: subprocess.Popen, model_dir: Path, log: Path) -> None:
        self.url, self.proc, self.model_dir, self.log = url, proc, model_dir, log

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def start_backend(tmp: Path, env_extra: dict[str, str], auth: Optional[tuple[str, str]] = None) -> Backend:
    """`pslg serve` (gunicorn, 1 worker) on a free port, waiting until /health says the models are ready
    (asked with ``auth``, the Basic-auth user and password, when the backend requires them)."""
    port = free_port()
    model_dir = tmp / "model"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "PSLG_SAM", "PSLG_GROUNDING", "BASIC_AUTH"))}
    env.update({"MODEL_DIR": str(model_dir), "PYTHONPATH": str(REPO_ROOT), **env_extra})
    log = tmp / "backend.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "converters.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", "4"],
        cwd=str(REPO_ROOT), env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    backend = Backend(f"http://127.0.0.1:{port}", proc, model_dir, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"pslg serve exited: {log.read_text()[-3000:]}")
        try:
            if requests.get(f"{backend.url}/health", timeout=2, auth=auth).json().get("ready"):
                return backend
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.3)
    backend.stop()
    raise AssertionError(f"pslg serve did not become ready: {log.read_text()[-3000:]}")


def make_project(ls: LabelStudioServer, name: str, scene, kind: str, config: str = CONFIG) -> tuple[int, list[dict]]:
    """A project with our config and one task per scene object, its image served by Label Studio local files."""
    project = ls.api("POST", "/api/projects", kind=kind, json={"title": name, "label_config": config}).json()
    folder = ls.local_files_dir(name)
    image = write_png(folder / "scene.png", scene.image)
    ls.connect_local_storage(project["id"], folder)
    tasks = [{"image": ls.local_file_url(image), "expression": o.expression,
              "bbox": [o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1]]} for o in scene.objects]
    ls.api("POST", f"/api/projects/{project['id']}/import", kind=kind, json=tasks)
    listed = ls.api("GET", f"/api/tasks?project={project['id']}&page_size=100", kind=kind).json()
    listed = listed["tasks"] if isinstance(listed, dict) else listed
    return project["id"], sorted(listed, key=lambda t: t["id"])


def connect(ls: LabelStudioServer, backend: Backend, project_id: int, kind: str) -> int:
    ml = ls.api("POST", "/api/ml", kind=kind, json={"url": backend.url, "project": project_id, "is_interactive": True,
                                                   "title": "pslg"}).json()
    return int(ml["id"])


def batch_predict(ls: LabelStudioServer, project_id: int, kind: str) -> None:
    ls.api("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project_id}", kind=kind,
           json={"selectedItems": {"all": True, "excluded": []}})


def predictions_of(ls: LabelStudioServer, task_id: int, kind: str) -> list[dict]:
    return ls.api("GET", f"/api/predictions?task={task_id}", kind=kind).json()


def wait_for(predicate, timeout: float, what: str, backend: Optional[Backend] = None, interval: float = 0.5):
    """The first truthy ``predicate()`` within ``timeout`` s; else fail naming ``what`` (with the backend's log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    log = f"; backend log:\n{backend.log.read_text()[-3000:]}" if backend is not None else ""
    raise AssertionError(f"timed out waiting for {what}{log}")
