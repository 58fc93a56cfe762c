"""Atomic outputs: a dataset appears complete or not at all (Ctrl-C, a crash or a full disk leave no half).

Single files are written by ``annotate.atomic`` (temporary name beside the target, ``os.replace``). Whole output folders are
built in a hidden staging folder beside the target and renamed into place at the end; an interrupted run only
leaves nothing (the staging folder is removed on any exception, KeyboardInterrupt included).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from annotate.atomic import current_umask, atomic_file, atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["OutputExistsError", "atomic_file", "atomic_path", "atomic_write_bytes", "atomic_write_text", "staged_dir"]


class OutputExistsError(FileExistsError):
    pass


@contextlib.contextmanager
def staged_dir(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success it becomes ``target`` (replacing it if ``overwrite``)."""
    target = Path(target).resolve()
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise OutputExistsError(f"{target} exists and is not empty (use --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it 0700; the dataset should get normal permissions
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old: Path | None = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
