"""Hardening soak: the memory bombs and slow clients of the second security probe, on loopback, with ratios
against the unhardened behaviour of the same run where it can be measured.

1. **Decode bombs**, each in a fresh child process (peak = its VmHWM): a 100-megapixel 16-bit PNG (~0.2 MB), a
   100-megapixel three-band float64 GeoTIFF (~2.5 MB) and a 100-megapixel RGB PNG (~0.3 MB), decoded by today's
   ``annotate.image_io`` and by the unhardened one of ``--baseline-rev`` (read from git; skipped when absent).
2. **The backend under four bombs at once**: ``pslg serve`` on 127.0.0.1 gets four ``/predict`` calls at the same
   time, one per bomb (plus a second 16-bit PNG); the peak resident memory of its whole process tree (master,
   worker, inference processes) is sampled every 0.1 s, and ``/health`` is timed meanwhile.
3. **Slow clients**: ``--slow`` connections that stall (half send a request head that never ends, half a body
   that never comes); ``/health`` is timed 20 times, against the hardened ``pslg serve`` and against gunicorn
   serving the same app directly (the unhardened setup: no front door).
4. **A 32 MiB body of tiny tasks** (``{"id": i}`` × ~2.2 M): status, answer size, log lines written.

Every loop is bounded (fixed counts, request timeouts) and every process is stopped at the end.

    .venv/bin/python bench/hardening_soak.py                    # 10000² bombs, 50 slow clients
    .venv/bin/python bench/hardening_soak.py --side 5000 --no-baseline   # quicker, today's code only
    .venv/bin/python bench/hardening_soak.py --no-baseline --cache-mib 256   # a smaller decoded-image cache
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import requests
from serving import REPO, free_port, serve

MiB = 1024 * 1024
CONFIG = """<View><Image name="image" value="$image"/><Text name="expression" value="$expression"/>
<BrushLabels name="mask" toName="image"><Label value="vehicle"/></BrushLabels></View>"""


# ------------------------------------------------------------------------------------------------ the bombs
def write_bombs(folder: Path, side: int) -> dict[str, Path]:
    """Images that are tiny on disk and large once decoded."""
    import rasterio
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    band = np.zeros((side, side), np.uint16)
    band[::97, ::89] = 60000
    band[side // 2: side // 2 + 100, side // 2: side // 2 + 100] = 30000
    out = {"png16": folder / "bomb16.png", "png16b": folder / "bomb16b.png", "tif64": folder / "bomb64.tif",
           "rgb": folder / "bomb_rgb.png"}
    Image.fromarray(band).save(out["png16"])
    Image.fromarray(band[::-1].copy()).save(out["png16b"])
    rgb = np.zeros((side, side, 3), np.uint8)
    rgb[side // 2: side // 2 + 200, side // 2: side // 2 + 300] = 200
    Image.fromarray(rgb).save(out["rgb"])
    profile = dict(driver="GTiff", height=side, width=side, count=3, dtype="float64", compress="deflate", tiled=True,
                   blockxsize=512, blockysize=512)
    with rasterio.open(out["tif64"], "w", **profile) as dst:
        for b in (1, 2, 3):
            data = np.zeros((side, side))
            data[::89, ::97] = 1000.0 * b
            dst.write(data, b)
    return out


def decode_peak(path: Path, module_file: Path | None) -> tuple[float, float]:
    """(peak MiB, seconds) of decoding ``path`` in a fresh process with today's image_io, or ``module_file``."""
    loader = ("from annotate.image_io import load_image" if module_file is None else
              f"import importlib.util, sys\nspec = importlib.util.spec_from_file_location('old_image_io', {str(module_file)!r})\n"
              "mod = importlib.util.module_from_spec(spec); sys.modules['old_image_io'] = mod\n"
              "spec.loader.exec_module(mod); load_image = mod.load_image")
    code = f"""{loader}
import re, time, json
t = time.perf_counter(); im = load_image({str(path)!r}, max_pixels=10**9); t = time.perf_counter() - t
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
print(json.dumps([hwm, t]))"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        return float("nan"), float("nan")
    hwm, seconds = json.loads(proc.stdout.strip().splitlines()[-1])
    return hwm, seconds


def baseline_image_io(rev: str, work: Path) -> Path | None:
    """The unhardened ``annotate/image_io.py`` of git revision ``rev`` as a file, or None when git lacks it."""
    proc = subprocess.run(["git", "show", f"{rev}:annotate/image_io.py"], cwd=str(REPO), capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    path = work / "old_image_io.py"
    path.write_text(proc.stdout)
    return path


# ------------------------------------------------------------------------------------------------ processes
def tree_rss_mib(root: int) -> float:
    """Resident memory of ``root`` and all its descendants (VmRSS from /proc)."""
    return sum(tree_rss_by_process(root).values())


def tree_rss_by_process(root: int) -> dict[str, float]:
    """VmRSS in MiB of ``root`` and each descendant, keyed ``pid name`` (where a peak's memory sits)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: dict[str, float] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            status = open(f"/proc/{pid}/status").read()
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        m = re.search(r"VmRSS:\s+(\d+) kB", status)
        role = ("pool worker" if "multiprocessing" in cmd else "gunicorn" if "gunicorn" in cmd else cmd[-40:])
        out[f"{pid} {role}"] = int(m.group(1)) / 1024 if m else 0.0
    return out


class Sampler:
    """Samples a process tree's resident memory every 0.1 s in a thread; ``peak`` in MiB."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self.at_peak: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = tree_rss_by_process(self.pid)
            if sum(now.values()) > self.peak:
                self.peak, self.at_peak = sum(now.values()), now
            time.sleep(0.1)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def health_latencies(url: str, n: int, timeout: float) -> list[float]:
    """Seconds per GET /health (``inf`` when no answer within ``timeout``)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            requests.get(f"{url}/health", timeout=timeout).raise_for_status()
            out.append(time.perf_counter() - t0)
        except requests.RequestException:
            out.append(float("inf"))
    return out


def stall(url: str, count: int) -> list[socket.socket]:
    port = int(url.rsplit(":", 1)[1])
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" if i % 2 else
                  b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{")
        socks.append(s)
    return socks


def unhardened_server(env: dict, work: Path) -> tuple[subprocess.Popen, str]:
    """gunicorn serving the same app directly on a port (8 threads, no front door): the setup before the fix."""
    port = free_port()
    code = f"""
from gunicorn.app.base import BaseApplication
from backend.app import create_app
class App(BaseApplication):
    def load_config(self):
        for k, v in {{"bind": "127.0.0.1:{port}", "workers": 1, "threads": 8, "worker_class": "gthread"}}.items():
            self.cfg.set(k, v)
    def load(self):
        return create_app()
App().run()
"""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=str(REPO), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(work / "unhardened.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(f"{url}/health", timeout=2).json().get("ready"):
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop(proc)
    raise SystemExit("the unhardened server did not start")


def fmt(latencies: list[float]) -> str:
    answered = sorted(v for v in latencies if v != float("inf"))
    missing = len(latencies) - len(answered)
    if not answered:
        return f"no answer ({missing}/{len(latencies)} timed out)"
    return (f"median {1000 * answered[len(answered) // 2]:.0f} ms, max {1000 * answered[-1]:.0f} ms"
            + (f", {missing}/{len(latencies)} timed out" if missing else ""))


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=10000, help="side of the square bombs (px)")
    ap.add_argument("--slow", type=int, default=50, help="stalled connections")
    ap.add_argument("--baseline-rev", default="856ac90", help="git revision of the unhardened code")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unhardened measurements")
    ap.add_argument("--skip-decode", action="store_true", help="skip part 1 (one decode per process)")
    ap.add_argument("--cache-mib", type=int, default=None,
                    help="PSLG_IMAGE_CACHE_BYTES in MiB (default: the backend's, 1 GiB; the cache keeps decoded images)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pslg-hardening-"))
    print(f"# hardening soak — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} cores, bombs {args.side}², image cache "
          f"{'default (1 GiB)' if args.cache_mib is None else f'{args.cache_mib} MiB'}")
    bombs = write_bombs(work / "images", args.side)
    print("bomb files: " + ", ".join(f"{k} {p.stat().st_size / MiB:.2f} MiB" for k, p in bombs.items()))

    # 1. decode bombs, today vs the unhardened image_io
    old = None if args.no_baseline else baseline_image_io(args.baseline_rev, work)
    print("\n## 1. one decode per process (peak VmHWM)")
    print("| bomb | today | unhardened | ratio |\n|---|---|---|---|")
    for key in () if args.skip_decode else ("png16", "tif64", "rgb"):
        new_peak, new_s = decode_peak(bombs[key], None)
        old_peak, old_s = decode_peak(bombs[key], old) if old is not None else (float("nan"), float("nan"))
        ratio = old_peak / new_peak if old is not None else float("nan")
        print(f"| {key} | {new_peak:,.0f} MiB ({new_s:.1f} s) | {old_peak:,.0f} MiB ({old_s:.1f} s) | {ratio:.1f}× |")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "BASIC_AUTH", "PSLG_"))}
    env.update({"PYTHONPATH": str(REPO), "MODEL_DIR": str(work / "model"), "PSLG_LOCAL_IMAGE_ROOT": str(work / "images"),
                "PSLG_WORKERS": "1", "PSLG_MAX_PIXELS": str(max(100_000_000, args.side * args.side))})
    if args.cache_mib is not None:
        env["PSLG_IMAGE_CACHE_BYTES"] = str(args.cache_mib * MiB)
    proc, url, _, _ = serve(env, work, "hardened", threads=8)
    try:
        # 2. four bombs at once through /predict
        tasks = [{"id": i, "data": {"image": str(bombs[k]), "expression": "the vehicle",
                                    "bbox": [args.side // 2 - 50, args.side // 2 - 50, 400, 300]}}
                 for i, k in enumerate(("png16", "tif64", "rgb", "png16b"))]
        before = tree_rss_mib(proc.pid)
        health: list[float] = []
        with Sampler(proc.pid) as sampler, ThreadPoolExecutor(4) as pool:
            t0 = time.perf_counter()
            futures = [pool.submit(requests.post, f"{url}/predict", json={"tasks": [t], "label_config": CONFIG},
                                   timeout=900) for t in tasks]
            while not all(f.done() for f in futures):
                health += health_latencies(url, 1, 5.0)
                time.sleep(0.5)
            answers = [f.result() for f in futures]
            seconds = time.perf_counter() - t0
        ok = sum(1 for a in answers if a.status_code == 200 and a.json()["results"][0]["result"])
        print(f"\n## 2. four bombs at once through /predict (hardened pslg serve)\n"
              f"process tree: {before:,.0f} MiB before, peak {sampler.peak:,.0f} MiB ({sampler.peak / 1024:.2f} GiB); "
              f"{ok}/4 predicted in {seconds:.0f} s; /health meanwhile: {fmt(health)}\n"
              f"at the peak: " + ", ".join(f"{k} {v:,.0f} MiB" for k, v in sampler.at_peak.items()))

        # 3. slow clients
        socks = stall(url, args.slow)
        try:
            time.sleep(1.0)
            hardened = health_latencies(url, 20, 5.0)
        finally:
            for s in socks:
                s.close()
        print(f"\n## 3. /health under {args.slow} stalled connections\nhardened (front door): {fmt(hardened)}")

        # 4. a 32 MiB body of tiny tasks
        log_path = work / "backend-hardened.log"
        lines_before = len(log_path.read_bytes().splitlines())
        items = 32 * MiB // len(b'{"id":1000000},')  # about 32 MiB of tasks
        body = b'{"label_config": ' + json.dumps(CONFIG).encode() + b', "tasks": [' + b",".join(
            b'{"id":%d}' % (1_000_000 + i) for i in range(items)) + b"]}"
        rss0 = tree_rss_mib(proc.pid)
        with Sampler(proc.pid) as sampler:
            t0 = time.perf_counter()
            r = requests.post(f"{url}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=900)
            seconds = time.perf_counter() - t0
        lines = len(log_path.read_bytes().splitlines()) - lines_before
        print(f"\n## 4. {len(body) / MiB:.1f} MiB body of tiny tasks\nanswer {r.status_code} "
              f"({len(r.content):,} bytes) in {seconds:.1f} s; peak +{sampler.peak - rss0:,.0f} MiB; "
              f"{lines} log line(s)")
    finally:
        stop(proc)

    if not args.no_baseline:
        uproc, uurl = unhardened_server(env, work)
        try:
            socks = stall(uurl, args.slow)
            try:
                time.sleep(1.0)
                unhardened = health_latencies(uurl, 5, 5.0)
            finally:
                for s in socks:
                    s.close()
        finally:
            stop(uproc)
        print(f"unhardened (gunicorn alone, 8 threads): {fmt(unhardened)}")


if __name__ == "__main__":
    main()
