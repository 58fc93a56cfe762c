"""Issue 17 item 4: Label Studio (1.23) creates the backend's webhook without the ML backend's Basic auth, so with
BASIC_AUTH_* on every /webhook was refused and learning was silently off. ``PSLG_WEBHOOK_SECRET`` is a secret the
webhook can send (header ``X-PSLG-Webhook-Secret``, or ``?secret=`` in its URL); the backend warns at start when
Basic auth is on without it, and /health counts refused webhooks."""

from __future__ import annotations

import base64
import logging

SECRET = "s3cr3t-wébhook"
AUTH = {"Authorization": "Basic " + base64.b64encode(b"ls:pw").decode()}


def _event(annotation_id: int) -> dict:
    return {"action": "ANNOTATION_CREATED", "project": {"id": 2},
            "task": {"id": 7, "data": {"image": "/data/upload/1/a.png", "expression": "the car"}},
            "annotation": {"id": annotation_id, "task": 7, "result": []}}


def test_without_a_secret_basic_auth_refuses_label_studios_webhook_and_health_says_so(make_app, caplog):
    with caplog.at_level(logging.WARNING, logger="pslg.backend.app"):
        client = make_app(basic_auth_user="ls", basic_auth_pass="pw")
    assert any("PSLG_WEBHOOK_SECRET is not" in r.getMessage() for r in caplog.records)
    assert client.post("/webhook", json=_event(1)).status_code == 401  # what Label Studio sends
    health = client.get("/health", headers=AUTH).get_json()
    assert health["webhooks_refused"] == 1 and health["stored_annotations"] == 0


def test_the_secret_header_or_url_parameter_lets_the_webhook_in(make_app, caplog):
    with caplog.at_level(logging.WARNING, logger="pslg.backend.app"):
        client = make_app(basic_auth_user="ls", basic_auth_pass="pw", webhook_secret=SECRET)
    assert not any("PSLG_WEBHOOK_SECRET" in r.getMessage() for r in caplog.records)
    header = {"X-PSLG-Webhook-Secret": SECRET.encode("utf-8").decode("latin-1")}  # raw UTF-8 bytes on the wire
    assert client.post("/webhook", json=_event(1), headers=header).status_code == 201
    assert client.post(f"/webhook?secret={SECRET}", json=_event(2)).status_code == 201
    assert client.post("/webhook", json=_event(3), headers=AUTH).status_code == 201  # Basic auth still works
    for wrong in ({"X-PSLG-Webhook-Secret": "s3cr3t"}, {"X-PSLG-Webhook-Secret": ""}, {}):
        assert client.post("/webhook", json=_event(4), headers=wrong).status_code == 401
    assert client.post("/webhook?secret=nope", json=_event(4)).status_code == 401
    # the secret opens /webhook only: every other route still wants Basic auth
    assert client.post("/predict", json={"tasks": [{"id": 1}]}, headers=header).status_code == 401
    assert client.post("/setup?secret=" + SECRET, json={"project": "2"}).status_code == 401
    health = client.get("/health", headers=AUTH).get_json()
    assert health["stored_annotations"] == 3 and health["webhooks_refused"] == 4


def test_a_secret_without_basic_auth_is_required_at_the_webhook(make_app):
    client = make_app(webhook_secret=SECRET)
    assert client.post("/webhook", json=_event(1)).status_code == 401
    assert client.post("/webhook", json=_event(1), headers={"X-PSLG-Webhook-Secret": SECRET.encode().decode("latin-1")}).status_code == 201
    assert client.get("/health").status_code == 200


def test_the_access_log_never_shows_a_query_string():
    from backend.server import ACCESS_LOG_FORMAT

    assert "%(r)s" not in ACCESS_LOG_FORMAT and "%(q)s" not in ACCESS_LOG_FORMAT and "%(U)s" in ACCESS_LOG_FORMAT
