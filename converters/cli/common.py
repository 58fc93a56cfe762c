"""What every ``pslg`` command shares: exit codes, one-line errors for OS failures, SIGTERM handling, help format.

A CLI failure is one line naming what failed and why, never a traceback; an interrupted command (Ctrl-C, or a
SIGTERM from a scheduler or ``timeout``) cleans up what it staged and says "interrupted".
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
import threading
from pathlib import Path
from typing import Iterator

import typer

EXIT_INTERRUPTED = 130

#: ``rich_markup_mode`` of every ``pslg`` Typer app: Click's plain help (a public Typer option). It rewraps to the
#: terminal's width without cutting option names or environment variables (Rich's help panels cut them to
#: "--train-backbo…" at 80 columns), shows flags without value hints, and reads the same on every Typer release
#: the package allows, with no patch of Typer's internals.
HELP_MARKUP = None


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM into ``KeyboardInterrupt`` for the duration, so it unwinds (and cleans up) like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_error(exc: OSError, out: Path) -> str:
    """A one-line message for an OS error while producing ``out`` (no staging names, no errno noise)."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write to {out}: {reason}"
    if exc.errno == errno.ENOSPC:
        return f"cannot write to {out}: no space left on the device"
    name = exc.filename
    if name and not str(name).startswith(str(Path(os.path.abspath(out)).parent)):
        return f"{name}: {reason}"
    return f"cannot write to {out}: {reason}"


def finite(value: float, what: str) -> float:
    """``value`` if it is a finite number; ``ValueError`` naming ``what`` for nan, inf and overflowed literals."""
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return value


def version_callback(value: bool) -> None:
    """``pslg --version``: the installed package version."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        typer.echo(f"pslg {version('pslg-annotate')}")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
        typer.echo("pslg (not installed as a package)")
    raise typer.Exit()


def print_table(table: object, console: object = None) -> None:
    """Print a rich table at its natural width, widening the console when needed: names and numbers are shown in
    full (a terminal wraps long lines) instead of being cut to "Large_Ve…" or "100.…"."""
    from rich.console import Console
    from rich.measure import Measurement

    console = console or Console()
    unbounded = console.options.update_width(1_000_000)  # type: ignore[attr-defined]
    width = Measurement.get(console, unbounded, table).maximum  # type: ignore[arg-type]
    if width > console.width:  # type: ignore[attr-defined]
        console = Console(width=width, file=console.file, force_terminal=console.is_terminal)  # type: ignore[attr-defined]
    console.print(table)  # type: ignore[attr-defined]


def check_writable_folder(path: Path) -> None:
    """Raise the ``OSError`` that writing into folder ``path`` would raise, without creating anything: the
    nearest existing ancestor must be a folder this process may write into. Lets a command fail before any
    model loads or any evaluation runs."""
    existing = Path(os.path.abspath(path))
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "Permission denied", str(existing))


def model_spec_problem(spec: str, option: str) -> str | None:
    """"``option`` SPEC: no such directory" when ``spec`` names a local model folder that does not exist, else None.

    Without this, a mistyped local path reaches the Hugging Face hub client, which answers with its own
    "Repo id must be in the form 'repo_name' or 'namespace/repo_name'" message. A spec is local when it starts
    with ``.``, ``/`` or ``~``, holds a backslash or more than one ``/``, ends with ``/``, or its first component
    is an existing local folder; a hub id is ``name`` or ``namespace/name``.
    """
    path = Path(spec).expanduser()
    if path.exists():
        return None if path.is_dir() else f"{option} {spec}: is a file, not a model directory"
    first = spec.split("/", 1)[0]
    local = (spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1 or spec.endswith("/")
             or ("/" in spec and Path(first).expanduser().is_dir()))
    return f"{option} {spec}: no such directory" if local else None
