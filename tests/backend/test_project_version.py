"""The backend keeps a project's model_version on the served version (PATCH /api/projects/<id>), once per version."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from backend.project_version import VersionPins
from converters.labelstudio.fetch import LabelStudioAuth


class _Recorder(BaseHTTPRequestHandler):
    calls: list = []
    status = 200

    def do_PATCH(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((self.path, self.headers.get("Authorization"), body))
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def _server():
    _Recorder.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_one_patch_per_new_version_with_the_token():
    server, url = _server()
    try:
        pins = VersionPins()
        auth = LabelStudioAuth(url, "legacy-secret")
        assert pins.ensure(auth, "7", "pslg:a") is True
        assert pins.ensure(auth, "7", "pslg:a") is None  # already set
        assert pins.ensure(auth, "7", "pslg:b") is True  # a retrain: set again
        assert pins.ensure(None, "7", "pslg:c") is None and pins.ensure(auth, None, "pslg:c") is None
        assert _Recorder.calls == [("/api/projects/7", "Token legacy-secret", {"model_version": "pslg:a"}),
                                   ("/api/projects/7", "Token legacy-secret", {"model_version": "pslg:b"})]
    finally:
        server.shutdown()


def test_a_refusal_is_logged_without_the_token(caplog):
    server, url = _server()
    _Recorder.status = 403
    try:
        assert VersionPins().ensure(LabelStudioAuth(url, "legacy-secret"), "3", "pslg:a") is False
        assert "HTTP 403" in caplog.text and "legacy-secret" not in caplog.text
    finally:
        _Recorder.status = 200
        server.shutdown()


def test_set_again_after_the_refresh_period():
    server, url = _server()
    try:
        pins = VersionPins(refresh_s=0.0)
        auth = LabelStudioAuth(url, "t")
        assert pins.ensure(auth, "1", "v") and pins.ensure(auth, "1", "v")
        assert len(_Recorder.calls) == 2
    finally:
        server.shutdown()


def test_in_background_retries_until_label_studio_knows_the_version():
    """Label Studio answers 400 until the predictions carrying the version are stored; the pin retries."""
    server, url = _server()
    _Recorder.status = 400
    try:
        pins = VersionPins()
        thread = pins.in_background(LabelStudioAuth(url, "t"), "4", "pslg:new", delays=(0.05, 0.05, 0.3, 0.3))
        import time

        time.sleep(0.2)
        _Recorder.status = 200  # the predictions are stored now
        thread.join(5)
        assert not thread.is_alive() and len(_Recorder.calls) >= 3
        assert pins.in_background(LabelStudioAuth(url, "t"), "4", "pslg:new") is None  # done: nothing more
        assert pins.in_background(LabelStudioAuth(url, "t"), "not-an-id", "pslg:new") is None
    finally:
        _Recorder.status = 200
        server.shutdown()
