"""Issue 9 item 8: Basic auth compares UTF-8 bytes (a non-ASCII password works instead of a 500 for everyone), and
``pslg serve`` warns when it listens beyond loopback without BASIC_AUTH_*."""

from __future__ import annotations

import base64

import pytest
from typer.testing import CliRunner

USER, PASSWORD = "anné", "pässwörd✓"


def _basic(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def test_non_ascii_credentials(make_app):
    client = make_app(basic_auth_user=USER, basic_auth_pass=PASSWORD)
    assert client.get("/health", headers=_basic(f"{USER}:{PASSWORD}".encode())).status_code == 200
    for raw in (f"{USER}:wrong".encode(), f"{USER}:{PASSWORD}".encode("latin-1", "replace"), b"\xff\xfe:\x80",
                f"{USER}:{PASSWORD}x".encode(), b"anne:" + PASSWORD.encode()):
        assert client.get("/health", headers=_basic(raw)).status_code == 401
    for header in ("Basic !!!not-base64", "Basic", "Bearer x", ""):
        assert client.get("/health", headers={"Authorization": header}).status_code == 401


@pytest.mark.parametrize(("host", "env", "warned"), [
    ("0.0.0.0", {}, True),
    ("192.168.1.5", {}, True),
    ("::", {}, True),
    ("127.0.0.1", {}, False),
    ("localhost", {}, False),
    ("::1", {}, False),
    ("0.0.0.0", {"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "pw"}, False),
])
def test_serve_warns_when_reachable_without_auth(monkeypatch, host, env, warned):
    import backend.server
    from converters.cli.main import app

    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        monkeypatch.delenv(name, raising=False)
    served = []
    monkeypatch.setattr(backend.server, "serve", lambda **kwargs: served.append(kwargs))
    result = CliRunner().invoke(app, ["serve", "--host", host], env=env)
    assert result.exit_code == 0, result.output
    assert served and served[0]["host"] == host
    assert ("without BASIC_AUTH_USER/BASIC_AUTH_PASS" in result.output) is warned
