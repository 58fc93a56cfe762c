"""Issue 9 item 2: ``/setup`` never combines the environment token with a host taken from a request, and an
unauthenticated ``/setup`` cannot re-point another project's image source."""

from __future__ import annotations

import base64

from tests.security.conftest import CONFIG, LEGACY, PAT, box_task


def _predict(client, project: str, image: str, headers=None) -> dict:
    r = client.post("/predict", json={"tasks": [box_task(1, image)], "project": project}, headers=headers or {})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["results"][0]


def test_environment_token_never_goes_to_a_setup_hostname(make_app, attacker):
    """The issue's reproduction: LABEL_STUDIO_API_KEY set, LABEL_STUDIO_URL unset, /setup names another host."""
    client = make_app(label_studio_api_key=PAT)
    assert client.post("/setup", json={"project": "5.1700000000", "schema": CONFIG, "hostname": attacker.url}).status_code == 200
    failed = _predict(client, "5.1700000000", "/data/upload/1/a.png")
    assert failed["result"] == [] and "LABEL_STUDIO_URL" in failed["error"]
    # with a token of its own in /setup, the request's host gets that token, never the environment's
    client.post("/setup", json={"project": "6.1", "schema": CONFIG, "hostname": attacker.url, "access_token": "f" * 40})
    _predict(client, "6.1", "/data/upload/1/a.png")
    assert attacker.authorizations() == [f"Token {'f' * 40}"]
    assert not attacker.saw(PAT) and not any(r.path.startswith("/api/token") for r in attacker.requests)


def test_environment_url_and_token_ignore_setup_hosts(make_app, label_studio, attacker):
    client = make_app(label_studio_url=label_studio.url, label_studio_api_key=LEGACY)
    client.post("/setup", json={"project": "5.1", "schema": CONFIG, "hostname": attacker.url, "access_token": "f" * 40})
    assert _predict(client, "5.1", "/data/upload/1/a.png")["result"]
    assert label_studio.authorizations() == [f"Token {LEGACY}"] and attacker.requests == []


def test_anonymous_setup_cannot_repoint_another_project(make_app, label_studio, attacker):
    client = make_app()
    assert client.post("/setup", json={"project": "5.1", "schema": CONFIG, "hostname": label_studio.url,
                                       "access_token": LEGACY}).status_code == 200
    assert _predict(client, "5.1", "/data/upload/1/a.png")["result"]
    hijack = client.post("/setup", json={"project": "5.1", "schema": CONFIG, "hostname": attacker.url,
                                         "access_token": "f" * 40})
    assert hijack.status_code == 403 and label_studio.url in hijack.get_json()["error"]
    # another project is the caller's own business; it does not move project 5 (no shared fallback)
    assert client.post("/setup", json={"project": "6.1", "schema": CONFIG, "hostname": attacker.url,
                                       "access_token": "f" * 40}).status_code == 200
    assert _predict(client, "5.1", "/data/upload/1/b.png")["result"]
    assert [r.path for r in label_studio.requests] == ["/data/upload/1/a.png", "/data/upload/1/b.png"]
    assert label_studio.authorizations() == [f"Token {LEGACY}"] * 2 and attacker.requests == []
    # a project never set up borrows no other project's credentials
    lonely = client.post("/predict", json={"tasks": [box_task(1, "/data/upload/1/c.png")], "project": "7.1",
                                           "label_config": CONFIG}).get_json()["results"][0]
    assert lonely["result"] == [] and "LABEL_STUDIO_URL" in lonely["error"]
    assert attacker.requests == []


def test_authenticated_setup_may_move_a_project(make_app, label_studio, attacker):
    client = make_app(basic_auth_user="ls", basic_auth_pass="pw")
    auth = {"Authorization": "Basic " + base64.b64encode(b"ls:pw").decode()}
    for url in (label_studio.url, attacker.url):
        r = client.post("/setup", json={"project": "5.1", "schema": CONFIG, "hostname": url, "access_token": LEGACY},
                        headers=auth)
        assert r.status_code == 200
    _predict(client, "5.1", "/data/upload/1/a.png", headers=auth)
    assert [r.path for r in attacker.requests] == ["/data/upload/1/a.png"] and label_studio.requests == []


def test_filling_the_project_table_cannot_unpin_a_project(make_app, label_studio, attacker):
    """With PSLG_MAX_PROJECTS set up, an anonymous /setup of yet another project is refused instead of evicting
    (and so freeing) an earlier project's host."""
    client = make_app(max_projects=3)
    client.post("/setup", json={"project": "5.1", "schema": CONFIG, "hostname": label_studio.url, "access_token": LEGACY})
    for project in ("6.1", "7.1"):
        assert client.post("/setup", json={"project": project, "schema": CONFIG, "hostname": attacker.url,
                                           "access_token": "f" * 40}).status_code == 200
    full = client.post("/setup", json={"project": "8.1", "schema": CONFIG, "hostname": attacker.url, "access_token": "f" * 40})
    assert full.status_code == 403 and "PSLG_MAX_PROJECTS" in full.get_json()["error"]
    assert client.post("/setup", json={"project": "5.1", "schema": CONFIG, "hostname": attacker.url,
                                       "access_token": "f" * 40}).status_code == 403
    assert _predict(client, "5.1", "/data/upload/1/a.png")["result"]
    assert label_studio.authorizations() == [f"Token {LEGACY}"] and attacker.requests == []
