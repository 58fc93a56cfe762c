"""End to end against a real Label Studio 1.23 server (tests/support/labelstudio_server.py) and `pslg serve` (gunicorn).

What this proves, in Label Studio's own terms: a project with our labeling config, tasks whose images Label
Studio serves (local-files storage, token-protected), our backend connected through the API, batch predictions
triggered by the data-manager action and stored by Label Studio with our labels, scores and model_version, masks
whose decoded brush RLE matches the known masks, an interactive call through Label Studio's
interactive-annotating endpoint, an image uploaded to Label Studio (``/data/upload``) with the per-region
expression config, both token kinds (a personal access token for one backend, a legacy token for
the other), and an annotation created in Label Studio reaching our /webhook and training store. Start Training
and model versions are proven in test_model_versions.py.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Iterator

import numpy as np
import pytest

from converters.labelstudio.brush import brush_rle_decode, brush_rle_encode
from annotate.metrics import iou
from annotate.synthetic import make_scene
from tests.support.e2e import Backend, batch_predict, connect, make_project, predictions_of, start_backend
from tests.support.labelstudio_server import REPO_ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def scene():
    return make_scene(seed=11, height=192, width=224, n_objects=4)


@pytest.fixture(scope="module")
def backends(labelstudio_server, tmp_path_factory) -> Iterator[dict[str, Backend]]:
    ls = labelstudio_server
    pat = start_backend(tmp_path_factory.mktemp("backend-pat"), {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.pat})
    legacy = start_backend(tmp_path_factory.mktemp("backend-legacy"),
                           {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.legacy_token})
    yield {"pat": pat, "legacy": legacy}
    pat.stop()
    legacy.stop()


def _check_predictions(ls, tasks, scene, kind) -> list[dict]:
    preds = []
    for task, obj in zip(tasks, scene.objects):
        [pred] = predictions_of(ls, task["id"], kind)
        brushes = [r for r in pred["result"] if r["type"] == "brushlabels"]
        assert len(brushes) == 1, pred
        brush = brushes[0]
        assert (brush["from_name"], brush["to_name"]) == ("tag", "image")
        assert brush["value"]["brushlabels"] == [obj.category]
        rect = next(r for r in pred["result"] if r["type"] == "rectanglelabels")
        assert rect["value"]["rectanglelabels"] == [obj.category]
        mask = brush_rle_decode(brush["value"]["rle"], brush["original_height"], brush["original_width"])
        assert iou(mask, obj.mask) > 0.6, (task["id"], iou(mask, obj.mask))
        assert pred["model_version"].startswith("pslg:") and 0.0 < pred["score"] <= 1.0
        preds.append(pred)
    return preds


@pytest.mark.parametrize("kind", ["pat", "legacy"])
def test_batch_prelabels_through_label_studio(labelstudio_server, backends, scene, kind):
    """Each token kind: the backend fetches Label Studio-served images with it and pre-labels every task."""
    ls = labelstudio_server
    project_id, tasks = make_project(ls, f"e2e-{kind}", scene, kind)
    connect(ls, backends[kind], project_id, kind)
    batch_predict(ls, project_id, kind)
    preds = _check_predictions(ls, tasks, scene, kind)
    assert len({p["model_version"] for p in preds}) == 1
    secret = ls.pat if kind == "pat" else ls.legacy_token
    assert secret not in backends[kind].log.read_text(errors="replace"), "the API key leaked into the backend log"


def test_interactive_and_webhook(labelstudio_server, backends, scene):
    ls = labelstudio_server
    backend = backends["pat"]
    project_id, tasks = make_project(ls, "e2e-interactive", scene, "pat")
    ml_id = connect(ls, backend, project_id, "pat")
    obj, task = scene.objects[1], tasks[1]
    h, w = obj.mask.shape
    x0, y0, x1, y1 = obj.box
    context = {"result": [{
        "type": "rectanglelabels", "from_name": "box", "to_name": "image", "original_width": w, "original_height": h,
        "value": {"x": 100 * x0 / w, "y": 100 * y0 / h, "width": 100 * (x1 - x0) / w, "height": 100 * (y1 - y0) / h,
                  "rectanglelabels": [obj.category]}}]}
    answer = ls.api("POST", f"/api/ml/{ml_id}/interactive-annotating", kind="pat",
                    json={"task": task["id"], "context": context}).json()
    assert "errors" not in answer, answer
    result = answer["data"]["result"]
    brush = next(r for r in result if r["type"] == "brushlabels")
    assert iou(brush_rle_decode(brush["value"]["rle"], h, w), obj.mask) > 0.6

    # an annotation made in Label Studio reaches /webhook (auto-created when the backend was connected)
    region = {"id": "r1", "type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": w,
              "original_height": h, "image_rotation": 0,
              "value": {"format": "rle", "rle": brush_rle_encode(obj.mask), "brushlabels": [obj.category]}}
    created = ls.api("POST", f"/api/tasks/{task['id']}/annotations", kind="pat", json={"result": [region]}).json()
    db = backend.model_dir / "training.sqlite3"
    deadline = time.monotonic() + 30
    rows: list = []
    while time.monotonic() < deadline and not rows:
        with sqlite3.connect(str(db)) as conn:
            rows = conn.execute("SELECT annotation_id, task_id, annotation FROM annotations WHERE annotation_id=?",
                                (created["id"],)).fetchall()
        time.sleep(0.3)
    assert rows, f"annotation {created['id']} never reached /webhook; backend log:\n{backend.log.read_text()[-2000:]}"
    assert rows[0][1] == task["id"]
    import json

    stored = json.loads(rows[0][2])
    stored_mask = brush_rle_decode(stored["result"][0]["value"]["rle"], h, w)
    assert np.array_equal(stored_mask, obj.mask)


def test_uploaded_images_with_the_per_region_config(labelstudio_server, backends, scene, tmp_path):
    """An image uploaded to Label Studio (/data/upload/..., token-protected) and the per-region expression config."""
    import cv2

    ls = labelstudio_server
    config = (REPO_ROOT / "converters" / "configs" / "expressions_per_region.xml").read_text()
    project = ls.api("POST", "/api/projects", kind="pat", json={"title": "e2e-upload", "label_config": config}).json()
    ok, png = cv2.imencode(".png", cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    assert ok
    ls.api("POST", f"/api/projects/{project['id']}/import", kind="pat",
           files={"file": ("scene.png", png.tobytes(), "image/png")})
    [uploaded] = ls.api("GET", f"/api/tasks?project={project['id']}", kind="pat").json()["tasks"]
    url = uploaded["data"]["image"]
    assert url.startswith("/data/upload/")
    # the uploaded task gets its expression and box; one more task reuses the uploaded image
    objs = scene.objects[:2]

    def data(o):
        return {"image": url, "expression": o.expression, "bbox": [o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1]]}

    ls.api("PATCH", f"/api/tasks/{uploaded['id']}", kind="pat", json={"data": data(objs[0])})
    ls.api("POST", f"/api/projects/{project['id']}/import", kind="pat", json=[data(objs[1])])
    tasks = sorted(ls.api("GET", f"/api/tasks?project={project['id']}", kind="pat").json()["tasks"], key=lambda t: t["id"])
    connect(ls, backends["pat"], project["id"], "pat")
    batch_predict(ls, project["id"], "pat")
    for task, obj in zip(tasks, objs):
        [pred] = predictions_of(ls, task["id"], "pat")
        brush = next(r for r in pred["result"] if r["type"] == "brushlabels")
        mask = brush_rle_decode(brush["value"]["rle"], brush["original_height"], brush["original_width"])
        assert iou(mask, obj.mask) > 0.6 and brush["value"]["brushlabels"] == [obj.category]
        echo = next(r for r in pred["result"] if r["type"] == "textarea")
        assert echo["id"] == brush["id"] and echo["value"]["text"] == [obj.expression]
