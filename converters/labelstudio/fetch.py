"""Fetching task images: Label Studio uploads and local files, http(s) URLs, with both token kinds.

Why this module exists: wrong token handling is the most reported failure of existing SAM backends. Label Studio
≥ 1.18 hands out *personal access tokens* (PATs, JWT refresh tokens) that must be exchanged at
``POST /api/token/refresh`` for a short-lived access token sent as ``Authorization: Bearer``; legacy tokens go
as ``Authorization: Token <key>``. The token is only ever sent to Label Studio's own *media* paths on the Label
Studio host (:func:`sends_token`), never to an arbitrary image URL or API path a task names. "Same host" is decided
on the URL exactly as ``requests`` will send it and parsed by urllib3, the parser that connects, so a URL that two
parsers read differently (``http://a\\@b/``, userinfo, control characters) never carries the token. Downloads are
bounded in size and time, and every error names the URL (without any token).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

import requests
import urllib3

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


#: Label Studio 1.23's media routes: uploads, local files, the upload proxy of cloud storage, and the storage
#: resolve/presign endpoints of a task or project. Only these get the token; ``/api/...`` never does.
MEDIA_PREFIXES = ("/data/upload/", "/data/local-files/", "/storage-data/uploaded/")
_RESOLVE_PATH = re.compile(r"^/(?:tasks|projects)/\d+/(?:resolve|presign)/?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def unsafe_url_reason(url: str) -> Optional[str]:
    """Why ``url`` must not be fetched: a control character anywhere (header injection, NUL), or a backslash,
    whitespace or userinfo (``@``) in the authority, where parsers disagree on the host (``requests`` would also
    turn userinfo into Basic credentials). Spaces in a path or query are fine: ``requests`` percent-encodes them."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "contains a control character"
    scheme, sep, rest = url.partition(":")
    if sep and "\\" in rest[:2]:  # http:\\host or http:/\host
        return "contains a backslash where the host begins"
    if "://" in url:
        authority = re.split(r"[/?#]", url.split("://", 1)[1], maxsplit=1)[0]
        if "\\" in authority:
            return "contains a backslash in the host part"
        if any(ch.isspace() for ch in authority):
            return "contains a space in the host part"
        if "@" in authority:
            return "has user info (@) before the host"
    return None


def prepared_url(url: str) -> str:
    """``url`` exactly as ``requests`` sends it (IDNA host, requoted path, dot segments removed)."""
    try:
        prepared = requests.Request("GET", url).prepare().url
    except (requests.RequestException, ValueError, UnicodeError):
        raise ImageFetchError(f"image {display_url(url)}: not a valid URL") from None
    return str(prepared)


def connect_origin(url: str) -> Optional[tuple[str, str, int]]:
    """(scheme, host, port) a prepared ``url`` connects to, per urllib3 (the parser that connects).

    None when the URL carries userinfo (``user@host``) or when the standard library reads another host or port
    from it: an ambiguous URL has no origin, so it can never match Label Studio's.
    """
    try:
        parsed = urllib3.util.parse_url(url)
        std = urlsplit(url)
        std_port = std.port
    except (ValueError, urllib3.exceptions.LocationParseError):
        return None
    scheme = (parsed.scheme or "").lower()
    if parsed.auth is not None or "@" in (std.netloc or "") or scheme not in _DEFAULT_PORTS or not parsed.host:
        return None
    host = parsed.host.lower()
    port = parsed.port or _DEFAULT_PORTS[scheme]
    if host.strip("[]") != (std.hostname or "").lower() or port != (std_port or _DEFAULT_PORTS[scheme]):
        return None
    return scheme, host, port


def is_media_path(url: str) -> bool:
    """Whether ``url`` (absolute or a path) names one of Label Studio's media routes, without dot segments."""
    path = urlsplit(url).path
    segments = unquote(path).split("/")
    if ".." in segments or "." in segments:
        return False
    return path.startswith(MEDIA_PREFIXES) or path.rstrip("/") + "/" in MEDIA_PREFIXES or bool(_RESOLVE_PATH.match(path))


def sends_token(url: str, label_studio_url: str) -> bool:
    """Whether a GET of ``url`` may carry the Label Studio token: the one rule for the backend and the converters.

    True only for an unambiguous URL (no backslash, control character or userinfo) that, as ``requests`` sends
    it, connects to the same scheme, host and port as ``label_studio_url`` and names a Label Studio media path.
    """
    if unsafe_url_reason(url) is not None:
        return False
    try:
        target = prepared_url(url)
        base = prepared_url(label_studio_url)
    except ImageFetchError:
        return False
    origin = connect_origin(target)
    if origin is None or origin != connect_origin(base):
        return False
    # Label Studio served under a path prefix (``http://host/ls``) has its media routes below that prefix
    prefix = urlsplit(base).path.rstrip("/")
    path = urlsplit(target).path
    if not path.startswith(prefix + "/"):
        return False
    return is_media_path(path[len(prefix):])


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

    def sends_token(self, url: str) -> bool:
        """Whether ``url`` may carry this token (:func:`sends_token`: a media path on this very host)."""
        return sends_token(url, self.url)

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
    """Downloads image bytes for task URLs, with limits.

    ``auth`` is the Label Studio host and token used for Label Studio media paths (``/data/upload/...``,
    ``/data/local-files/?d=...``, storage resolve URLs), relative or absolute on that same host.
    ``local_files_root`` (the ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` both share on one machine) lets local files
    be read from disk; ``local_image_roots`` are the folders from which a task may name an image by plain path
    (``/srv/images/a.png``): any other path, such as ``/proc/self/environ``, fails the task saying why.
    """

    def __init__(
        self,
        auth: Optional[LabelStudioAuth] = None,
        max_bytes: int = 64 * 1024 * 1024,
        timeout_s: float = 30.0,
        local_files_root: Optional[str | Path] = None,
        session: Optional[requests.Session] = None,
        local_image_roots: Sequence[str | Path] = (),
    ) -> None:
        self.auth = auth
        self.max_bytes = int(max_bytes)
        self.timeout_s = float(timeout_s)
        self.local_files_root = Path(local_files_root).resolve() if local_files_root else None
        self.local_image_roots = [Path(r).resolve() for r in local_image_roots if r]
        self._session = session or requests.Session()

    def resolve(self, url: str) -> str:
        """An absolute URL for ``url`` (relative Label Studio media paths get the Label Studio host)."""
        if url.startswith("/") and not url.startswith("//"):
            if not is_media_path(url):
                raise ImageFetchError(f"image {display_url(url)} is neither a Label Studio media path nor an http(s) URL")
            if self.auth is None:
                raise ImageFetchError(
                    f"image {url} is a Label Studio path but no Label Studio URL and token are known for it: set "
                    "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or connect the backend from Label Studio, which sends "
                    "them in /setup)"
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

    def _plain_path(self, url: str, shown: str) -> Path:
        """The file a task names by plain path, when it lies under an allowed root; else a clear error."""
        raw = Path(unquote(url[len("file://"):] if url.lower().startswith("file://") else url))
        roots = self.local_image_roots
        if not roots:
            raise ImageFetchError(
                f"image {shown} is a local path, and no folder is allowed for local images: set PSLG_LOCAL_IMAGE_ROOT "
                "(or serve the file through Label Studio: /data/local-files/ or an upload)"
            )
        for root in roots:
            path = (raw if raw.is_absolute() else root / raw).resolve()
            if root in path.parents and path.is_file():
                return path
        allowed = ", ".join(str(r) for r in roots)
        raise ImageFetchError(f"image {shown} is not a file under the allowed local image folder(s) {allowed} (PSLG_LOCAL_IMAGE_ROOT)")

    def _read_file(self, path: Path, shown: str) -> bytes:
        size = path.stat().st_size
        if size > self.max_bytes:
            raise ImageFetchError(f"image {shown} is {size} bytes, over the limit of {self.max_bytes} (PSLG_MAX_IMAGE_BYTES)")
        return path.read_bytes()

    def fetch(self, url: str) -> bytes:
        """The bytes at ``url``; raises ``ImageFetchError`` naming the URL (never a token)."""
        if not isinstance(url, str) or not url.strip():
            raise ImageFetchError(f"image URL {url!r} is empty or not a string")
        url = url.strip()
        shown = display_url(url)
        unsafe = unsafe_url_reason(url)
        if unsafe is not None:
            raise ImageFetchError(f"image {shown!r} {unsafe}: refused")
        local = self._local_path(url)
        if local is not None:
            return self._read_file(local, shown)
        scheme = urlsplit(url).scheme.lower()
        if scheme == "file" or (not scheme and not is_media_path(url)):
            return self._read_file(self._plain_path(url, shown), shown)
        if scheme not in ("", "http", "https"):
            raise ImageFetchError(
                f"image {shown}: scheme {scheme!r} is not supported; serve cloud storage through Label Studio "
                "(storage with presigned URLs / proxy) so tasks carry http(s) or /data/... URLs"
            )
        absolute = prepared_url(self.resolve(url))
        use_auth = self.auth is not None and self.auth.sends_token(absolute)
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


def cached_nbytes(value: Any) -> int:
    """Memory a cached value holds: the pixel array of a decoded image, else ``nbytes``/``len`` of the value."""
    rgb = getattr(value, "rgb", None)
    if rgb is not None and hasattr(rgb, "nbytes"):
        return int(rgb.nbytes)
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return 0


class LRUCache:
    """A thread-safe LRU map bounded by entry count and by bytes (decoded images by URL, so a click never
    re-downloads or re-decodes, while a few huge images cannot take the process's memory).

    A value larger than ``max_bytes`` on its own is not kept. ``sizeof`` measures a value (default
    :func:`cached_nbytes`).
    """

    def __init__(self, size: int = 8, max_bytes: Optional[int] = None,
                 sizeof: Callable[[Any], int] = cached_nbytes) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._sizeof = sizeof
        self._data: OrderedDict = OrderedDict()
        self._sizes: dict[Any, int] = {}
        self.nbytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def get(self, key):
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def _drop(self, key) -> None:
        del self._data[key]
        self.nbytes -= self._sizes.pop(key)

    def put(self, key, value) -> None:
        nbytes = int(self._sizeof(value))
        with self._lock:
            if key in self._data:
                self._drop(key)
            if self.max_bytes is not None and nbytes > self.max_bytes:
                return
            self._data[key] = value
            self._sizes[key] = nbytes
            self.nbytes += nbytes
            while len(self._data) > self.size or (self.max_bytes is not None and self.nbytes > self.max_bytes):
                self._drop(next(iter(self._data)))

    def shrink_to(self, max_bytes: int) -> int:
        """Drop least recently used entries until the cache holds at most ``max_bytes``; returns bytes dropped.

        Why: a decode budget gives way to work in flight (``DecodeBudget.add_reclaimer``): decoded images kept
        for later clicks are the first memory to go when a new large image needs room."""
        dropped = 0
        with self._lock:
            while self._data and self.nbytes > max(0, int(max_bytes)):
                before = self.nbytes
                self._drop(next(iter(self._data)))
                dropped += before - self.nbytes
        return dropped
