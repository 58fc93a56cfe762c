"""Issue 9 item 2: ``/setup`` never combines the environment token with a host taken from a request, and an
unauthenticated ``/setup`` cannot re-point another project's image source. Issue 17 item 5: nor can it claim a
project first (the first anonymous ``/setup`` won when ``LABEL_STUDIO_URL`` was unset): only an authenticated
one names a host."""

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
    # with a token of its own, an anonymous /setup still names no host
    client.post("/setup", json={"project": "6.1", "schema": CONFIG, "hostname": attacker.url, "access_token": "f" * 40})
    assert _predict(client, "6.1", "/data/upload/1/a.png")["result"] == []
    assert attacker.requests == []


def test_environment_url_and_token_ignore_setup_hosts(make_app, label_studio, attacker):
    client = make_app(label_studio_url=label_studio.url, label_studio_api_key=LEGACY)
    client.post("/setup", json={"project": "5.1", "schema": CONFIG, "hostname": attacker.url, "access_token": "f" * 40})
    assert _predict(client, "5.1", "/data/upload/1/a.png")["result"]
    assert label_studio.authorizations() == [f"Token {LEGACY}"] and attacker.requests == []


def test_the_first_anonymous_setup_cannot_claim_a_project(make_app, label_studio, attacker, caplog):
    """Without LABEL_STUDIO_URL the first anonymous /setup for a project id used to win: an attacker that came
    before Label Studio pointed the project's images at its own host for good."""
    client = make_app()
    with caplog.at_level("WARNING"):
        claim = client.post("/setup", json={"project": "5.1", "schema": CONFIG, "hostname": attacker.url,
                                            "access_token": "f" * 40})
    assert claim.status_code == 200  # the labeling config is taken; the host is not
    assert any("not authenticated" in m and "LABEL_STUDIO_URL" in m for m in caplog.messages)
    legit = client.post("/setup", json={"project": "5.1", "schema": CONFIG, "hostname": label_studio.url,
                                        "access_token": LEGACY})
    assert legit.status_code == 200
    failed = _predict(client, "5.1", "/data/upload/1/a.png")
    assert failed["result"] == [] and "LABEL_STUDIO_URL" in failed["error"]
    assert attacker.requests == [] and label_studio.requests == []


def test_with_basic_auth_label_studios_setup_names_the_host(make_app, label_studio, attacker):
    client = make_app(basic_auth_user="ls", basic_auth_pass="pw")
    auth = {"Authorization": "Basic " + base64.b64encode(b"ls:pw").decode()}
    assert client.post("/setup", json={"project": "5.1", "schema": CONFIG, "hostname": attacker.url,
                                       "access_token": "f" * 40}).status_code == 401
    assert client.post("/setup", json={"project": "5.1", "schema": CONFIG, "hostname": label_studio.url,
                                       "access_token": LEGACY}, headers=auth).status_code == 200
    assert _predict(client, "5.1", "/data/upload/1/a.png", headers=auth)["result"]
    assert label_studio.authorizations() == [f"Token {LEGACY}"] and attacker.requests == []


def test_authenticated_setup_may_move_a_project(make_app, label_studio, attacker):
    client = make_app(basic_auth_user="ls", basic_auth_pass="pw")
    auth = {"Authorization": "Basic " + base64.b64encode(b"ls:pw").decode()}
    for url in (label_studio.url, attacker.url):
        r = client.post("/setup", json={"project": "5.1", "schema": CONFIG, "hostname": url, "access_token": LEGACY},
                        headers=auth)
        assert r.status_code == 200
    _predict(client, "5.1", "/data/upload/1/a.png", headers=auth)
    assert [r.path for r in attacker.requests] == ["/data/upload/1/a.png"] and label_studio.requests == []
