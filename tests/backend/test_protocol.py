"""The ML-backend wire protocol through Flask's test client: shapes, one result per task, errors, auth."""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from converters.labelstudio.brush import brush_rle_decode
from annotate.metrics import iou
from backend.app import create_app
from backend.config import Settings
from backend.engine import Engine
from converters.labelstudio.schema import LabelSchema
from backend.runtime import Runtime
from tests.support.scenes import CONFIG, task_for


def _brush(prediction: dict) -> dict:
    regions = [r for r in prediction["result"] if r.get("type") == "brushlabels"]
    assert len(regions) == 1, prediction
    return regions[0]


def _mask(region: dict) -> np.ndarray:
    return brush_rle_decode(region["value"]["rle"], region["original_height"], region["original_width"])


def test_health_setup_versions(make_client):
    client = make_client()
    health = client.get("/health").get_json()
    assert health["status"] == "UP" and health["ready"] is True and health["models"] == "ready"
    assert client.get("/").get_json()["status"] == "UP"
    setup = client.post("/setup", json={"project": "7.1700000000", "schema": CONFIG, "hostname": "http://ls:8080",
                                        "access_token": "abc", "model_version": "", "extra_params": {}})
    assert setup.status_code == 200
    version = setup.get_json()["model_version"]
    assert version.startswith("pslg:classical")
    versions = client.get("/versions").get_json()
    assert versions["versions"] == [version]
    assert client.post("/versions").status_code == 200


def test_setup_answers_while_models_load(tmp_path):
    """/setup and /health must answer while weights are loading (Label Studio gives /setup 3 s)."""
    release = threading.Event()

    def slow_loader():
        release.wait(60)
        from annotate.pipeline import Pipeline
        from annotate.segmenters import build_segmenter

        return Pipeline(build_segmenter(None))

    settings = Settings(model_dir=tmp_path / "m")
    runtime = Runtime(settings, engine=Engine(settings, loader=slow_loader).start())
    client = create_app(settings, runtime=runtime).test_client()
    try:
        assert client.get("/health").get_json()["models"] == "loading"
        answer = client.post("/setup", json={"project": "1.1", "schema": CONFIG})
        assert answer.status_code == 200 and "loading" in answer.get_json()["model_version"]
        assert not runtime.engine.ready  # answered without waiting for the loader
    finally:
        release.set()
    assert runtime.engine.wait_ready(60)
    assert client.get("/health").get_json()["models"] == "ready"
    runtime.store.close()


def test_batch_prelabels_one_prediction_per_task_in_order(make_client, scene):
    client = make_client()
    tasks = [task_for(scene, i, 100 + i) for i in range(len(scene.objects))]
    tasks.insert(1, task_for(scene, 0, 999, image="/data/local-files/?d=scenes/bad.png"))  # corrupt image
    tasks.append({"id": 1000, "data": {"image": "/data/local-files/?d=scenes/a.png"}})  # no expression, no box
    r = client.post("/predict", json={"tasks": tasks, "project": "3.17", "label_config": CONFIG, "params": {}})
    assert r.status_code == 200
    results = r.get_json()["results"]
    assert len(results) == len(tasks)
    assert results[1]["result"] == [] and results[-1]["result"] == []
    good = [p for k, p in enumerate(results) if k not in (1, len(tasks) - 1)]
    for obj, pred in zip(scene.objects, good):
        assert pred["model_version"].startswith("pslg:") and 0.0 <= pred["score"] <= 1.0
        brush = _brush(pred)
        assert brush["from_name"] == "mask" and brush["to_name"] == "image"
        assert brush["value"]["brushlabels"] == [obj.category]  # the label the expression names
        assert (brush["original_height"], brush["original_width"]) == obj.mask.shape
        assert iou(_mask(brush), obj.mask) > 0.6
        rect = next(r for r in pred["result"] if r["type"] == "rectanglelabels")
        x0, y0, x1, y1 = obj.box
        assert rect["value"]["x"] == pytest.approx(100 * x0 / 200, abs=0.6)
        assert rect["value"]["width"] == pytest.approx(100 * (x1 - x0) / 200, abs=1.2)
        assert rect["parentID"] == brush["id"]  # the box is nested under its mask (tests/backend/test_region_shape.py)
        note = next(r for r in pred["result"] if r["type"] == "textarea")
        assert note["id"] == brush["id"] and note["value"]["text"] == [obj.expression]


def test_failed_task_is_logged_by_id(make_client, scene, caplog):
    client = make_client()
    tasks = [task_for(scene, 0, 41, image="/data/local-files/?d=scenes/missing.png"), task_for(scene, 1, 42)]
    with caplog.at_level("WARNING"):
        results = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG}).get_json()["results"]
    assert results[0]["result"] == [] and len(_brush(results[1])["value"]["rle"]) > 0
    assert any("task 41" in m and "missing.png" in m for m in caplog.messages)


def test_interactive_keypoints_rectangle_and_text(make_client, scene):
    client = make_client()
    obj = scene.objects[2]
    ys, xs = np.nonzero(obj.mask)
    cx, cy = float(np.median(xs)), float(np.median(ys))
    task = task_for(scene, 2, 5, with_box=True)
    x0, y0, x1, y1 = obj.box
    rect = {"type": "rectanglelabels", "original_width": 200, "original_height": 160, "value": {
        "x": 100 * x0 / 200, "y": 100 * y0 / 160, "width": 100 * (x1 - x0) / 200, "height": 100 * (y1 - y0) / 160,
        "rectanglelabels": [obj.category]}}
    point = {"type": "keypointlabels", "original_width": 200, "original_height": 160, "is_positive": True,
             "value": {"x": 100 * cx / 200, "y": 100 * cy / 160, "keypointlabels": ["vehicle"]}}
    for context in ({"result": [rect]}, {"result": [rect, point]}):
        r = client.post("/predict", json={"tasks": [task], "label_config": CONFIG, "params": {"context": context}})
        [pred] = r.get_json()["results"]
        brush = _brush(pred)
        assert iou(_mask(brush), obj.mask) > 0.6
        assert [x["type"] for x in pred["result"]] == ["brushlabels"]  # interactive answers the mask only
    # a typed expression without a grounding model falls back to the task's own box
    typed = {"result": [{"type": "textarea", "value": {"text": [obj.expression]}}]}
    [pred] = client.post("/predict", json={"tasks": [task], "label_config": CONFIG, "params": {"context": typed}}).get_json()["results"]
    assert iou(_mask(_brush(pred)), obj.mask) > 0.6


def test_interactive_click_reuses_the_sam_embedding(tmp_path, files_root, scene):
    """With SAM, repeated clicks on one image run the image encoder once (the embedding is cached)."""
    from tests.support.tiny_models import save_tiny_sam_checkpoint

    ckpt = save_tiny_sam_checkpoint(tmp_path / "tiny.pth")
    settings = Settings(model_dir=tmp_path / "m", local_files_root=str(files_root), sam_checkpoint=str(ckpt), device="cpu")
    runtime = Runtime(settings)
    assert runtime.engine.wait_ready(120), runtime.engine.error
    segmenter = runtime.engine.pipeline.segmenter
    calls = {"n": 0}
    encoder = segmenter.model.image_encoder
    handle = encoder.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    client = create_app(settings, runtime=runtime).test_client()
    task = task_for(scene, 0, 1)
    for k in range(4):
        x = 100 * (scene.objects[0].box[0] + 2 + k) / 200
        ctx = {"result": [{"type": "keypointlabels", "original_width": 200, "original_height": 160, "is_positive": True,
                           "value": {"x": x, "y": 100 * (scene.objects[0].box[1] + 2) / 160}}]}
        [pred] = client.post("/predict", json={"tasks": [task], "label_config": CONFIG, "params": {"context": ctx}}).get_json()["results"]
        assert pred["model_version"].startswith("pslg:") and len(pred["result"]) == 1
    handle.remove()
    assert calls["n"] == 1
    runtime.store.close()


@pytest.mark.parametrize("body,status", [
    ({"tasks": []}, 400),
    ({"tasks": "x", "label_config": CONFIG}, 400),
    ({"tasks": [{"id": 1, "data": {}}]}, 400),  # no label config and no /setup
    ({"tasks": [{"id": 1, "data": {}}], "label_config": "<View><Text name='t' value='$t'/></View>"}, 400),
])
def test_predict_errors(make_client, body, status):
    client = make_client()
    r = client.post("/predict", json=body)
    assert r.status_code == status and r.get_json()["error"]


def test_predict_uses_config_from_setup(make_client, scene):
    client = make_client()
    client.post("/setup", json={"project": "9.123", "schema": CONFIG})
    r = client.post("/predict", json={"tasks": [task_for(scene, 0, 1)], "project": "9.123"})
    assert r.status_code == 200 and _brush(r.get_json()["results"][0])


def test_basic_auth(make_client):
    client = make_client(basic_auth_user="ann", basic_auth_pass="s3cret")
    assert client.get("/health").status_code == 401
    bad = base64.b64encode(b"ann:wrong").decode()
    assert client.get("/health", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    good = base64.b64encode(b"ann:s3cret").decode()
    assert client.get("/health", headers={"Authorization": f"Basic {good}"}).get_json()["status"] == "UP"


def _annotation_payload(i: int, action: str = "ANNOTATION_CREATED") -> dict:
    return {"action": action, "project": {"id": 3}, "task": {"id": 500 + i, "data": {"image": "/x.png", "expression": f"e{i}"}},
            "annotation": {"id": 9000 + i, "task": 500 + i, "result": []}}


def test_webhook_stores_concurrent_annotations(make_client):
    client = make_client()
    app = client.application

    def post(i: int) -> int:
        return app.test_client().post("/webhook", json=_annotation_payload(i)).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(post, range(120)))
    assert codes == [201] * 120
    runtime = app.config["PSLG_RUNTIME"]
    assert runtime.store.count() == 120
    assert sorted(a.annotation_id for a in runtime.store.annotations()) == [9000 + i for i in range(120)]
    # an update replaces, a delete removes
    assert client.post("/webhook", json=_annotation_payload(0, "ANNOTATION_UPDATED")).status_code == 201
    assert client.post("/webhook", json=_annotation_payload(1, "ANNOTATION_DELETED")).get_json()["status"] == "deleted"
    assert runtime.store.count() == 119
    assert client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 3}}).get_json()["status"] == "ignored"
    assert client.post("/webhook", json={"no": "action"}).status_code == 400


def test_start_training_without_grounder_is_answered_clearly(make_client):
    client = make_client()
    client.post("/webhook", json=_annotation_payload(0))
    r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3}})
    assert r.status_code == 201
    answer = r.get_json()["training"]
    assert answer.startswith(("started", "queued")) and "no grounding model" in answer and "shape priors" in answer
    assert client.get("/health").get_json()["stored_annotations"] == 1


SHIPPED = Path(__file__).resolve().parents[2] / "converters" / "configs"


def test_shipped_configs_parse():
    per_task = LabelSchema.parse((SHIPPED / "rrsis_expression_per_task.xml").read_text())
    assert (per_task.image_name, per_task.brush_name, per_task.rect_name) == ("image", "tag", "box")
    assert per_task.expression_key == "expression" and "storage_tank" in per_task.labels
    per_region = LabelSchema.parse((SHIPPED / "expressions_per_region.xml").read_text())
    assert per_region.textarea_name == "expression" and per_region.textarea_per_region
    assert per_region.expression_key is None and per_region.task_expression_key == "expression"


def test_per_region_config_echoes_the_expression_on_the_mask(make_client, scene):
    client = make_client()
    config = (SHIPPED / "expressions_per_region.xml").read_text()
    r = client.post("/predict", json={"tasks": [task_for(scene, 1, 1)], "label_config": config})
    [pred] = r.get_json()["results"]
    brush = _brush(pred)
    assert brush["from_name"] == "tag" and iou(_mask(brush), scene.objects[1].mask) > 0.6
    echo = next(x for x in pred["result"] if x["type"] == "textarea")
    assert echo["id"] == brush["id"] and echo["from_name"] == "expression"
    assert echo["value"]["text"] == [scene.objects[1].expression]


def test_setup_credentials_are_the_fallback(make_client):
    """Without LABEL_STUDIO_URL an authenticated /setup names the project's host (an anonymous one does not:
    tests/security/test_setup.py)."""
    import base64

    client = make_client(basic_auth_user="ls", basic_auth_pass="pw")
    runtime = client.application.config["PSLG_RUNTIME"]
    assert runtime.fetcher("4").auth is None
    client.post("/setup", json={"project": "4.99", "schema": CONFIG, "hostname": "http://ls.example:8080/",
                                "access_token": "f" * 40},
                headers={"Authorization": "Basic " + base64.b64encode(b"ls:pw").decode()})
    auth = runtime.fetcher("4").auth
    assert auth.url == "http://ls.example:8080" and auth.kind == "legacy"
    assert "f" * 40 not in repr(auth)


def test_failed_model_load_is_reported(tmp_path, scene):
    pytest.importorskip("segment_anything")  # the light install reports the missing [sam] extra instead
    settings = Settings(model_dir=tmp_path / "m", sam_checkpoint=str(tmp_path / "nope.pth"), device="cpu", predict_wait_s=5)
    runtime = Runtime(settings)
    assert not runtime.engine.wait_ready(60)
    client = create_app(settings, runtime=runtime).test_client()
    health = client.get("/health").get_json()
    assert health["status"] == "UP" and health["models"] == "error" and "nope.pth" in health["error"]
    r = client.post("/predict", json={"tasks": [task_for(scene, 0, 1)], "label_config": CONFIG})
    assert r.status_code == 503 and "nope.pth" in r.get_json()["error"]
    runtime.store.close()
