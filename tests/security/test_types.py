"""Issue 9 item 7: wrong JSON types fail that one task (with the reason in its prediction) or answer 400 with a
message; never a 500 for the whole batch."""

from __future__ import annotations

import pytest

from tests.security.conftest import CONFIG, box_task, png_bytes

IMAGE = "/data/local-files/?d=a.png"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One backend for the module: these requests only read (the /train test is the one writer)."""
    from backend.app import create_app
    from backend.config import Settings
    from backend.runtime import Runtime

    root = tmp_path_factory.mktemp("images")
    (root / "a.png").write_bytes(png_bytes())
    settings = Settings(model_dir=tmp_path_factory.mktemp("model"), local_files_root=str(root))
    runtime = Runtime(settings)
    assert runtime.engine.wait_ready(120), runtime.engine.error
    app = create_app(settings, runtime=runtime)
    app.testing = True
    yield app.test_client()
    runtime.trainer.wait_idle(60)
    runtime.store.close()


@pytest.mark.parametrize(("bad", "reason"), [
    (7, "must be a JSON object, not int"),
    ("task", "must be a JSON object, not str"),
    (None, "must be a JSON object, not NoneType"),
    ({"id": 2, "data": IMAGE}, "'data' must be a JSON object, not str"),
    ({"id": 2, "data": [IMAGE]}, "'data' must be a JSON object, not list"),
])
def test_a_malformed_task_fails_alone(client, bad, reason):
    r = client.post("/predict", json={"tasks": [box_task(1, IMAGE), bad, box_task(3, IMAGE)], "label_config": CONFIG})
    assert r.status_code == 200
    first, failed, last = r.get_json()["results"]
    assert first["result"] and last["result"]
    assert failed["result"] == [] and reason in failed["error"]


@pytest.mark.parametrize(("body", "message"), [
    ({"tasks": [box_task(1, IMAGE)], "label_config": {"xml": CONFIG}}, "must be an XML string, not dict"),
    ({"tasks": [box_task(1, IMAGE)], "label_config": [CONFIG]}, "must be an XML string, not list"),
    ({"tasks": [box_task(1, IMAGE)], "label_config": CONFIG, "params": {"context": "click here"}}, "params.context"),
    ({"tasks": [box_task(1, IMAGE)], "label_config": CONFIG, "params": ["context"]}, "'params' must be"),
    ([box_task(1, IMAGE)], "JSON object"),
])
def test_predict_bodies_of_the_wrong_type_answer_400(client, body, message):
    r = client.post("/predict", json=body)
    assert r.status_code == 400 and message in r.get_json()["error"]


@pytest.mark.parametrize("route", ["/setup", "/validate", "/train", "/webhook"])
@pytest.mark.parametrize("body", [[{"project": "1", "schema": CONFIG}], "text", 12])
def test_other_routes_refuse_non_object_bodies(client, route, body):
    r = client.post(route, json=body)
    assert r.status_code == 400 and r.get_json()["error"]


@pytest.mark.parametrize("schema", [{"xml": CONFIG}, [CONFIG]])
def test_setup_and_validate_with_a_non_string_config(client, schema):
    assert client.post("/setup", json={"project": "1.1", "schema": schema}).status_code == 400
    r = client.post("/validate", json={"config": schema})
    assert r.status_code == 422 and "XML string" in r.get_json()["error"]


def test_train_with_bad_items_keeps_the_good_ones(client):
    body = {"project": "3", "annotations": [
        {"id": 1, "data": {"image": IMAGE}, "annotations": [{"id": 2**64, "result": []}, {"id": 5, "result": []}]},
        "not a task", {"id": 2, "annotations": "nope"}]}
    r = client.post("/train", json=body)
    assert r.status_code == 201
    answer = r.get_json()
    assert answer["stored"] == 1 and len(answer["errors"]) == 3
    store = client.application.config["PSLG_RUNTIME"].store
    assert [a.annotation_id for a in store.annotations()] == [5]
