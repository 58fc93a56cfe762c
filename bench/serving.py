"""What the backend benchmarks share: a free loopback port and `pslg serve` started and waited for."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(env: dict[str, str], work: Path, tag: str, threads: int = 16,
          timeout_s: float = 600.0) -> tuple[subprocess.Popen, str, dict, float]:
    """Start ``pslg serve`` on loopback (log in ``work/backend-<tag>.log``) and wait until ``/health`` says ready.

    Returns (process, url, /health body, seconds until ready); exits with the log's tail when it does not start.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / f"backend-{tag}.log"
    proc = subprocess.Popen([sys.executable, "-m", "converters.cli.main", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--threads", str(threads)], cwd=str(REPO), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    t0 = time.perf_counter()
    while True:
        try:
            health = requests.get(f"{url}/health", timeout=2).json()
            if health.get("ready"):
                return proc, url, health, time.perf_counter() - t0
            if health.get("models") == "error":
                raise SystemExit(f"backend failed to load: {health.get('error')}")
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.perf_counter() - t0 > timeout_s:
            raise SystemExit(f"backend did not start; log: {log.read_text()[-2000:]}")
        time.sleep(0.2)
