"""``pslg models``: list, download (resumable, verified) and verify the official SAM checkpoints.

Exit codes: 0 success; 1 a download or a verification failed (the message says why and what to do, no
traceback); 2 bad usage (unknown model name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

EXIT_FAILED = 1
EXIT_USAGE = 2

models_app = typer.Typer(
    help=(
        "Official SAM checkpoints (vit_h, vit_l, vit_b): list them, download with resume and sha256/md5 "
        "verification, verify files. Cache: $PSLG_CACHE_DIR/checkpoints (default ~/.cache/pslg/checkpoints)."
    ),
    no_args_is_help=True,
)

_CACHE_OPT = typer.Option(
    None, "--cache-dir", help="Checkpoint directory (default $PSLG_CACHE_DIR/checkpoints or ~/.cache/pslg/checkpoints)."
)


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _mb(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 1e6:,.0f} MB"


@models_app.command("list")
def list_command(cache_dir: Optional[Path] = _CACHE_OPT) -> None:
    """Known checkpoints, their size and sha256, and whether each is in the cache (complete or partial)."""
    from rich.console import Console
    from rich.table import Table

    from annotate.checkpoints import KNOWN_CHECKPOINTS, default_cache_dir

    directory = Path(cache_dir or default_cache_dir())
    table = Table(title=f"SAM checkpoints in {directory}")
    for col in ("name", "file", "size", "present", "sha256", "url"):
        table.add_column(col, overflow="fold")
    for spec in KNOWN_CHECKPOINTS.values():
        path = directory / spec.filename
        part = path.with_name(path.name + ".part")
        if path.is_file():
            size = path.stat().st_size
            present = "yes" if spec.size is None or size == spec.size else f"wrong size ({size:,} B)"
        elif part.is_file():
            done = part.stat().st_size
            present = f"partial {100 * done / spec.size:.0f}%" if spec.size else f"partial {done:,} B"
        else:
            present = "no"
        table.add_row(spec.name, spec.filename, _mb(spec.size), present, spec.sha256 or "?", spec.url)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # pipes and logs: keep each row (full sha256, URL) on one line
    console.print(table)
    typer.echo("Presence is by file name and size; `pslg models verify` checks the digests.")


@models_app.command("pull")
def pull_command(
    name: str = typer.Argument(..., help="vit_b, vit_l or vit_h."),
    url: Optional[str] = typer.Option(None, "--url", help="Download from this URL (a mirror) instead of the official one; the official digests still apply."),
    cache_dir: Optional[Path] = _CACHE_OPT,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Download a checkpoint: resumes a partial download, verifies size + sha256 + md5, then renames atomically."""
    from annotate.checkpoints import CheckpointError, KNOWN_CHECKPOINTS, download_checkpoint

    if name not in KNOWN_CHECKPOINTS:
        raise _fail(f"unknown checkpoint {name!r}; known: {', '.join(KNOWN_CHECKPOINTS)}", EXIT_USAGE)
    try:
        path = download_checkpoint(name, cache_dir, url=url, progress=progress)
    except CheckpointError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot write the checkpoint: {exc}") from None
    typer.echo(f"{name}: {path} (verified)")


@models_app.command("verify")
def verify_command(
    target: Optional[str] = typer.Argument(None, help="A name (vit_b …) or a file path; default: every checkpoint in the cache."),
    cache_dir: Optional[Path] = _CACHE_OPT,
) -> None:
    """Check checkpoint files against the registry (size, sha256, md5). Exit 1 when any fails."""
    from annotate.checkpoints import (
        KNOWN_CHECKPOINTS,
        default_cache_dir,
        file_digests,
        spec_for_file,
        verify_file,
    )

    directory = Path(cache_dir or default_cache_dir())
    jobs = []
    if target is None:
        jobs = [(s, directory / s.filename) for s in KNOWN_CHECKPOINTS.values() if (directory / s.filename).is_file()]
        if not jobs:
            raise _fail(f"no checkpoint in {directory}; run `pslg models pull vit_b`")
    elif target in KNOWN_CHECKPOINTS and not Path(target).exists():
        spec = KNOWN_CHECKPOINTS[target]
        jobs = [(spec, directory / spec.filename)]
    else:
        path = Path(target).expanduser()
        if not path.is_file():
            raise _fail(f"{path}: no such file (names: {', '.join(KNOWN_CHECKPOINTS)})")
        spec = spec_for_file(path)
        if spec is None:
            sha, _md5, size = file_digests(path)
            raise _fail(
                f"{path}: not a known checkpoint file name, cannot verify (sha256 {sha}, {size:,} bytes); "
                f"known files: {', '.join(s.filename for s in KNOWN_CHECKPOINTS.values())}"
            )
        jobs = [(spec, path)]
    failed = 0
    for spec, path in jobs:
        res = verify_file(path, spec)
        if res.ok:
            typer.echo(f"OK      {spec.name}: {path} (sha256 {res.sha256})")
        else:
            failed += 1
            hint = f"; run `pslg models pull {spec.name}`" if res.reason == "missing" else ""
            typer.echo(f"FAILED  {spec.name}: {path}: {res.reason}{hint}", err=True)
    if failed:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add the ``models`` group (``list``, ``pull``, ``verify``) to ``app``."""
    app.add_typer(models_app, name="models", rich_help_panel="Set-up")
