"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Why: Ctrl-C, a crash or a full disk during a write must not leave a truncated mask, checkpoint or report that a
later run would trust. Every writer in the toolkit goes through here: the data goes to a temporary name in the
same folder (same file system, so the rename is atomic), is flushed to disk, gets the permissions a plain
``open`` would have given it, and is moved over the target with ``os.replace``. On any exception, the temporary
file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _umask_at_import() -> int:
    # reading the umask means setting it; done once, while the module is imported (before any worker thread
    # of ours writes files), never again: a flip in threaded code would let another thread create files with 0
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _umask_at_import()


def current_umask() -> int:
    """The process umask, for giving temporary files normal permissions, read without ever changing it.

    Linux reports it in ``/proc/self/status``; elsewhere the value found when this module was imported is used.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORT_UMASK


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that wants a file name (``torch.save``, ``cv2.imwrite``).

    The temporary file replaces ``path`` when the block ends without error; otherwise it is deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; it replaces ``path`` only when the block ends without error."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_file(path, "w") as fh:
        fh.write(text)
