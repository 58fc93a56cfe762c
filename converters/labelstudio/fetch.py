"""Fetching task images: Label Studio uploads and local files, http(s) URLs, with both token kinds.

Why this module exists: wrong token handling is the most reported failure of existing SAM backends. Label Studio
≥ 1.18 hands out *personal access tokens* (PATs, JWT refresh tokens) that must be exchanged at
``POST /api/token/refresh`` for a short-lived access token sent as ``Authorization: Bearer``; legacy tokens go
as ``Authorization: Token <key>``. The token is only ever sent to the Label Studio host itself, never to an
arbitrary image URL a task names. Downloads are bounded in size and time, and every error names the URL
(without any token).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit

import requests

log = logging.getLogger("pslg.labelstudio.fetch")


class ImageFetchError(ValueError):
    """An image could not be fetched; the message names the URL and never contains a token."""


class TokenError(ImageFetchError):
    """The Label Studio token was refused (or could not be exchanged)."""


def is_personal_access_token(token: str) -> bool:
    """A PAT is a JWT: three base64url segments whose header decodes to JSON. Legacy keys are 40 hex chars."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and "alg" in header


def display_url(url: str) -> str:
    """``url`` as shown in logs and errors: query strings are dropped (presigned URLs carry credentials there),
    except Label Studio's own ``/data/local-files/?d=<path>``, which names the file."""
    parts = urlsplit(url)
    if not parts.query or parts.path.rstrip("/").endswith("/data/local-files"):
        return url
    return url.split("?", 1)[0] + "?…"


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


class LabelStudioAuth:
    """Authorization for one Label Studio host and token: detects the kind, exchanges and caches PAT access.

    Thread-safe: gunicorn threads share one instance; the access token is refreshed once when a request gets 401.
    """

    #: Label Studio's access tokens live 5 minutes by default; refresh a little before.
    ACCESS_TTL_S = 240.0

    def __init__(self, url: str, token: str, session: Optional[requests.Session] = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.kind = "pat" if is_personal_access_token(token) else "legacy"
        self._session = session or requests.Session()
        self._timeout = timeout
        self._access: Optional[str] = None
        self._access_at = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the token
        return f"LabelStudioAuth(url={self.url!r}, kind={self.kind!r})"

    def same_host(self, url: str) -> bool:
        """Whether ``url`` points at this Label Studio (same scheme, host and port): only then is the token sent."""
        return _origin(url) == _origin(self.url)

    def _exchange(self) -> str:
        try:
            r = self._session.post(f"{self.url}/api/token/refresh/", json={"refresh": self._token}, timeout=self._timeout)
        except requests.RequestException as exc:
            raise TokenError(f"could not reach Label Studio at {self.url} to exchange the personal access token: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise TokenError(
                f"Label Studio at {self.url} refused the personal access token (HTTP {r.status_code} from /api/token/refresh): "
                "check LABEL_STUDIO_API_KEY (Account & Settings → Personal Access Token)"
            )
        try:
            return str(r.json()["access"])
        except (ValueError, KeyError):
            raise TokenError(f"Label Studio at {self.url} answered /api/token/refresh without an access token") from None

    def headers(self, refresh: bool = False) -> dict[str, str]:
        """The ``Authorization`` header; ``refresh=True`` forces a new PAT exchange (after a 401)."""
        if self.kind == "legacy":
            return {"Authorization": f"Token {self._token}"}
        with self._lock:
            if refresh or self._access is None or time.monotonic() - self._access_at > self.ACCESS_TTL_S:
                self._access = self._exchange()
                self._access_at = time.monotonic()
            return {"Authorization": f"Bearer {self._access}"}


class ImageFetcher:
    """Downloads image bytes for task URLs, with limits, and keeps the last few decoded images in memory.

    ``auth`` is the Label Studio host and token used for relative URLs (``/data/upload/...``,
    ``/data/local-files/?d=...``) and for absolute URLs on that same host. ``local_files_root`` (the
    ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` both share on one machine) lets local files be read from disk.
    """

    def __init__(
        self,
        auth: Optional[LabelStudioAuth] = None,
        max_bytes: int = 64 * 1024 * 1024,
        timeout_s: float = 30.0,
        local_files_root: Optional[str | Path] = None,
        session: Optional[requests.Session] = None,
    ) -> None:
        self.auth = auth
        self.max_bytes = int(max_bytes)
        self.timeout_s = float(timeout_s)
        self.local_files_root = Path(local_files_root).resolve() if local_files_root else None
        self._session = session or requests.Session()

    def resolve(self, url: str) -> str:
        """An absolute URL for ``url`` (relative Label Studio paths get the Label Studio host)."""
        if url.startswith("/"):
            if self.auth is None:
                raise ImageFetchError(
                    f"image {url} is a Label Studio path but the Label Studio URL is unknown: set LABEL_STUDIO_URL "
                    "and LABEL_STUDIO_API_KEY (or connect the backend from Label Studio, which sends them in /setup)"
                )
            return self.auth.url + url
        return url

    def _local_path(self, url: str) -> Optional[Path]:
        """The file behind a ``/data/local-files/?d=...`` URL when it lies under our local-files root."""
        if self.local_files_root is None:
            return None
        parts = urlsplit(url)
        if not parts.path.rstrip("/").endswith("/data/local-files"):
            return None
        d = parse_qs(parts.query).get("d")
        if not d:
            return None
        path = (self.local_files_root / unquote(d[0])).resolve()
        # never read outside the root the operator shared
        if self.local_files_root not in path.parents or not path.is_file():
            return None
        return path

    def fetch(self, url: str) -> bytes:
        """The bytes at ``url``; raises ``ImageFetchError`` naming the URL (never a token)."""
        if not isinstance(url, str) or not url.strip():
            raise ImageFetchError(f"image URL {url!r} is empty or not a string")
        url = url.strip()
        shown = display_url(url)
        local = self._local_path(url)
        if local is not None:
            size = local.stat().st_size
            if size > self.max_bytes:
                raise ImageFetchError(f"image {shown} is {size} bytes, over the limit of {self.max_bytes} (PSLG_MAX_IMAGE_BYTES)")
            return local.read_bytes()
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("", "http", "https"):
            raise ImageFetchError(
                f"image {shown}: scheme {scheme!r} is not supported; serve cloud storage through Label Studio "
                "(storage with presigned URLs / proxy) so tasks carry http(s) or /data/... URLs"
            )
        absolute = self.resolve(url)
        use_auth = self.auth is not None and self.auth.same_host(absolute)
        headers = self.auth.headers() if use_auth else {}
        r = self._get(absolute, headers, shown)
        if r.status_code == 401 and use_auth and self.auth.kind == "pat":
            r.close()
            r = self._get(absolute, self.auth.headers(refresh=True), shown)
        try:
            if r.status_code in (401, 403):
                hint = (
                    " (the Label Studio token was refused: check LABEL_STUDIO_API_KEY; legacy tokens also need "
                    "legacy tokens enabled in Label Studio)"
                    if use_auth
                    else ""
                )
                raise ImageFetchError(f"image {shown}: HTTP {r.status_code}{hint}")
            if r.status_code != 200:
                raise ImageFetchError(f"image {shown}: HTTP {r.status_code}")
            declared = r.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.max_bytes:
                raise ImageFetchError(f"image {shown} is {declared} bytes, over the limit of {self.max_bytes} (PSLG_MAX_IMAGE_BYTES)")
            deadline = time.monotonic() + self.timeout_s
            chunks: list[bytes] = []
            total = 0
            for chunk in r.iter_content(chunk_size=1 << 16):
                total += len(chunk)
                if total > self.max_bytes:
                    raise ImageFetchError(f"image {shown} is over the limit of {self.max_bytes} bytes (PSLG_MAX_IMAGE_BYTES)")
                if time.monotonic() > deadline:
                    raise ImageFetchError(f"image {shown}: download took longer than {self.timeout_s:.0f} s (PSLG_IMAGE_TIMEOUT)")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            r.close()

    def _get(self, absolute: str, headers: dict[str, str], shown: str) -> requests.Response:
        try:
            return self._session.get(absolute, headers=headers, stream=True, timeout=(10.0, self.timeout_s), allow_redirects=True)  # requests drops Authorization on cross-host redirects
        except requests.Timeout:
            raise ImageFetchError(f"image {shown}: no answer within {self.timeout_s:.0f} s (PSLG_IMAGE_TIMEOUT)") from None
        except requests.RequestException as exc:
            raise ImageFetchError(f"image {shown}: could not connect ({type(exc).__name__})") from None


class LRUCache:
    """A tiny thread-safe LRU map (decoded images by URL, so a click never re-downloads or re-decodes)."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
