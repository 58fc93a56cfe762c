"""Atomic outputs: a dataset appears complete or not at all (Ctrl-C, SIGTERM, a crash or a full disk leave no half).

Single files are written by ``annotate.atomic`` (temporary name beside the target, ``os.replace``). Whole output
folders are built in a hidden staging folder and moved into place at the end; an interrupted run leaves nothing
(the staging folder is removed on any exception, KeyboardInterrupt included):

* a **new** folder is staged beside it and renamed into place (one atomic rename);
* an **existing** folder (empty, or any folder with ``overwrite``) is never renamed or replaced itself (it may be a
  mount point, or the shell's current folder with ``--out .``): the staging folder is made inside it, and at the
  end its old entries are moved aside and the new ones moved in, one rename each.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from annotate.atomic import atomic_file, atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["OutputExistsError", "atomic_file", "atomic_path", "atomic_write_bytes", "atomic_write_text", "staged_dir"]

#: Name prefix of the hidden staging and old-content folders made inside an existing output folder.
STAGING_PREFIX = ".pslg-partial-"
OLD_PREFIX = ".pslg-old-"


class OutputExistsError(FileExistsError):
    pass


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fill_in_place(target: Path, staging: Path) -> None:
    """Move the staged entries into ``target``, its previous entries aside first (restored if a move fails)."""
    old = Path(tempfile.mkdtemp(prefix=OLD_PREFIX, dir=target))
    moved_aside: list[str] = []
    moved_in: list[str] = []
    try:
        for entry in list(target.iterdir()):
            if entry.name in (staging.name, old.name):
                continue
            os.replace(entry, old / entry.name)
            moved_aside.append(entry.name)
        for entry in list(staging.iterdir()):
            os.replace(entry, target / entry.name)
            moved_in.append(entry.name)
    except BaseException:
        for name in moved_in:
            _remove(target / name)
        for name in moved_aside:
            os.replace(old / name, target / name)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder whose content becomes ``target`` on success (see the module docstring).

    ``target`` must be new, an empty folder, or (with ``overwrite``) any folder: its content is replaced.
    """
    target = Path(os.path.abspath(target))
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a folder")
    existing = target.is_dir()
    if existing and any(target.iterdir()) and not overwrite:
        raise OutputExistsError(f"{target} exists and is not empty (use --overwrite to replace its content)")
    if existing:
        parent, prefix = target, STAGING_PREFIX
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        parent, prefix = target.parent, f".{target.name}.partial-"
    # the name is chosen before the folder is made, so an interrupt that lands at any point after ``mkdir`` (even
    # before its result is assigned) finds the name inside the ``try`` and removes the folder
    staging = parent / f"{prefix}{secrets.token_hex(6)}"
    try:
        while True:
            try:
                os.mkdir(staging, 0o777)  # the umask applies: the dataset gets normal permissions
                break
            except FileExistsError:
                staging = parent / f"{prefix}{secrets.token_hex(6)}"
        yield staging
        if existing:
            _fill_in_place(target, staging)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
