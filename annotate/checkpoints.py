"""Official SAM checkpoints: where they live, how to fetch them (resumable) and how to check them.

Registry facts (size, sha256, md5) of the three official files at ``dl.fbaipublicfiles.com`` were taken from
several independent public projects that pin them and agree with each other. The 6 hex digits in each file
name (``4b8939``, ``0b3195``, ``01ec64``) are the start of the file's **md5**, not of its sha256; both full
digests are checked. A download is written to ``<file>.part``, resumed with an HTTP ``Range`` request when a
partial file is there, verified (size, sha256, md5), and only then renamed atomically to its final name, so a
file under its final name is always a complete, verified one.

The cache directory is ``$PSLG_CACHE_DIR/checkpoints`` (default ``~/.cache/pslg/checkpoints``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Optional
from urllib.parse import urlparse

import requests

CHUNK_SIZE = 1 << 20
#: Network read size: small enough that an interrupted transfer loses little of what already arrived.
NET_CHUNK_SIZE = 1 << 16
#: (connect, read) timeouts in seconds for downloads.
TIMEOUT: tuple[float, float] = (15.0, 60.0)


@dataclass(frozen=True)
class CheckpointSpec:
    """One downloadable checkpoint. ``size`` / ``sha256`` / ``md5`` are checked when known (not None)."""

    name: str
    filename: str
    url: str
    size: Optional[int]
    sha256: Optional[str]
    md5: Optional[str]
    description: str = ""


_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"

KNOWN_CHECKPOINTS: dict[str, CheckpointSpec] = {
    "vit_h": CheckpointSpec(
        "vit_h", "sam_vit_h_4b8939.pth", _BASE + "sam_vit_h_4b8939.pth", 2564550879,
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", "4b8939a88964f0f4ff5f5b2642c598a6",
        "SAM ViT-H (636M params): best masks, slowest",
    ),
    "vit_l": CheckpointSpec(
        "vit_l", "sam_vit_l_0b3195.pth", _BASE + "sam_vit_l_0b3195.pth", 1249524607,
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", "0b3195507c641ddb6910d2bb5adee89c",
        "SAM ViT-L (308M params)",
    ),
    "vit_b": CheckpointSpec(
        "vit_b", "sam_vit_b_01ec64.pth", _BASE + "sam_vit_b_01ec64.pth", 375042383,
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", "01ec64d29a2fca3f0661936605ae66f8",
        "SAM ViT-B (91M params): fastest, the default",
    ),
}


class CheckpointError(RuntimeError):
    """A checkpoint could not be fetched or verified; the message says what to do."""


class CheckpointOfflineError(CheckpointError):
    """The download host could not be reached (no network, DNS failure, refused connection, timeout)."""


class ChecksumMismatchError(CheckpointError):
    """A file's size or digest differs from the registry."""


# ------------------------------------------------------------------------------------------------ locations


def default_cache_dir() -> Path:
    """``$PSLG_CACHE_DIR/checkpoints``, or ``~/.cache/pslg/checkpoints``."""
    root = os.environ.get("PSLG_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "pslg") / "checkpoints"


def get_spec(name: str) -> CheckpointSpec:
    """The registry entry of ``name`` (vit_h / vit_l / vit_b); ``KeyError`` with the choices otherwise."""
    try:
        return KNOWN_CHECKPOINTS[name]
    except KeyError:
        raise KeyError(f"unknown checkpoint {name!r}; known: {', '.join(KNOWN_CHECKPOINTS)}") from None


def checkpoint_path(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where checkpoint ``name`` lives (whether or not it is there)."""
    return Path(cache_dir or default_cache_dir()) / get_spec(name).filename


def resolve_checkpoint(name_or_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A path as given when it exists or is not a registry name; a registry name → its cache path."""
    if isinstance(name_or_path, str) and name_or_path in KNOWN_CHECKPOINTS and not Path(name_or_path).exists():
        return checkpoint_path(name_or_path, cache_dir)
    return Path(name_or_path).expanduser()


def spec_for_file(path: str | Path) -> Optional[CheckpointSpec]:
    """The registry entry whose file name is ``path``'s, if any."""
    fname = Path(path).name
    return next((s for s in KNOWN_CHECKPOINTS.values() if s.filename == fname), None)


# ------------------------------------------------------------------------------------------------ verification


def file_digests(path: str | Path, progress: Optional[Callable[[int], None]] = None) -> tuple[str, str, int]:
    """``(sha256 hex, md5 hex, size)`` of a file, read once in 1 MiB chunks."""
    sha, md5, n = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            sha.update(chunk)
            md5.update(chunk)
            n += len(chunk)
            if progress:
                progress(len(chunk))
    return sha.hexdigest(), md5.hexdigest(), n


@dataclass
class VerifyResult:
    path: Path
    ok: bool
    reason: str
    sha256: Optional[str] = None


def _compare(spec: CheckpointSpec, sha: str, md5: str, size: int) -> Optional[str]:
    """Reason of a mismatch, or None when everything known matches."""
    if spec.size is not None and size != spec.size:
        return f"size {size:,} bytes, expected {spec.size:,}"
    if spec.sha256 is not None and sha != spec.sha256.lower():
        return f"sha256 {sha}, expected {spec.sha256}"
    if spec.md5 is not None and md5 != spec.md5.lower():
        return f"md5 {md5}, expected {spec.md5}"
    return None


def verify_file(path: str | Path, spec: CheckpointSpec, progress: Optional[Callable[[int], None]] = None) -> VerifyResult:
    """Check a file against ``spec`` (size first, so a truncated file is reported without hashing it)."""
    p = Path(path)
    if not p.is_file():
        return VerifyResult(p, False, "missing")
    size = p.stat().st_size
    if spec.size is not None and size != spec.size:
        return VerifyResult(p, False, f"size {size:,} bytes, expected {spec.size:,} (incomplete or another file)")
    sha, md5, size = file_digests(p, progress)
    reason = _compare(spec, sha, md5, size)
    return VerifyResult(p, reason is None, reason or "ok", sha)


# ------------------------------------------------------------------------------------------------ download


def _host(url: str) -> str:
    parsed = urlparse(url)
    return parsed.netloc or url


def download_checkpoint(
    name: str | CheckpointSpec,
    cache_dir: str | Path | None = None,
    *,
    url: Optional[str] = None,
    progress: bool = True,
    session: Optional[requests.Session] = None,
    timeout: tuple[float, float] = TIMEOUT,
) -> Path:
    """Fetch a checkpoint into ``cache_dir`` (resuming a ``.part`` file) and verify it; return its path.

    ``url`` overrides the registry URL (a mirror); the registry digests still apply. An existing verified file
    is returned without any network access. Raises :class:`CheckpointOfflineError` when the host cannot be
    reached, :class:`ChecksumMismatchError` when the downloaded bytes are not the expected file (the partial
    file is then removed so the next try starts clean), :class:`CheckpointError` for HTTP errors and
    interrupted transfers (the ``.part`` file is kept: run again to resume).
    """
    spec = get_spec(name) if isinstance(name, str) else name
    if url:
        spec = replace(spec, url=url)
    directory = Path(cache_dir or default_cache_dir())
    dest = directory / spec.filename
    part = dest.with_name(dest.name + ".part")
    if dest.is_file():
        return _existing_verified(dest, spec)
    directory.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest.with_name(dest.name + ".lock")):
        if dest.is_file():  # another process finished the download while this one waited for the lock
            return _existing_verified(dest, spec)
        return _download_locked(spec, dest, part, directory, progress, session, timeout)


def _existing_verified(dest: Path, spec: CheckpointSpec) -> Path:
    res = verify_file(dest, spec)
    if res.ok:
        return dest
    raise ChecksumMismatchError(
        f"{dest} exists but does not verify ({res.reason}); delete it and run `pslg models pull {spec.name}` again"
    )


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path``, and remove the file when done.

    Why: two ``pslg models pull`` runs (or two backend workers starting at once) must not append to the same
    ``.part`` file. The lock file is removed on release so the cache holds only checkpoints; a waiter that wakes
    up holding a lock on a file that was meanwhile removed (or replaced) tries again. Where ``fcntl`` is missing
    (Windows) no lock is taken.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    while True:
        handle = open(lock_path, "a+b")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            same_file = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        handle.close()
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        handle.close()


def _download_locked(
    spec: CheckpointSpec,
    dest: Path,
    part: Path,
    directory: Path,
    progress: bool,
    session: Optional[requests.Session],
    timeout: tuple[float, float],
) -> Path:
    """The body of :func:`download_checkpoint`, run while holding the checkpoint's lock."""
    have = part.stat().st_size if part.is_file() else 0
    if spec.size is not None and have > spec.size:
        part.unlink()
        have = 0
    digests = _Digests()
    if have:
        with open(part, "rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                digests.update(chunk)

    complete = spec.size is not None and have == spec.size
    if not complete:
        have = _fetch(spec, part, have, digests, progress, session or requests.Session(), timeout)

    reason = _compare(spec, digests.sha.hexdigest(), digests.md5.hexdigest(), have)
    if reason is not None:
        part.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"downloaded {spec.filename} from {spec.url} does not verify ({reason}); the partial file was removed. "
            f"Is the URL right? Download it elsewhere and place it in {directory}"
        )
    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    return dest


class _Digests:
    """sha256 + md5 updated together (restartable when a server ignores a Range request)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sha = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)

    def update(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        self.md5.update(chunk)


def _fetch(
    spec: CheckpointSpec,
    part: Path,
    have: int,
    digests: _Digests,
    progress: bool,
    session: requests.Session,
    timeout: tuple[float, float],
) -> int:
    """GET ``spec.url`` from byte ``have`` on, appending to ``part`` and updating the digests; return the size."""
    from tqdm import tqdm

    headers = {"Range": f"bytes={have}-"} if have else {}
    host = _host(spec.url)
    offline_msg = (
        f"cannot reach {host}: offline? download {spec.url} elsewhere and place it in {part.parent} "
        f"as {spec.filename}"
    )
    try:
        resp = session.get(spec.url, headers=headers, stream=True, timeout=timeout, allow_redirects=True)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise CheckpointOfflineError(offline_msg) from exc
    except requests.RequestException as exc:
        raise CheckpointError(f"cannot download {spec.url}: {type(exc).__name__}: {exc}") from exc
    with resp:
        if resp.status_code == 416 and have:
            # Range not satisfiable: the partial file already holds everything the server has.
            return have
        if resp.status_code == 206:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start != have:
                raise CheckpointError(f"{spec.url}: server resumed at byte {start}, expected {have}; delete {part}")
            mode = "ab"
        elif resp.status_code == 200:
            if have:  # server ignored Range: start over
                digests.reset()
                have = 0
            mode = "wb"
        else:
            raise CheckpointError(f"cannot download {spec.url}: HTTP {resp.status_code} {resp.reason}")
        total = spec.size
        if total is None and resp.headers.get("Content-Length", "").isdigit():
            total = have + int(resp.headers["Content-Length"])
        bar = tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=spec.filename, disable=not progress, leave=False,
        )
        try:
            with open(part, mode) as f, bar:
                for chunk in resp.iter_content(chunk_size=NET_CHUNK_SIZE):
                    if not chunk:
                        continue
                    f.write(chunk)
                    digests.update(chunk)
                    have += len(chunk)
                    bar.update(len(chunk))
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise CheckpointError(
                f"download of {spec.url} interrupted after {have:,} bytes ({type(exc).__name__}); "
                f"run the same command again to resume from {part}"
            ) from exc
    if spec.size is not None and have < spec.size:
        raise CheckpointError(
            f"download of {spec.url} ended early at {have:,} of {spec.size:,} bytes; run the same command again to resume"
        )
    return have


def _content_range_start(value: str) -> int:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1
