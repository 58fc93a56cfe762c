"""Image fetching and token handling against a small HTTP server playing Label Studio (and a foreign host).

The real Label Studio is exercised in test_e2e.py; here we control what the server does (expire access tokens,
count requests, send oversized bodies) to prove the refresh-on-401 path and that tokens never leave the host.
"""

from __future__ import annotations

import threading
from typing import Iterator

import pytest
from flask import Flask, Response, request
from werkzeug.serving import make_server

from converters.labelstudio.fetch import ImageFetcher, ImageFetchError, LabelStudioAuth, is_personal_access_token

PAT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJl"
LEGACY = "0123456789abcdef0123456789abcdef01234567"
PNG = b"\x89PNG fake bytes"


class FakeLabelStudio:
    """Issues access tokens for PAT, accepts only the latest one (or the legacy key) on /data/upload."""

    def __init__(self) -> None:
        self.app = Flask("fake-ls")
        self.issued = 0
        self.valid_access: set[str] = set()
        self.seen_auth: list[str] = []

        @self.app.post("/api/token/refresh/")
        def refresh():
            if (request.get_json(silent=True) or {}).get("refresh") != PAT:
                return {"detail": "Token is invalid"}, 401
            self.issued += 1
            token = f"access-{self.issued}"
            self.valid_access = {token}
            return {"access": token}

        @self.app.get("/data/upload/<path:name>")
        def upload(name: str):
            auth = request.headers.get("Authorization", "")
            self.seen_auth.append(auth)
            if auth == f"Token {LEGACY}" or (auth.startswith("Bearer ") and auth[7:] in self.valid_access):
                return Response(PNG, mimetype="image/png")
            return {"detail": "Authentication credentials were not provided."}, 401

        @self.app.get("/big.png")
        def big():
            return Response(b"x" * 5000, mimetype="image/png")

    def expire(self) -> None:
        self.valid_access = set()


class Foreign:
    def __init__(self) -> None:
        self.app = Flask("foreign")
        self.seen_auth: list[str] = []

        @self.app.get("/img.png")
        def img():
            self.seen_auth.append(request.headers.get("Authorization", ""))
            return Response(PNG, mimetype="image/png")

        @self.app.get("/slow.png")
        def slow():
            import time

            def gen():
                for _ in range(50):
                    time.sleep(0.1)
                    yield b"x" * 10

            return Response(gen(), mimetype="image/png")


def _serve(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture()
def fake_ls() -> Iterator[tuple[FakeLabelStudio, str]]:
    fake = FakeLabelStudio()
    for url in _serve(fake.app):
        yield fake, url


@pytest.fixture()
def foreign() -> Iterator[tuple[Foreign, str]]:
    fake = Foreign()
    for url in _serve(fake.app):
        yield fake, url


def test_token_kind_detection():
    assert is_personal_access_token(PAT)
    assert not is_personal_access_token(LEGACY)
    assert not is_personal_access_token("a.b.c")


def test_pat_is_exchanged_cached_and_reexchanged_on_401(fake_ls):
    fake, url = fake_ls
    fetcher = ImageFetcher(LabelStudioAuth(url, PAT))
    assert fetcher.fetch("/data/upload/1/a.png") == PNG
    assert fetcher.fetch("/data/upload/1/a.png") == PNG
    assert fake.issued == 1  # the access token is reused
    fake.expire()  # Label Studio now answers 401 to the cached access token
    assert fetcher.fetch(f"{url}/data/upload/1/a.png") == PNG
    assert fake.issued == 2
    assert fake.seen_auth[-1] == "Bearer access-2"
    assert all(PAT not in a for a in fake.seen_auth)  # the refresh token itself is never sent as a credential


def test_legacy_token(fake_ls):
    fake, url = fake_ls
    assert ImageFetcher(LabelStudioAuth(url, LEGACY)).fetch("/data/upload/1/a.png") == PNG
    assert fake.seen_auth == [f"Token {LEGACY}"] and fake.issued == 0


def test_wrong_tokens_give_clear_errors_without_the_token(fake_ls):
    _, url = fake_ls
    bad_pat = PAT[:-3] + "xyz"
    with pytest.raises(ImageFetchError) as err:
        ImageFetcher(LabelStudioAuth(url, bad_pat)).fetch("/data/upload/1/a.png")
    assert "personal access token" in str(err.value) and bad_pat not in str(err.value)
    with pytest.raises(ImageFetchError) as err:
        ImageFetcher(LabelStudioAuth(url, "f" * 40)).fetch("/data/upload/1/a.png")
    assert "HTTP 401" in str(err.value) and "/data/upload/1/a.png" in str(err.value) and "f" * 40 not in str(err.value)


def test_token_only_goes_to_the_label_studio_host(fake_ls, foreign):
    _, ls_url = fake_ls
    other, other_url = foreign
    fetcher = ImageFetcher(LabelStudioAuth(ls_url, LEGACY))
    assert fetcher.fetch(f"{other_url}/img.png") == PNG
    assert other.seen_auth == [""]


def test_limits_and_bad_urls(fake_ls, foreign):
    _, ls_url = fake_ls
    _, other_url = foreign
    with pytest.raises(ImageFetchError, match="over the limit"):
        ImageFetcher(max_bytes=1000).fetch(f"{ls_url}/big.png")
    with pytest.raises(ImageFetchError, match="longer than"):
        ImageFetcher(timeout_s=0.5).fetch(f"{other_url}/slow.png")
    with pytest.raises(ImageFetchError, match="LABEL_STUDIO_URL"):
        ImageFetcher().fetch("/data/upload/1/a.png")
    with pytest.raises(ImageFetchError, match="s3"):
        ImageFetcher().fetch("s3://bucket/a.png")
    with pytest.raises(ImageFetchError, match="could not connect"):
        ImageFetcher(timeout_s=2).fetch("http://127.0.0.1:9/none.png")


def test_local_files_are_read_from_the_shared_root_only(tmp_path):
    root = tmp_path / "root"
    (root / "p").mkdir(parents=True)
    (root / "p" / "a.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(b"secret")
    fetcher = ImageFetcher(local_files_root=root)
    assert fetcher.fetch("/data/local-files/?d=p/a.png") == PNG
    with pytest.raises(ImageFetchError):  # ../ escapes the root: not read from disk (and no LS host to ask)
        fetcher.fetch("/data/local-files/?d=../secret.png")


def test_presigned_query_strings_stay_out_of_errors(foreign):
    _, url = foreign
    with pytest.raises(ImageFetchError) as err:
        ImageFetcher().fetch(f"{url}/missing.png?X-Amz-Signature=SECRET123")
    assert "SECRET123" not in str(err.value) and "/missing.png" in str(err.value)
