"""The backend's front door: an asyncio loop that reads each request completely before a worker thread sees it.

Why: gunicorn's threaded worker gives a connection a thread as soon as it is accepted, and the thread then waits
for the request at the client's pace with no deadline: eight clients that send half a header (or a body one
byte a minute) held all eight threads, and ``/health`` and every request stalled. Here slow clients cost a
coroutine and a buffer, not a thread:

* the request head must arrive within ``header_timeout`` seconds and fit ``MAX_HEAD_BYTES``; the body (by
  ``Content-Length``, or chunked, which is de-chunked) within ``body_timeout`` seconds and ``max_body_bytes``
  (413 above it, before reading it). Bodies above ``SPOOL_BYTES`` wait in a temporary file, not in memory;
* at most ``max_connections`` client connections are open at once (beyond that a new one is answered 503);
* only a complete request goes to gunicorn, over a private Unix socket, one request per connection; the answer
  is read from gunicorn at once (so its thread is free even when the client reads slowly) and written to the
  client within ``send_timeout`` seconds.

The loop runs in a thread of gunicorn's master process (``backend.server``), started when gunicorn is ready.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
import threading
from dataclasses import dataclass
from typing import IO, Optional

log = logging.getLogger("pslg.backend.front")

#: largest request line + headers
MAX_HEAD_BYTES = 64 * 1024
#: bodies above this wait in a temporary file while they arrive
SPOOL_BYTES = 1024 * 1024
#: answers are read from gunicorn in pieces of this size
_PIECE = 256 * 1024
#: hop-by-hop headers the front replaces (RFC 9110 §7.6.1) and the framing it rewrites
_DROP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
         b"content-length", b"expect"}


@dataclass
class FrontLimits:
    """What the front allows a client (each a ``pslg serve`` setting, see docs/serve-backend.md)."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    send_timeout: float = 60.0
    max_body_bytes: int = 64 * 1024 * 1024
    max_connections: int = 1024


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _answer(status: int, reason: str, message: str) -> bytes:
    body = ('{"error": "%s"}' % message.replace('"', "'")).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


def _parse_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(request line, [(name, value)]) of a request head; ``_Refused`` (400) when it is not HTTP/1.x."""
    lines = head[:-4].split(b"\r\n")
    request_line = lines[0]
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise _Refused(400, "Bad Request", "not an HTTP/1.x request")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or b" " in name:
            raise _Refused(400, "Bad Request", "malformed header line")
        headers.append((name, value.strip()))
    return request_line, headers


class _Front:
    def __init__(self, upstream: str, limits: FrontLimits) -> None:
        self.upstream = upstream
        self.limits = limits
        self.open = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        body: Optional[IO[bytes]] = None
        try:
            if self.open > self.limits.max_connections:
                raise _Refused(503, "Service Unavailable", "too many open connections; retry")
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.header_timeout)
            except asyncio.LimitOverrunError:
                raise _Refused(431, "Request Header Fields Too Large", "request head too large") from None
            except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                return  # a client that does not finish its request head gets nothing, and costs no thread
            request_line, headers = _parse_head(head)
            fields = {name.lower(): value for name, value in headers}
            if fields.get(b"expect", b"").lower() == b"100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await asyncio.wait_for(self._read_body(reader, fields), self.limits.body_timeout)
            writer.write(await self._forward(request_line, headers, writer, body))
        except _Refused as refused:
            writer.write(_answer(refused.status, refused.reason, refused.message))
        except asyncio.TimeoutError:
            writer.write(_answer(408, "Request Timeout", "the request body did not arrive in time"))
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self.open -= 1
            if body is not None:
                body.close()
            try:
                await asyncio.wait_for(writer.drain(), self.limits.send_timeout)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                pass
            writer.close()

    async def _read_body(self, reader: asyncio.StreamReader, fields: dict[bytes, bytes]) -> IO[bytes]:
        out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        limit = self.limits.max_body_bytes
        if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            total = 0
            while True:
                size_line = await reader.readuntil(b"\r\n")
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise _Refused(400, "Bad Request", "malformed chunk size") from None
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, dropped
                        pass
                    return out
                total += size
                if total > limit:
                    raise _Refused(413, "Payload Too Large", f"the request body is over {limit} bytes")
                out.write(await reader.readexactly(size))
                await reader.readexactly(2)
        raw = fields.get(b"content-length")
        if raw is None:
            return out
        if not raw.isdigit():
            raise _Refused(400, "Bad Request", "malformed Content-Length")
        length = int(raw)
        if length > limit:
            raise _Refused(413, "Payload Too Large", f"the request body is over {limit} bytes (PSLG_MAX_REQUEST_BYTES)")
        while length:
            piece = await reader.read(min(length, _PIECE))
            if not piece:
                raise asyncio.IncompleteReadError(b"", length)
            out.write(piece)
            length -= len(piece)
        return out

    async def _forward(self, request_line: bytes, headers: list[tuple[bytes, bytes]], writer: asyncio.StreamWriter,
                       body: IO[bytes]) -> bytes:
        """Send the complete request to gunicorn and return its whole answer."""
        size = body.tell()
        body.seek(0)
        peer = writer.get_extra_info("peername")
        kept = [(n, v) for n, v in headers if n.lower() not in _DROP]
        head = [request_line] + [n + b": " + v for n, v in kept] + [
            b"Content-Length: " + str(size).encode(), b"Connection: close"]
        if peer:
            head.append(b"X-Forwarded-For: " + str(peer[0]).encode())
        up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        try:
            up_writer.write(b"\r\n".join(head) + b"\r\n\r\n")
            while True:
                piece = body.read(_PIECE)
                if not piece:
                    break
                up_writer.write(piece)
                await up_writer.drain()
            await up_writer.drain()
            return await up_reader.read()  # until gunicorn closes: the whole answer, the thread is free at once
        finally:
            up_writer.close()


def start_front(host: str, port: int, upstream: str, limits: FrontLimits) -> threading.Thread:
    """Serve ``host:port`` in a daemon thread, forwarding complete requests to the Unix socket ``upstream``."""
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        front = _Front(upstream, limits)
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server = loop.run_until_complete(asyncio.start_server(
                front.handle, host=host, port=port, family=family, limit=MAX_HEAD_BYTES, reuse_address=True,
                backlog=1024))
        except BaseException as exc:  # the port is taken, the host unknown...
            failure.append(exc)
            ready.set()
            return
        ready.set()
        log.info("front listening on %s:%d (slow clients wait here, not in a worker thread)", host, port)
        loop.run_forever()  # for the life of the master process (the thread is a daemon)

    thread = threading.Thread(target=run, name="pslg-front", daemon=True)
    thread.start()
    ready.wait()
    if failure:
        raise failure[0]
    return thread
