"""Issue 17 item 4, end to end: with Basic auth on, Label Studio 1.23 sends the webhook it creates for the backend
without the credentials, so nothing was learned; with PSLG_WEBHOOK_SECRET and the header added to that webhook in
Label Studio, corrections reach the training store again."""

from __future__ import annotations

import sqlite3
import time

import pytest
import requests

from annotate.synthetic import make_scene
from converters.labelstudio.brush import brush_rle_encode
from tests.support.e2e import make_project, start_backend

pytestmark = pytest.mark.e2e
SECRET = "e2e-webhook-secret"


def _annotate(ls, task: dict, obj) -> int:
    h, w = obj.mask.shape
    region = {"id": "r1", "type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": w,
              "original_height": h, "image_rotation": 0,
              "value": {"format": "rle", "rle": brush_rle_encode(obj.mask), "brushlabels": [obj.category]}}
    return int(ls.api("POST", f"/api/tasks/{task['id']}/annotations", kind="pat", json={"result": [region]}).json()["id"])


def _stored(backend, annotation_id: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(str(backend.model_dir / "training.sqlite3")) as conn:
            if conn.execute("SELECT 1 FROM annotations WHERE annotation_id=?", (annotation_id,)).fetchone():
                return True
        time.sleep(0.3)
    return False


def test_basic_auth_keeps_learning_on_with_the_webhook_secret(labelstudio_server, tmp_path_factory):
    ls = labelstudio_server
    scene = make_scene(seed=5, height=128, width=160, n_objects=2)
    auth = ("ls-user", "ls-pass")
    backend = start_backend(tmp_path_factory.mktemp("backend-secret"), {
        "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.pat, "BASIC_AUTH_USER": auth[0],
        "BASIC_AUTH_PASS": auth[1], "PSLG_WEBHOOK_SECRET": SECRET}, auth=auth)
    try:
        project_id, tasks = make_project(ls, "e2e-webhook-secret", scene, "pat")
        ls.api("POST", "/api/ml", kind="pat", json={"url": backend.url, "project": project_id, "title": "pslg",
                                                    "auth_method": "BASIC_AUTH", "basic_auth_user": auth[0],
                                                    "basic_auth_pass": auth[1]})
        hooks = ls.api("GET", f"/api/webhooks?project={project_id}", kind="pat").json()
        [hook] = [h for h in hooks if h["url"].rstrip("/").endswith("/webhook")]

        # what Label Studio does by itself: its webhook carries no credentials and is refused
        first = _annotate(ls, tasks[0], scene.objects[0])
        assert not _stored(backend, first, 10)
        health = requests.get(f"{backend.url}/health", auth=auth, timeout=10).json()
        assert health.get("webhooks_refused", 0) >= 1, health

        # the documented step: add the secret header to that webhook in Label Studio
        ls.api("PATCH", f"/api/webhooks/{hook['id']}", kind="pat", json={"headers": {"X-PSLG-Webhook-Secret": SECRET}})
        second = _annotate(ls, tasks[1], scene.objects[1])
        assert _stored(backend, second, 30), backend.log.read_text()[-2000:]
    finally:
        backend.stop()
