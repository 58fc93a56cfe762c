"""Fixtures of the security tests: small logging HTTP servers on 127.0.0.1 playing Label Studio and an attacker.

Every request a server receives is recorded with its path and ``Authorization`` header, so a test can prove
where a token went (and where it never went).
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import cv2
import numpy as np
import pytest

from tests.support.backend import runtime_clients

LEGACY = "0123456789abcdef0123456789abcdef01234567"
PAT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJl"


def png_bytes(height: int = 32, width: int = 40, value: int = 128) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((height, width, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


@dataclass
class Seen:
    method: str
    path: str
    authorization: str
    body: bytes


@dataclass
class LoggingServer:
    """A loopback HTTP server answering every GET with a small PNG and every POST to ``/api/token/refresh/``
    with an access token; ``requests`` lists what arrived."""

    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    image: bytes = field(default_factory=png_bytes)

    def authorizations(self) -> list[str]:
        return [r.authorization for r in self.requests if r.authorization]

    def saw(self, secret: str) -> bool:
        """Whether ``secret`` reached this server in any header or body."""
        return any(secret in r.authorization or secret.encode() in r.body for r in self.requests)


def _handler(server: LoggingServer):
    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            server.requests.append(Seen(self.command, self.path, self.headers.get("Authorization", ""), body))
            return body

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._record()
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(server.image)))
            self.end_headers()
            self.wfile.write(server.image)

        def do_POST(self) -> None:  # noqa: N802
            self._record()
            answer = json.dumps({"access": "access-from-" + str(self.server.server_address[1])}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    return Handler


def _serve() -> Iterator[LoggingServer]:
    state = LoggingServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def label_studio() -> Iterator[LoggingServer]:
    """The Label Studio the backend is configured for."""
    yield from _serve()


@pytest.fixture()
def attacker() -> Iterator[LoggingServer]:
    """A host a task or a request names to collect tokens."""
    yield from _serve()


CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Text name="expression" value="$expression"/>
  <BrushLabels name="mask" toName="image"><Label value="vehicle"/><Label value="building"/></BrushLabels>
  <RectangleLabels name="box" toName="image"><Label value="vehicle"/><Label value="building"/></RectangleLabels>
</View>"""


@pytest.fixture(scope="session")
def weights_free_engine():
    """One loaded weights-free engine for the whole session (the runtimes around it are fresh per test)."""
    from backend.config import Settings
    from backend.engine import Engine

    engine = Engine(Settings()).start()
    assert engine.wait_ready(120), engine.error
    return engine


@pytest.fixture()
def make_app(tmp_path, weights_free_engine):
    """Build the backend's Flask test client around a fresh runtime (own settings, store and caches)."""
    from backend.config import Settings

    counter = itertools.count()
    with runtime_clients(engine=weights_free_engine, train_wait_s=60) as make:
        yield lambda **overrides: make(Settings(model_dir=tmp_path / f"model{next(counter)}", **overrides))


def box_task(task_id: int, image: str) -> dict:
    """A task the weights-free backend can predict (expression + bbox) for ``image``."""
    return {"id": task_id, "data": {"image": image, "expression": "the vehicle", "bbox": [4, 4, 20, 16]}}
