"""Issue 17 items 5 and 6 (backend): a 32 MiB body of tiny tasks cost 10.7 GB and 2.29 GB of log lines; a wrong
``bbox`` element type or deeply nested JSON answered 500 for the whole batch. Tasks per request are capped, a batch
logs one line, and a malformed task fails alone."""

from __future__ import annotations

import json
import logging

from tests.security.conftest import CONFIG, png_bytes


def _task(task_id: int, bbox, image: str = "/img/a.png") -> dict:
    return {"id": task_id, "data": {"image": image, "expression": "the vehicle", "bbox": bbox}}


def test_too_many_tasks_are_refused_before_any_work(make_app):
    client = make_app(max_tasks_per_request=50)
    r = client.post("/predict", json={"tasks": [{"id": i} for i in range(51)], "label_config": CONFIG})
    assert r.status_code == 413 and "PSLG_MAX_TASKS_PER_REQUEST" in r.get_json()["error"]


def test_a_large_body_of_tiny_tasks_is_refused_before_it_is_parsed(make_app, monkeypatch):
    """The issue's 32 MiB body of tiny tasks cost 10.7 GB: counted while streaming, it is refused at item 1001."""
    import backend.app

    parsed = []
    monkeypatch.setattr(backend.app, "json_body", lambda: parsed.append(1))
    client = make_app(max_tasks_per_request=1000)
    body = b'{"tasks": [' + b",".join(b'{"id":%d}' % i for i in range(300_000)) + b"]}"
    r = client.post("/predict", data=body, content_type="application/json")
    assert r.status_code == 413 and "more than 1000 tasks" in r.get_json()["error"] and parsed == []


def test_a_batch_of_malformed_tasks_logs_one_line(make_app, caplog):
    client = make_app()
    tasks = [7] * 300 + [{"id": i, "data": {"expression": "x"}} for i in range(300)]
    with caplog.at_level(logging.WARNING):
        r = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG})
    assert r.status_code == 200 and len(r.get_json()["results"]) == 600
    lines = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(lines) == 2, lines  # one for the malformed shapes (app), one for the batch (model)
    assert lines[0].startswith("300 of 600 task(s)") and lines[1].startswith("300 of 300 task(s)")
    assert all(len(line) < 2000 for line in lines)


def test_wrong_bbox_element_types_fail_that_task_only(make_app, tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    client = make_app(local_image_root=str(tmp_path))
    image = str(tmp_path / "a.png")
    bad = [["a", 1, 2, 3], [{}, 1, 2, 3], [[1], 1, 2, 3], [None, 1, 2, 3], [True, 1, 2, 3], [10**400, 1, 2, 3],
           {"x": "1", "y": 1, "width": 2, "height": 3}, [float("nan"), 1, 2, 3]]
    tasks = [_task(1, [4, 4, 20, 16], image)] + [_task(2 + k, b, image) for k, b in enumerate(bad)]
    r = client.post("/predict", data=json.dumps({"tasks": tasks, "label_config": CONFIG}),
                    content_type="application/json")
    assert r.status_code == 200, r.get_data(as_text=True)
    good, *failed = r.get_json()["results"]
    assert good["result"] and "error" not in good
    assert all(f["result"] == [] and "bbox" in f["error"] for f in failed), failed


def test_deeply_nested_json_is_a_400_not_a_500(make_app, tmp_path):
    client = make_app()
    deep = "[" * 100_000 + "]" * 100_000
    for route in ("/predict", "/webhook", "/setup", "/train", "/validate"):
        r = client.post(route, data=deep, content_type="application/json")
        assert r.status_code == 400 and "nested too deeply" in r.get_json()["error"], (route, r.status_code)
    # nested deep, but parseable: that task fails alone
    (tmp_path / "a.png").write_bytes(png_bytes())
    client = make_app(local_image_root=str(tmp_path))
    nested = "[" * 900 + "]" * 900
    image = json.dumps(str(tmp_path / "a.png"))
    body = (f'{{"label_config": {json.dumps(CONFIG)}, "tasks": ['
            f'{{"id": 1, "data": {{"image": {image}, "expression": "the vehicle", "bbox": [4, 4, 20, 16]}}}}, '
            f'{{"id": 2, "data": {{"image": {image}, "expression": "the vehicle", "bbox": {nested}}}}}]}}')
    r = client.post("/predict", data=body, content_type="application/json")
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    first, second = r.get_json()["results"]
    assert first["result"] and second["result"] == [] and "bbox" in second["error"]
