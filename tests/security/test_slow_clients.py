"""Issue 17 item 5: eight slow connections stalled /health and every request (gunicorn's threads waited for each
client at its pace, with no deadline). The front (``backend.front``) reads every request completely before a
worker thread sees it, with deadlines; the real ``pslg serve`` is started here."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.support.e2e import start_backend


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    b = start_backend(tmp_path_factory.mktemp("slow-clients"), {"PSLG_HEADER_TIMEOUT": "2", "PSLG_BODY_TIMEOUT": "3",
                                                                "PSLG_MAX_REQUEST_BYTES": "100000"})
    yield b
    b.stop()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_health_answers_while_fifty_clients_stall(backend):
    socks = []
    try:
        for i in range(50):
            s = socket.create_connection(("127.0.0.1", _port(backend.url)))
            if i % 2:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
            else:
                s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 5000\r\n\r\n{")  # a body that never comes
            socks.append(s)
        time.sleep(0.5)
        for _ in range(5):
            r = requests.get(f"{backend.url}/health", timeout=10)  # was: a ReadTimeout, every time
            assert r.status_code == 200 and r.json()["ready"]
    finally:
        for s in socks:
            s.close()


def test_a_stalled_client_is_cut_at_its_deadline(backend):
    with socket.create_connection(("127.0.0.1", _port(backend.url))) as s:
        s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        s.settimeout(15)
        t0 = time.monotonic()
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 10
    with socket.create_connection(("127.0.0.1", _port(backend.url))) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n")
        s.settimeout(15)
        assert s.recv(4096) == b""  # an unfinished head is closed without an answer


def test_requests_pass_through_intact(backend):
    """Chunked bodies, 100-continue, query strings and large-body refusals behave as before."""
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 1},
             "task": {"id": 3, "data": {"image": "/data/upload/1/a.png"}}, "annotation": {"id": 9, "task": 3, "result": []}}
    body = json.dumps(event).encode()
    chunked = requests.post(f"{backend.url}/webhook?x=1", data=iter([body[:10], body[10:]]),
                            headers={"Content-Type": "application/json"}, timeout=10)
    assert chunked.status_code == 201 and chunked.json()["stored"] == 1
    expect = requests.post(f"{backend.url}/webhook", data=body, timeout=10,
                           headers={"Content-Type": "application/json", "Expect": "100-continue"})
    assert expect.status_code == 201
    big = requests.post(f"{backend.url}/predict", data=b"x" * 200_000, timeout=10,
                        headers={"Content-Type": "application/json"})
    assert big.status_code == 413
