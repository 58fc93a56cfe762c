"""Issue 9 item 5: Label Studio 1.23's webhook events, in the shapes it really sends (webhooks/models.py: the bulk
ANNOTATIONS_CREATED carries ``annotation`` and ``task`` as lists, ANNOTATIONS_DELETED ``annotations: [{id}]``,
TASKS_DELETED ``tasks: [{id}]``), late and out-of-order deliveries, and strict ids."""

from __future__ import annotations

import pytest


def _annotation(ann_id: int, task_id: int, updated_at: str, text: str = "the vehicle") -> dict:
    return {"id": ann_id, "task": task_id, "updated_at": updated_at,
            "result": [{"id": "t", "from_name": "note", "to_name": "image", "type": "textarea", "value": {"text": [text]}}]}


def _event(action: str, ann: dict) -> dict:
    return {"action": action, "project": {"id": 3}, "annotation": ann,
            "task": {"id": ann["task"], "data": {"image": "/data/upload/3/a.png"}}}


def _stored(client) -> dict[int, dict]:
    store = client.application.config["PSLG_RUNTIME"].store
    return {a.annotation_id: a.annotation for a in store.annotations()}


def test_bulk_created_and_plural_deletes(make_app):
    client = make_app()
    bulk = {"action": "ANNOTATIONS_CREATED", "project": {"id": 3},
            "annotation": [_annotation(10 + i, 100 + i, "2026-01-01T00:00:00Z") for i in range(4)],
            "task": [{"id": 100 + i, "data": {"image": f"/data/upload/3/{i}.png"}} for i in range(4)]}
    r = client.post("/webhook", json=bulk)
    assert r.status_code == 201 and r.get_json()["stored"] == 4
    stored = client.application.config["PSLG_RUNTIME"].store
    assert {a.annotation_id: a.task["data"]["image"] for a in stored.annotations()} == {
        10 + i: f"/data/upload/3/{i}.png" for i in range(4)}
    r = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 3},
                                      "annotations": [{"id": 10}, {"id": 11}]})
    assert r.status_code == 201 and r.get_json()["deleted"] == 2
    r = client.post("/webhook", json={"action": "TASKS_DELETED", "project": {"id": 3}, "tasks": [{"id": 102}]})
    assert r.status_code == 201 and r.get_json()["deleted"] == 1
    assert sorted(_stored(client)) == [13]


def test_late_created_never_overwrites_a_newer_update(make_app):
    client = make_app()
    client.post("/webhook", json=_event("ANNOTATION_CREATED", _annotation(7, 70, "2026-01-01T10:00:00Z", "first")))
    client.post("/webhook", json=_event("ANNOTATION_UPDATED", _annotation(7, 70, "2026-01-01T10:05:00.250000Z", "fixed")))
    retried = client.post("/webhook", json=_event("ANNOTATION_CREATED", _annotation(7, 70, "2026-01-01T10:00:00Z", "first")))
    assert retried.status_code == 201 and retried.get_json()["status"] == "stale"
    assert _stored(client)[7]["result"][0]["value"]["text"] == ["fixed"]


def test_deleted_annotations_and_tasks_do_not_resurrect(make_app):
    client = make_app()
    client.post("/webhook", json=_event("ANNOTATION_CREATED", _annotation(8, 80, "2026-01-01T10:00:00Z")))
    client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 3}, "annotations": [{"id": 8}]})
    late = client.post("/webhook", json=_event("ANNOTATION_CREATED", _annotation(8, 80, "2026-01-01T10:00:00Z")))
    assert late.get_json()["status"] == "deleted"
    client.post("/webhook", json=_event("ANNOTATION_CREATED", _annotation(10, 90, "2026-01-01T10:00:00Z")))
    client.post("/webhook", json={"action": "TASKS_DELETED", "project": {"id": 3}, "tasks": [{"id": 90}]})
    other = client.post("/webhook", json=_event("ANNOTATION_CREATED", _annotation(9, 90, "2026-01-01T10:00:00Z")))
    assert other.get_json()["status"] == "deleted"
    assert _stored(client) == {}


def test_deletes_of_unseen_ids_leave_no_tombstones_and_tombstones_are_bounded(make_app):
    """Issue 17 item 5: an anonymous TASKS_DELETED of 200,000 ids wrote 400,000 tombstones that blocked those ids
    from ever being stored."""
    client = make_app()
    store = client.application.config["PSLG_RUNTIME"].store
    r = client.post("/webhook", json={"action": "TASKS_DELETED", "project": {"id": 3},
                                      "tasks": [{"id": i} for i in range(200_000)]})
    assert r.status_code == 201 and r.get_json()["deleted"] == 0
    client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 3},
                                  "annotations": [{"id": i} for i in range(50_000)]})
    assert store._conn.execute("SELECT COUNT(*) FROM tombstones").fetchone()[0] == 0
    late = client.post("/webhook", json=_event("ANNOTATION_CREATED", _annotation(12, 120, "2026-01-01T10:00:00Z")))
    assert late.get_json()["status"] == "stored"
    store.max_tombstones = 3  # the bound: the oldest tombstones go first
    for aid in range(20, 26):
        client.post("/webhook", json=_event("ANNOTATION_CREATED", _annotation(aid, 200 + aid, "2026-01-01T10:00:00Z")))
        client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 3}, "annotations": [{"id": aid}]})
    kept = [r[0] for r in store._conn.execute("SELECT id FROM tombstones WHERE kind='annotation' ORDER BY id")]
    assert kept == [23, 24, 25]


@pytest.mark.parametrize("bad_id", [12.9, True, 2**63, -1, "12.9", "١٢", None, [12]])
def test_ids_are_validated_strictly(make_app, bad_id):
    client = make_app()
    r = client.post("/webhook", json=_event("ANNOTATION_CREATED", {**_annotation(1, 1, "2026-01-01T00:00:00Z"), "id": bad_id}))
    assert r.status_code == 400 and "id" in r.get_json()["error"]
    r = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 3}, "annotations": [{"id": bad_id}]})
    assert r.status_code == 400
    if bad_id is not None:  # an annotation may come without its task id
        r = client.post("/webhook", json=_event("ANNOTATION_CREATED", {**_annotation(2, 1, "2026-01-01T00:00:00Z"), "task": bad_id}))
        assert r.status_code == 400
    assert _stored(client) == {}


def test_bulk_event_keeps_the_good_annotations(make_app):
    client = make_app()
    bulk = {"action": "ANNOTATIONS_CREATED", "project": {"id": 3},
            "annotation": [_annotation(20, 200, "2026-01-01T00:00:00Z"), {**_annotation(21, 201, "x"), "id": 12.9},
                           _annotation(22, 202, "2026-01-01T00:00:00Z")],
            "task": [{"id": 200}, {"id": 201}, {"id": 202}]}
    r = client.post("/webhook", json=bulk)
    assert r.status_code == 201 and len(r.get_json()["errors"]) == 1 and "12.9" in r.get_json()["errors"][0]
    assert sorted(_stored(client)) == [20, 22]
