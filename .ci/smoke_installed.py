#!/usr/bin/env python3
"""Check an installed pslg-annotate (a built wheel in some venv) the way a user first meets it.

    VENV/bin/python .ci/smoke_installed.py [WORK_DIR]

Run with the venv's own python, from outside the clone (WORK_DIR, default a temporary folder, is the working
directory): the toolkit must be imported from the venv, not from a source tree. Three checks, each printed:

1. ``pslg --version`` names the installed version;
2. ``pslg segment`` on a generated image (a bright square on a dark textured ground, box around it) writes a
   mask that covers the square (IoU > 0.8);
3. ``pslg serve`` on a free loopback port answers ``/health`` with JSON, and stops on SIGTERM.

Exit 0 when all pass; otherwise the first failure is printed and the exit code is 1. Used by CI's
lowest-versions job (``.ci/lowest``) and by ``tests/packaging/test_wheel.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

BIN = Path(sys.executable).parent


def fail(message: str) -> "None":
    print(f"smoke: FAILED: {message}", flush=True)
    raise SystemExit(1)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "pslg"), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def check_import_location() -> None:
    import annotate

    where = Path(annotate.__file__).resolve()
    if Path(sys.prefix).resolve() not in where.parents:
        fail(f"annotate was imported from {where}, not from the venv {sys.prefix}")
    print(f"smoke: annotate imported from {where.parent}", flush=True)


def check_version(work: Path) -> None:
    res = run("--version", cwd=work)
    expected = f"pslg {version('pslg-annotate')}"
    if res.returncode != 0 or res.stdout.strip() != expected:
        fail(f"pslg --version: exit {res.returncode}, {res.stdout.strip()!r} (expected {expected!r}) {res.stderr[-500:]}")
    print(f"smoke: {expected}", flush=True)


def check_segment(work: Path) -> None:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    image = rng.integers(20, 60, size=(160, 200, 3), dtype=np.uint8)
    truth = np.zeros((160, 200), bool)
    truth[50:110, 70:140] = True
    image[truth] = (200, 190, 60)
    cv2.imwrite(str(work / "scene.png"), image)
    res = run("segment", "scene.png", "--box", "62,42,148,118", "--out", "out", "--quiet", cwd=work)
    if res.returncode != 0:
        fail(f"pslg segment: exit {res.returncode}: {res.stderr[-1500:]}")
    mask = cv2.imread(str(work / "out" / "mask.png"), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        fail("pslg segment wrote no out/mask.png")
    got = mask > 0
    iou = float((got & truth).sum()) / max(1, float((got | truth).sum()))
    if iou <= 0.8:
        fail(f"pslg segment: mask IoU {iou:.3f} with the square (expected > 0.8)")
    results = json.loads((work / "out" / "results.json").read_text())
    print(f"smoke: pslg segment: IoU {iou:.3f}, model {results[0]['model_version']}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_serve(work: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "PSLG_", "BASIC_AUTH"))}
    env.update({"MODEL_DIR": str(work / "model"), "HOME": str(work), "XDG_RUNTIME_DIR": str(work)})
    proc = subprocess.Popen([str(BIN / "pslg"), "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", "2"],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    health = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    health = json.loads(r.read())
                break
            except (OSError, ValueError):
                time.sleep(0.3)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            log = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            log = proc.communicate()[0]
    if not isinstance(health, dict):
        fail(f"pslg serve never answered /health with JSON: {log[-1500:]}")
    print(f"smoke: pslg serve /health: {json.dumps(health)[:200]}", flush=True)


def main() -> int:
    work = (Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="pslg-smoke-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    check_import_location()
    check_version(work)
    check_segment(work)
    check_serve(work)
    print("smoke: all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
