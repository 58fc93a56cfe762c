"""Checkpoint download / resume / verification against a local HTTP server, through the library and the CLI."""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

from annotate import checkpoints
from annotate.checkpoints import (
    CheckpointError,
    CheckpointOfflineError,
    CheckpointSpec,
    ChecksumMismatchError,
    download_checkpoint,
    verify_file,
)
from converters.cli.main import app

PAYLOAD = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)  # ~3 MB of pseudo-random bytes
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


@dataclass
class ServerState:
    payload: bytes = PAYLOAD
    honour_range: bool = True
    drop_after: int | None = None  # close the connection after sending this many body bytes (once)
    requests: list[dict] = field(default_factory=list)
    bytes_sent: int = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    state: ServerState

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        st = self.state
        rng = self.headers.get("Range")
        st.requests.append({"path": self.path, "range": rng})
        if self.path != "/ckpt.pth":
            self.send_error(404)
            return
        data, start = st.payload, 0
        if rng and st.honour_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if st.drop_after is not None:
            cut, st.drop_after = st.drop_after, None
            self.wfile.write(body[:cut])
            st.bytes_sent += cut
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)
        st.bytes_sent += len(body)


@pytest.fixture()
def server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _fake_spec(base_url: str, **over) -> CheckpointSpec:
    kw = dict(
        name="vit_b", filename="sam_vit_b_01ec64.pth", url=f"{base_url}/ckpt.pth", size=len(PAYLOAD),
        sha256=PAYLOAD_SHA, md5=PAYLOAD_MD5, description="fake",
    )
    kw.update(over)
    return CheckpointSpec(**kw)


@pytest.fixture()
def fake_registry(server, monkeypatch) -> tuple[CheckpointSpec, ServerState]:
    base, state = server
    spec = _fake_spec(base)
    monkeypatch.setitem(checkpoints.KNOWN_CHECKPOINTS, "vit_b", spec)
    return spec, state


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------------------------------------ library


def test_full_download_verifies_and_renames(fake_registry, tmp_path: Path) -> None:
    spec, state = fake_registry
    path = download_checkpoint("vit_b", tmp_path, progress=True)  # with the tqdm bar (stderr)
    assert path == tmp_path / spec.filename
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / (spec.filename + ".part")).exists()
    assert state.requests == [{"path": "/ckpt.pth", "range": None}]
    # already there and valid: no network
    assert download_checkpoint("vit_b", tmp_path, progress=False) == path
    assert len(state.requests) == 1
    assert verify_file(path, spec).ok


def test_concurrent_pulls_download_once_and_agree(fake_registry, tmp_path: Path) -> None:
    """Two `pslg models pull` runs (or backend workers) at once: one downloads, the others wait and reuse it."""
    from concurrent.futures import ThreadPoolExecutor

    spec, state = fake_registry
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: download_checkpoint("vit_b", tmp_path, progress=False), range(4)))
    assert set(paths) == {tmp_path / spec.filename}
    assert paths[0].read_bytes() == PAYLOAD
    assert len(state.requests) == 1
    assert not (tmp_path / (spec.filename + ".part")).exists()


def test_resume_requests_only_the_missing_bytes(fake_registry, tmp_path: Path) -> None:
    spec, state = fake_registry
    half = len(PAYLOAD) // 2
    (tmp_path / (spec.filename + ".part")).write_bytes(PAYLOAD[:half])
    path = download_checkpoint("vit_b", tmp_path, progress=False)
    assert state.requests == [{"path": "/ckpt.pth", "range": f"bytes={half}-"}]
    assert state.bytes_sent == len(PAYLOAD) - half
    assert path.read_bytes() == PAYLOAD


def test_interrupted_transfer_keeps_part_then_resumes(fake_registry, tmp_path: Path) -> None:
    spec, state = fake_registry
    state.drop_after = 1_000_000
    with pytest.raises(CheckpointError, match="run the same command again to resume"):
        download_checkpoint("vit_b", tmp_path, progress=False)
    part = tmp_path / (spec.filename + ".part")
    kept = part.stat().st_size
    # everything received in whole network reads is kept (the last partial read may be lost)
    assert 900_000 < kept <= 1_000_000
    assert part.read_bytes() == PAYLOAD[:kept]
    assert not (tmp_path / spec.filename).exists()
    path = download_checkpoint("vit_b", tmp_path, progress=False)
    assert state.requests[-1]["range"] == f"bytes={kept}-"
    assert path.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_cleanly(fake_registry, tmp_path: Path) -> None:
    spec, state = fake_registry
    state.honour_range = False
    (tmp_path / (spec.filename + ".part")).write_bytes(b"x" * 1000)  # wrong bytes: must be discarded
    path = download_checkpoint("vit_b", tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_complete_part_is_verified_without_downloading(fake_registry, tmp_path: Path) -> None:
    spec, state = fake_registry
    (tmp_path / (spec.filename + ".part")).write_bytes(PAYLOAD)
    assert download_checkpoint("vit_b", tmp_path, progress=False).read_bytes() == PAYLOAD
    assert state.requests == []


def test_sha_mismatch_leaves_no_file(server, tmp_path: Path) -> None:
    base, _state = server
    spec = _fake_spec(base, sha256="0" * 64)
    with pytest.raises(ChecksumMismatchError, match="sha256 .* expected 0000"):
        download_checkpoint(spec, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_offline_error_names_host_and_directory(tmp_path: Path) -> None:
    port = _closed_port()
    spec = _fake_spec(f"http://127.0.0.1:{port}")
    with pytest.raises(CheckpointOfflineError) as info:
        download_checkpoint(spec, tmp_path, progress=False)
    msg = str(info.value)
    assert f"cannot reach 127.0.0.1:{port}: offline?" in msg and str(tmp_path) in msg


def test_http_error_status(server, tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(CheckpointError, match="HTTP 404"):
        download_checkpoint(_fake_spec(base, url=f"{base}/missing.pth"), tmp_path, progress=False)


def test_registry_entries_are_consistent() -> None:
    for name, spec in checkpoints.KNOWN_CHECKPOINTS.items():
        assert spec.name == name and spec.url.endswith("/" + spec.filename)
        assert spec.url.startswith("https://dl.fbaipublicfiles.com/segment_anything/")
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256 or "")
        # the hash in the official file name is the start of the md5
        assert spec.md5 and spec.filename.split("_")[-1].split(".")[0] == spec.md5[:6]


def test_cache_dir_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PSLG_CACHE_DIR", str(tmp_path))
    assert checkpoints.default_cache_dir() == tmp_path / "checkpoints"
    assert checkpoints.checkpoint_path("vit_h") == tmp_path / "checkpoints" / "sam_vit_h_4b8939.pth"
    assert checkpoints.resolve_checkpoint("vit_l") == tmp_path / "checkpoints" / "sam_vit_l_0b3195.pth"
    assert checkpoints.resolve_checkpoint(str(tmp_path / "x.pth")) == tmp_path / "x.pth"
    with pytest.raises(KeyError, match="known: vit_h, vit_l, vit_b"):
        checkpoints.get_spec("vit_x")


# ------------------------------------------------------------------------------------------------ CLI

runner = CliRunner()


def test_cli_pull_list_verify(fake_registry, tmp_path: Path) -> None:
    spec, _state = fake_registry
    res = runner.invoke(app, ["models", "list", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert PAYLOAD_SHA in res.output and "no" in res.output

    res = runner.invoke(app, ["models", "pull", "vit_b", "--cache-dir", str(tmp_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / spec.filename).read_bytes() == PAYLOAD

    res = runner.invoke(app, ["models", "list", "--cache-dir", str(tmp_path)])
    assert re.search(r"vit_b .*\byes\b", res.output)

    res = runner.invoke(app, ["models", "verify", "vit_b", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 0 and "OK" in res.output
    res = runner.invoke(app, ["models", "verify", str(tmp_path / spec.filename)])
    assert res.exit_code == 0 and PAYLOAD_SHA in res.output
    res = runner.invoke(app, ["models", "verify", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 0

    corrupt = bytearray(PAYLOAD)
    corrupt[12345] ^= 0xFF
    (tmp_path / spec.filename).write_bytes(bytes(corrupt))
    res = runner.invoke(app, ["models", "verify", "vit_b", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 1 and "sha256" in res.output and "FAILED" in res.output


def test_cli_pull_with_url_override_and_partial_listing(server, monkeypatch, tmp_path: Path) -> None:
    base, state = server
    monkeypatch.setitem(checkpoints.KNOWN_CHECKPOINTS, "vit_b", _fake_spec("https://unreachable.invalid"))
    (tmp_path / "sam_vit_b_01ec64.pth.part").write_bytes(PAYLOAD[: len(PAYLOAD) // 4])
    res = runner.invoke(app, ["models", "list", "--cache-dir", str(tmp_path)])
    assert "partial 25%" in res.output
    res = runner.invoke(
        app, ["models", "pull", "vit_b", "--url", f"{base}/ckpt.pth", "--cache-dir", str(tmp_path), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert state.requests == [{"path": "/ckpt.pth", "range": f"bytes={len(PAYLOAD) // 4}-"}]


def test_cli_offline_message_and_exit_code(monkeypatch, tmp_path: Path) -> None:
    port = _closed_port()
    monkeypatch.setitem(checkpoints.KNOWN_CHECKPOINTS, "vit_b", _fake_spec(f"http://127.0.0.1:{port}"))
    res = runner.invoke(app, ["models", "pull", "vit_b", "--cache-dir", str(tmp_path), "--no-progress"])
    assert res.exit_code == 1
    assert f"cannot reach 127.0.0.1:{port}: offline?" in res.output
    assert "Traceback" not in res.output
    assert isinstance(res.exception, SystemExit)


def test_cli_sha_mismatch_and_usage_errors(server, monkeypatch, tmp_path: Path) -> None:
    base, _ = server
    monkeypatch.setitem(checkpoints.KNOWN_CHECKPOINTS, "vit_b", _fake_spec(base, sha256="f" * 64))
    res = runner.invoke(app, ["models", "pull", "vit_b", "--cache-dir", str(tmp_path), "--no-progress"])
    assert res.exit_code == 1 and "does not verify" in res.output
    assert not (tmp_path / "sam_vit_b_01ec64.pth").exists()
    res = runner.invoke(app, ["models", "pull", "vit_x", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 2 and "unknown checkpoint 'vit_x'" in res.output
    res = runner.invoke(app, ["models", "verify", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 1 and "no checkpoint in" in res.output
    res = runner.invoke(app, ["models", "verify", "vit_b", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 1 and "missing; run `pslg models pull vit_b`" in res.output
    other = tmp_path / "other.pth"
    other.write_bytes(b"abc")
    res = runner.invoke(app, ["models", "verify", str(other)])
    assert res.exit_code == 1 and hashlib.sha256(b"abc").hexdigest() in res.output
