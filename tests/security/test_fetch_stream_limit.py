"""The download size limit holds for bodies that do not announce their size (chunked transfer encoding): a
server that streams more than ``max_bytes`` gets an error naming the image and the limit, never a buffered body,
whether or not it sent a ``Content-Length``."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from converters.labelstudio.fetch import ImageFetcher, ImageFetchError

LIMIT = 100_000


class _Streaming(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        size = int(self.path.rsplit("/", 1)[-1])
        body = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if self.path.startswith("/declared/"):
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i in range(0, len(body), 8192):
                part = body[i:i + 8192]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading at its limit

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Streaming)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("size", [LIMIT + 1, 3 * LIMIT, 50 * LIMIT])
def test_a_chunked_body_over_the_limit_is_refused(server: str, size: int) -> None:
    fetcher = ImageFetcher(max_bytes=LIMIT)
    with pytest.raises(ImageFetchError, match=rf"/chunked/{size}.*over the limit of {LIMIT}"):
        fetcher.fetch(f"{server}/chunked/{size}")


@pytest.mark.parametrize("kind", ["chunked", "declared"])
def test_a_body_at_the_limit_arrives_byte_for_byte(server: str, kind: str) -> None:
    data = ImageFetcher(max_bytes=LIMIT).fetch(f"{server}/{kind}/{LIMIT}")
    assert data == bytes(range(256)) * (LIMIT // 256) + bytes(range(LIMIT % 256))


def test_a_declared_body_over_the_limit_is_refused(server: str) -> None:
    with pytest.raises(ImageFetchError, match=rf"is {LIMIT + 1} bytes, over the limit of {LIMIT}"):
        ImageFetcher(max_bytes=LIMIT).fetch(f"{server}/declared/{LIMIT + 1}")
