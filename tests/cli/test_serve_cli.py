"""`pslg serve` as a process: two instances of one user keep their own gunicorn control socket, SIGTERM says
"interrupted", --local-image-root reaches the backend's settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.labelstudio_server import REPO_ROOT, free_port


def _start(tmp: Path, port: int, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "PSLG_", "BASIC_AUTH"))}
    env.update({"HOME": str(tmp / "home"), "XDG_RUNTIME_DIR": str(tmp / "run"), "MODEL_DIR": str(tmp / f"m{port}"),
                "PYTHONPATH": str(REPO_ROOT)})
    (tmp / "run").mkdir(exist_ok=True, mode=0o700)
    return subprocess.Popen([sys.executable, "-m", "converters.cli.main", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--threads", "2", *args], cwd=tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_health(proc: subprocess.Popen, port: int) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
        except (requests.RequestException, ValueError):
            time.sleep(0.3)
    raise AssertionError("pslg serve never answered /health")


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()[0]


def test_two_instances_keep_their_own_control_socket_and_sigterm_says_interrupted(tmp_path: Path) -> None:
    import gunicorn.config

    ports = [free_port(), free_port()]
    procs = [_start(tmp_path, p) for p in ports]
    try:
        for proc, port in zip(procs, ports):
            assert isinstance(_wait_health(proc, port), dict)
        if any(s.name == "control_socket" for s in gunicorn.config.KNOWN_SETTINGS):  # gunicorn >= 25.1
            deadline = time.monotonic() + 20
            sockets = [tmp_path / "run" / f"pslg-serve-127.0.0.1-{p}.ctl" for p in ports]
            while time.monotonic() < deadline and not all(s.exists() for s in sockets):
                time.sleep(0.2)
            assert all(s.exists() for s in sockets), sorted(os.listdir(tmp_path / "run"))
            assert not (tmp_path / "run" / "gunicorn.ctl").exists()
    finally:
        outputs = [_stop(p) for p in procs]
    for proc, out in zip(procs, outputs):
        assert "interrupted: the backend stopped" in out, out[-2000:]
        assert "Traceback" not in out, out[-3000:]


def test_local_image_root_and_label_map_reach_the_backend_settings(tmp_path: Path, monkeypatch) -> None:
    import backend.server
    from typer.testing import CliRunner

    from converters.cli.main import app

    seen = {}
    monkeypatch.setattr(backend.server, "serve", lambda **kw: seen.update(kw))
    monkeypatch.delenv("PSLG_LOCAL_IMAGE_ROOT", raising=False)
    res = CliRunner().invoke(app, ["serve", "--host", "127.0.0.1", "--local-image-root", str(tmp_path),
                                   "--label-map", "harbor=building"])
    assert res.exit_code == 0, res.output
    assert seen["settings"].local_image_root == str(tmp_path) and seen["settings"].label_map == "harbor=building"
    bad = CliRunner().invoke(app, ["serve", "--label-map", "harbor"])
    assert bad.exit_code == 2 and "not CATEGORY=LABEL" in bad.output
