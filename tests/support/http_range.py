"""A static file server on 127.0.0.1 that answers HTTP Range requests, as object stores and CDNs serving COGs do
(the standard library's ``http.server`` ignores ``Range``, and GDAL's ``/vsicurl/`` refuses such a server).

It runs in its own process: ``rasterio.open`` keeps the GIL while GDAL waits for the network, so a server thread
in the test's process would never answer. Each range served is printed (``RANGE a b``) for the test to read.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
from pathlib import Path
from typing import Iterator


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` plus single-range ``bytes=a-b`` answers (206 + Content-Range)."""

    ranges_served: list[tuple[int, int]]  # set per server, shared by its handlers

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def send_head(self):  # type: ignore[override]
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        path = Path(self.translate_path(self.path))
        if match is None or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start = int(match.group(1))
        end = min(size - 1, int(match.group(2)) if match.group(2) else size - 1)
        if start >= size:
            self.send_error(416, "Requested Range Not Satisfiable")
            return None
        fh = open(path, "rb")
        fh.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.ranges_served.append((start, end))
        self._remaining = end - start + 1
        return fh

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            return super().copyfile(source, outputfile)
        while remaining > 0:
            chunk = source.read(min(1 << 16, remaining))
            if not chunk:
                break
            outputfile.write(chunk)
            remaining -= len(chunk)


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[tuple[str, list[tuple[int, int]]]]:
    """Serve ``folder`` on a free port from a child process; yields (base URL, the byte ranges served, filled in
    when the block ends)."""
    import socket
    import subprocess
    import sys
    import time

    from tests.support.labelstudio_server import free_port

    port = free_port()
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.http_range", os.fspath(folder), str(port)],
                            cwd=root, stdout=subprocess.PIPE, text=True)
    served: list[tuple[int, int]] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the range server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", served
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        served += [(int(a), int(b)) for line in out.splitlines() if line.startswith("RANGE ")
                   for a, b in [line.split()[1:3]]]


def _main(folder: str, port: int) -> None:
    class Handler(RangeHandler):
        ranges_served: list[tuple[int, int]] = []

        def send_head(self):  # type: ignore[override]
            before = len(self.ranges_served)
            result = super().send_head()
            for a, b in self.ranges_served[before:]:
                print(f"RANGE {a} {b}", flush=True)
            return result

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=folder))
    server.serve_forever()


if __name__ == "__main__":
    import sys

    _main(sys.argv[1], int(sys.argv[2]))
