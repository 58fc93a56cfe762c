"""A real Label Studio 1.23 server for end-to-end tests, started once per pytest session.

Why a module and not a conftest: several test areas (backend, converters) need the same server, and Label
Studio costs ≈ 40–55 s to initialise (migrations) plus ≈ 7 s to start. Each area's ``conftest.py`` imports the
``labelstudio_server`` fixture from here; the server itself is a module-level singleton, so however many
conftests import the fixture, one process is started per test session and stopped at interpreter exit.

Usage in a conftest::

    from tests.support.labelstudio_server import labelstudio_server  # noqa: F401  (re-exported fixture)

and in a test::

    @pytest.mark.e2e
    def test_something(labelstudio_server):
        ls = labelstudio_server
        requests.get(f"{ls.url}/api/projects", headers=ls.auth_headers("pat"))

The server runs on 127.0.0.1 with a free port, a temporary ``LABEL_STUDIO_BASE_DATA_DIR``, local-file serving
enabled under ``ls.files_root`` and the two switches an ML backend on loopback needs
(``ML_BLOCK_LOCAL_IP=false``, ``SSRF_PROTECTION_ENABLED=false``; see ``shared/reference/environment.md``).

Skip policy: when the Label Studio binary (``.ls-venv/bin/label-studio``, or ``$PSLG_LABEL_STUDIO_BIN``) is
absent the e2e tests are skipped with the reason, except when ``PSLG_REQUIRE_E2E=1`` (CI), where they fail.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / ".ls-venv" / "bin" / "label-studio"

INIT_TIMEOUT_S = 300.0
START_TIMEOUT_S = 120.0

TokenKind = Literal["legacy", "pat", "access"]


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def label_studio_bin() -> Path:
    """Where the Label Studio executable is expected (``$PSLG_LABEL_STUDIO_BIN`` overrides)."""
    return Path(os.environ.get("PSLG_LABEL_STUDIO_BIN", str(DEFAULT_BIN)))


def e2e_required() -> bool:
    """True in CI (``PSLG_REQUIRE_E2E=1``): a missing Label Studio must fail the e2e tests, not skip them."""
    return os.environ.get("PSLG_REQUIRE_E2E", "").strip() not in ("", "0", "false", "False")


def skip_or_fail(reason: str) -> None:
    """Skip the calling test with ``reason``, or fail it when e2e tests are required."""
    if e2e_required():
        pytest.fail(f"PSLG_REQUIRE_E2E=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class LabelStudioServer:
    """A running Label Studio, with the credentials of its single (admin) user.

    ``legacy_token`` is the 40-hex "Token" key (legacy tokens are enabled for the organisation);
    ``pat`` is a personal access token (a JWT refresh token) created through ``POST /api/token/``.
    ``files_root`` is ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``: put images in a sub-folder
    (:meth:`local_files_dir`) and connect it with :meth:`connect_local_storage` before tasks refer to them as
    ``/data/local-files/?d=<path relative to files_root>``.
    """

    url: str
    host: str
    port: int
    username: str
    password: str
    legacy_token: str
    pat: str
    base_dir: Path
    data_dir: Path
    files_root: Path
    log_path: Path
    process: Optional[subprocess.Popen] = field(default=None, repr=False)

    # --- tokens -------------------------------------------------------------------------------------
    def access_token(self) -> str:
        """A fresh short-lived access token exchanged from the PAT (``POST /api/token/refresh``)."""
        r = requests.post(f"{self.url}/api/token/refresh/", json={"refresh": self.pat}, timeout=30)
        r.raise_for_status()
        return str(r.json()["access"])

    def auth_headers(self, kind: TokenKind = "legacy") -> dict[str, str]:
        """``Authorization`` header for ``kind``: the legacy ``Token`` key, or a Bearer access token from the PAT."""
        if kind == "legacy":
            return {"Authorization": f"Token {self.legacy_token}"}
        return {"Authorization": f"Bearer {self.access_token()}"}

    def api(self, method: str, path: str, kind: TokenKind = "legacy", **kwargs) -> requests.Response:
        """Call the REST API (``path`` starts with ``/api/``), raising on HTTP errors with Label Studio's body."""
        kwargs.setdefault("timeout", 120)
        headers = {**self.auth_headers(kind), **kwargs.pop("headers", {})}
        r = requests.request(method, f"{self.url}{path}", headers=headers, **kwargs)
        if r.status_code >= 400:
            raise AssertionError(f"Label Studio {method} {path} answered {r.status_code}: {r.text[:500]}")
        return r

    def sdk(self, kind: TokenKind = "legacy"):
        """A ``label_studio_sdk.LabelStudio`` client (the SDK handles PAT refresh itself)."""
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self.legacy_token if kind == "legacy" else self.pat)

    # --- local files -----------------------------------------------------------------------------------
    def local_files_dir(self, name: str) -> Path:
        """A new folder under ``files_root`` for one project's images (Label Studio refuses the root itself)."""
        d = self.files_root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def local_file_url(self, path: Path) -> str:
        """The task URL Label Studio serves ``path`` at (``path`` must lie under ``files_root``)."""
        rel = Path(path).resolve().relative_to(self.files_root.resolve())
        return f"/data/local-files/?d={rel.as_posix()}"

    def connect_local_storage(self, project_id: int, folder: Path) -> dict:
        """Connect ``folder`` as a Local Storage of the project: without it ``/data/local-files`` answers 404."""
        r = self.api(
            "POST",
            "/api/storages/localfiles",
            json={"project": project_id, "path": str(Path(folder).resolve()), "use_blob_urls": False, "title": folder.name},
        )
        return r.json()

    # --- lifecycle -------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Terminate the server's process group (the process we started, and only it)."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process = None


def _ls_env(base: Path, files_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Our own project venv must not leak into Label Studio's interpreter.
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "DJANGO_SETTINGS_MODULE"):
        env.pop(key, None)
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(base / "data"),
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "COLLECT_ANALYTICS": "false",
        }
    )
    return env


def start_label_studio(binary: Optional[Path] = None, base_dir: Optional[Path] = None) -> LabelStudioServer:
    """Initialise and start a Label Studio in ``base_dir`` (a new temp dir by default); raise on failure."""
    binary = Path(binary or label_studio_bin())
    base = Path(base_dir or tempfile.mkdtemp(prefix="pslg-ls-"))
    data_dir = base / "data"
    files_root = base / "files"
    files_root.mkdir(parents=True, exist_ok=True)
    log_path = base / "label-studio.log"
    env = _ls_env(base, files_root)
    username, password = "pslg-e2e@example.com", secrets.token_hex(12)
    legacy = secrets.token_hex(20)

    with open(log_path, "ab") as log:
        init = subprocess.run(
            [
                str(binary), "init", str(data_dir), "--username", username, "--password", password,
                "--user-token", legacy, "--enable-legacy-api-token", "--no-browser",
            ],
            env=env, stdout=log, stderr=subprocess.STDOUT, timeout=INIT_TIMEOUT_S, cwd=str(base),
        )
    if init.returncode != 0:
        raise RuntimeError(f"label-studio init failed (rc {init.returncode}); log: {log_path}\n{_tail(log_path)}")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [str(binary), "start", str(data_dir), "--host", "127.0.0.1", "--port", str(port), "--no-browser"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(base), start_new_session=True,
    )
    server = LabelStudioServer(
        url=url, host="127.0.0.1", port=port, username=username, password=password, legacy_token=legacy,
        pat="", base_dir=base, data_dir=data_dir, files_root=files_root, log_path=log_path, process=proc,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"label-studio start exited with rc {proc.returncode}; log: {log_path}\n{_tail(log_path)}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"label-studio did not answer /health within {START_TIMEOUT_S:.0f} s; log: {log_path}")
        time.sleep(0.5)
    try:
        r = requests.post(f"{url}/api/token/", headers={"Authorization": f"Token {legacy}"}, timeout=60)
        r.raise_for_status()
        server.pat = str(r.json()["token"])
    except Exception:
        server.stop()
        raise
    return server


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


_SERVER: Optional[LabelStudioServer] = None
_START_ERROR: Optional[str] = None


def _shutdown() -> None:
    if _SERVER is not None:
        _SERVER.stop()
        if os.environ.get("PSLG_KEEP_LS_DIR", "") in ("", "0"):
            shutil.rmtree(_SERVER.base_dir, ignore_errors=True)


def get_server() -> LabelStudioServer:
    """The session's server, started on first use; skips (or fails, in CI) when Label Studio is absent."""
    global _SERVER, _START_ERROR
    binary = label_studio_bin()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        skip_or_fail(f"Label Studio is not installed at {binary} (run `bash setup.sh --with-label-studio`, or set PSLG_LABEL_STUDIO_BIN)")
    if _START_ERROR is not None:
        pytest.fail(f"Label Studio failed to start earlier in this session: {_START_ERROR}", pytrace=False)
    if _SERVER is None:
        try:
            _SERVER = start_label_studio(binary)
        except Exception as exc:  # a broken install is a failure, never a silent skip
            _START_ERROR = str(exc)
            pytest.fail(f"Label Studio failed to start: {exc}", pytrace=False)
        atexit.register(_shutdown)
    return _SERVER


@pytest.fixture(scope="session")
def labelstudio_server() -> LabelStudioServer:
    """A running Label Studio 1.23 shared by the whole session (see the module docstring)."""
    return get_server()
