"""Memory soak of the ML backend under the hardening issue's reproductions, bounded vs unbounded, on loopback.

Starts ``pslg serve`` (gunicorn, 1 worker) on 127.0.0.1 twice: once with the memory limits at their defaults
(image cache capped at ``--cache-mib`` by PSLG_IMAGE_CACHE_BYTES, PSLG_MAX_REQUEST_BYTES, PSLG_MAX_PROJECTS,
PSLG_MAX_LABEL_CONFIG_BYTES), once with every limit raised out of reach (the behaviour before the limits: the
baseline of the same run). Each run, in order:

1. ``--images`` distinct large PNGs (``--side``², cheap to send, ``side² × 3`` bytes once decoded) served by a
   loopback HTTP server, one ``/predict`` each with a task that has no box or expression: the image is fetched,
   decoded and cached, and the task fails fast (no inference cost in the figure);
2. ``--bodies`` webhook bodies of ``--body-mib`` MiB each (refused with 413 when bounded);
3. ``--configs`` ``/setup`` calls with distinct projects and labeling configs;
4. ``--brush`` webhooks whose brush region declares 30000×30000 pixels (refused when bounded).

It prints the worker's resident memory (VmRSS) after each phase and its peak (VmHWM), both runs side by side.

    .venv/bin/python bench/backend_soak.py                       # 8 × 5000² images, 4 × 100 MiB bodies, 300 configs
    .venv/bin/python bench/backend_soak.py --images 4 --side 3000 --bodies 2 --body-mib 80 --configs 100   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import tempfile
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import requests
from serving import serve


CONFIG = """<View><Image name="image" value="$image"/><Text name="expression" value="$expression"/>
<BrushLabels name="mask" toName="image"><Label value="vehicle"/><Label value="building{i}"/></BrushLabels></View>"""

UNREACHABLE = str(1 << 50)


def image_server(images: list[bytes]) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``images`` as ``/img/<i>.png`` on loopback."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            try:
                body = images[int(self.path.rsplit("/", 1)[1].split(".")[0])]
            except (ValueError, IndexError):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def make_png(side: int, seed: int) -> bytes:
    """A smooth ``side``² RGB image: a few hundred KB as PNG, ``side² × 3`` bytes decoded."""
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    rgb = np.empty((side, side, 3), np.uint8)
    rgb[..., 0] = ramp[None, :]
    rgb[..., 1] = ramp[:, None]
    rgb[..., 2] = (seed * 37) % 256
    ok, buf = cv2.imencode(".png", rgb, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return buf.tobytes()


def worker_pid(pid: int) -> int:
    """gunicorn's worker: the child of the ``pslg serve`` process (the process itself if it has none)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        if children:
            return int(children[0])
    return pid


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def soak(env: dict[str, str], work: Path, tag: str, image_urls: list[str], args) -> list[tuple[str, float, float, str]]:
    """Run the four phases against one backend; rows of (phase, RSS MiB, peak MiB, outcome)."""
    proc, url, _, _ = serve(env, work, tag, threads=8, timeout_s=300)
    pid = worker_pid(proc.pid)
    rows = [("started", *memory_mib(pid), "")]
    try:
        session = requests.Session()
        failed = 0
        for i, image in enumerate(image_urls):
            task = {"id": i + 1, "data": {"image": image}}
            r = session.post(f"{url}/predict", json={"tasks": [task], "label_config": CONFIG.format(i=0)}, timeout=600)
            r.raise_for_status()
            failed += bool(r.json()["results"][0].get("error"))
        rows.append((f"{len(image_urls)} images of {args.side}²", *memory_mib(pid), f"{failed} tasks failed fast"))

        pad = "x" * (args.body_mib * 1024 * 1024)
        codes = []
        for i in range(args.bodies):
            body = json.dumps({"action": "ANNOTATION_CREATED", "project": {"id": 1},
                               "task": {"id": i + 1, "data": {"pad": pad}},
                               "annotation": {"id": i + 1, "task": i + 1, "result": []}}).encode()
            try:
                codes.append(session.post(f"{url}/webhook", data=body, headers={"Content-Type": "application/json"},
                                          timeout=600).status_code)
            except requests.ConnectionError:  # the server answered 413 and closed before reading the body
                codes.append(413)
        del pad
        rows.append((f"{args.bodies} webhooks of {args.body_mib} MiB", *memory_mib(pid),
                     "HTTP " + ",".join(str(c) for c in sorted(set(codes)))))

        for i in range(args.configs):
            r = session.post(f"{url}/setup", json={"project": f"{1000 + i}.1", "schema": CONFIG.format(i=i)}, timeout=60)
            r.raise_for_status()
        rows.append((f"{args.configs} distinct configs", *memory_mib(pid), ""))

        region = {"id": "r", "from_name": "mask", "to_name": "image", "type": "brushlabels", "original_width": 30000,
                  "original_height": 30000, "value": {"format": "rle", "rle": [0, 0, 0, 1], "brushlabels": ["vehicle"]}}
        codes = []
        for i in range(args.brush):
            body = {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "task": {"id": 5000 + i, "data": {}},
                    "annotation": {"id": 5000 + i, "task": 5000 + i, "result": [region]}}
            codes.append(session.post(f"{url}/webhook", json=body, timeout=60).status_code)
        stored = session.get(f"{url}/health", timeout=10).json()["stored_annotations"]
        rows.append((f"{args.brush} 30000² brush declarations", *memory_mib(pid),
                     f"HTTP {','.join(str(c) for c in sorted(set(codes)))}; {stored} stored for training"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--side", type=int, default=5000)
    parser.add_argument("--cache-mib", type=int, default=256, help="PSLG_IMAGE_CACHE_BYTES of the bounded run, MiB")
    parser.add_argument("--bodies", type=int, default=4)
    parser.add_argument("--body-mib", type=int, default=100)
    parser.add_argument("--configs", type=int, default=300)
    parser.add_argument("--brush", type=int, default=20)
    args = parser.parse_args()

    images = [make_png(args.side, i) for i in range(args.images)]
    server, base = image_server(images)
    urls = [f"{base}/img/{i}.png" for i in range(args.images)]
    print(f"backend_soak: {args.images} PNGs of {args.side}² ({sum(map(len, images)) / 1e6:.1f} MB as PNG, "
          f"{args.side ** 2 * 3 / 2 ** 20:.0f} MiB each decoded), {args.bodies} × {args.body_mib} MiB webhooks, "
          f"{args.configs} configs; {datetime.now(timezone.utc):%a %b %d %H:%M UTC %Y}; nproc {os.cpu_count()}, "
          f"{platform.processor() or platform.machine()}")
    common = {**os.environ, "PSLG_WORKERS": "1"}
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "BASIC_AUTH_USER", "BASIC_AUTH_PASS", "PSLG_SAM_CHECKPOINT",
                 "PSLG_GROUNDING_MODEL"):
        common.pop(name, None)
    runs = {
        "unbounded": {"PSLG_IMAGE_CACHE_BYTES": UNREACHABLE, "PSLG_IMAGE_CACHE_ITEMS": "1000000",
                      "PSLG_MAX_REQUEST_BYTES": UNREACHABLE, "PSLG_MAX_PROJECTS": "1000000",
                      "PSLG_MAX_LABEL_CONFIG_BYTES": UNREACHABLE, "PSLG_MAX_PIXELS": UNREACHABLE},
        "bounded": {"PSLG_IMAGE_CACHE_BYTES": str(args.cache_mib * 2**20)},
    }
    results = {}
    with tempfile.TemporaryDirectory(prefix="pslg-soak-") as tmp:
        work = Path(tmp)
        for tag, limits in runs.items():
            env = {**common, "MODEL_DIR": str(work / tag), **limits}
            results[tag] = soak(env, work, tag, urls, args)
    server.shutdown()
    print(f"{'phase':36s} {'unbounded RSS':>13s} {'peak':>7s} {'bounded RSS':>12s} {'peak':>7s} {'RSS ratio':>9s}  bounded outcome")
    for (phase, rss_u, hwm_u, _), (_, rss_b, hwm_b, outcome_b) in zip(results["unbounded"], results["bounded"]):
        print(f"{phase:36s} {rss_u:10.0f} MiB {hwm_u:7.0f} {rss_b:9.0f} MiB {hwm_b:7.0f} {rss_u / rss_b:8.2f}x  {outcome_b}")
    print("unbounded outcomes: " + "; ".join(f"{p}: {o}" for p, _, _, o in results["unbounded"] if o))


if __name__ == "__main__":
    main()
