"""``pslg models``: the official SAM checkpoints (list, download resumable and verified, verify) and model
stores of trained versions (``versions``, ``rollback``, ``mark-bad``; see ``annotate.modelstore``).

Exit codes: 0 success; 1 a download or a verification failed (the message says why and what to do, no
traceback); 2 bad usage (unknown model name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from converters.cli.common import HELP_MARKUP

EXIT_FAILED = 1
EXIT_USAGE = 2

models_app = typer.Typer(
    rich_markup_mode=HELP_MARKUP,
    help=(
        "Official SAM checkpoints (vit_h, vit_l, vit_b): list them, download with resume and sha256/md5 "
        "verification, verify files. Cache: $PSLG_CACHE_DIR/checkpoints (default ~/.cache/pslg/checkpoints); "
        "`--checkpoint vit_b` everywhere uses the pulled file. Model stores of trained versions: versions, "
        "rollback, mark-bad."
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


@models_app.command("list", epilog="Example:\n\n\b\n  pslg models list")
def list_command(cache_dir: Optional[Path] = _CACHE_OPT) -> None:
    """Known SAM checkpoints (size, sha256, cached or partial), the Hugging Face segmenter families (SAM 2.1,
    SAM-HQ, EdgeTAM, SAM 3) with the option that loads each, and the grounding model families the toolkit loads."""
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
    console.print(_families_table())
    _print_grounder_families(console)


def _families_table():
    """The Hugging Face model families served as they are (a folder with config.json, or a hub id)."""
    from rich.table import Table

    from annotate.extras import missing_modules
    from annotate.segmenters.hf_spec import HUB_EXAMPLES, ONE_STAGE_FAMILIES, SEGMENTER_FAMILIES

    import importlib.util

    missing = missing_modules("segmenters") + (["timm (EdgeTAM only)"] if importlib.util.find_spec("timm") is None else [])
    note = "installed" if not missing else f"needs the [segmenters] extra (missing: {', '.join(missing)})"
    table = Table(title=f"Hugging Face segmenter families ({note}); give a folder or hub id, transformers downloads it")
    for col in ("family", "model_type", "option", "hub ids"):
        table.add_column(col, overflow="fold")
    for model_type, label in SEGMENTER_FAMILIES.items():
        table.add_row(label, model_type, "--checkpoint / PSLG_SAM_CHECKPOINT", ", ".join(HUB_EXAMPLES.get(model_type, ())))
    for model_type, label in ONE_STAGE_FAMILIES.items():
        table.add_row(label, model_type, "--one-stage / PSLG_ONE_STAGE_MODEL", ", ".join(HUB_EXAMPLES.get(model_type, ())))
    return table


def _print_grounder_families(console) -> None:
    """The grounding model families `--grounding` / `--base` accept, and whether their extra is installed."""
    from rich.table import Table

    from annotate.extras import install_command, missing_modules
    from annotate.grounding.families import FAMILIES

    table = Table(title="Grounding model families (--grounding DIR|HUB_ID, pslg train grounding --base)")
    for col in ("family", "config model_type", "example", "reads the expression", "fine-tuning", "installed"):
        table.add_column(col, overflow="fold")
    for family in FAMILIES:
        missing = missing_modules(family.extra)
        installed = "yes" if not missing else f"no: {install_command(family.extra)}"
        table.add_row(family.name, ", ".join(family.model_types), family.example, family.reads, family.fine_tuning,
                      installed)
    console.print(table)


@models_app.command("pull", epilog="Example:\n\n\b\n  pslg models pull vit_b\n\n\b\n  pslg models pull vit_h --url https://mirror.example/sam_vit_h_4b8939.pth")
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


@models_app.command("verify", epilog="Example:\n\n\b\n  pslg models verify\n\n\b\n  pslg models verify ~/Downloads/sam_vit_b_01ec64.pth")
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


def _store(directory: Path):
    from annotate.modelstore import ModelStore, is_store

    if not is_store(directory):
        inner = directory / "grounders"  # a backend's MODEL_DIR: its learned versions live in this store
        if is_store(inner):
            typer.echo(f"{directory} is a backend's MODEL_DIR: using the model store inside it, {inner}", err=True)
            return ModelStore(inner)
        raise _fail(f"{directory} is not a model store (no store.json or vNNNN versions); "
                    "`pslg train grounding --out DIR` creates one, and a backend keeps its own in MODEL_DIR/grounders")
    return ModelStore(directory)


@models_app.command("versions")
def versions_command(
    directory: Path = typer.Argument(..., help="A model store (what `pslg train grounding --out` fills)."),
) -> None:
    """List a model store's versions: kind, parent, samples, validation score, created, and which one is served.

    Example:

    \b
      pslg models versions models/
    """
    from rich.console import Console
    from rich.table import Table

    from annotate.modelstore import ModelStoreError, printable

    store = _store(directory)
    try:
        versions = store.versions()
        current = {kind: store.current(kind) for kind in {v.kind for v in versions if v.kind}}
    except ModelStoreError as exc:
        raise _fail(str(exc)) from None
    if not versions:
        raise _fail(f"{directory} has no versions yet")
    served = {v.name for v in current.values() if v is not None}
    table = Table(title=f"Model versions in {directory}")
    for col in ("version", "kind", "served", "parent", "samples", "val Acc@0.5", "created", "base", "status"):
        table.add_column(col, overflow="fold")
    for v in versions:
        card = v.card
        acc = ((card.metrics or {}).get("val") or {}).get("acc@0.5") if card else None
        status = (f"bad: {printable(v.bad)}" if v.bad else (f"not served: {printable(v.not_served)}" if v.not_served
                  else (printable(v.card_error) if v.card_error else "ok")))
        table.add_row(v.name, card.kind if card else "?", "yes" if v.name in served else "",
                      (card.parent or "") if card else "", str(card.samples if card and card.samples is not None else ""),
                      f"{acc:.3f}" if isinstance(acc, (int, float)) else "", card.created_at if card else "",
                      card.base if card else "", status)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(table)
    for v in versions:  # what each retrain did, as its training answer and /health said it
        outcome = (v.card.metrics or {}).get("outcome") if v.card else None
        if outcome:
            console.print(f"{v.name}: {outcome}", markup=False, highlight=False)


@models_app.command("rollback")
def rollback_command(
    directory: Path = typer.Argument(..., help="A model store."),
    version: str = typer.Argument(..., help="The version to serve, e.g. v0002 (or 2)."),
) -> None:
    """Serve an earlier version: a backend following this store switches to it within its poll interval.

    Example:

    \b
      pslg models rollback models/ v0002
    """
    from annotate.modelstore import ModelStoreError

    try:
        chosen = _store(directory).rollback(version)
    except (ModelStoreError, OSError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{directory}: now serving {chosen.name} ({chosen.card.kind}); a new training run makes its version current")


@models_app.command("mark-bad")
def mark_bad_command(
    directory: Path = typer.Argument(..., help="A model store."),
    version: str = typer.Argument(..., help="The version never to serve again, e.g. v0003."),
    reason: str = typer.Option("marked bad", "--reason", help="Why (shown by `pslg models versions`)."),
    undo: bool = typer.Option(False, "--undo", help="Serve it again (remove the mark)."),
) -> None:
    """Stop serving a version (the next older good one is served); the files stay.

    Example:

    \b
      pslg models mark-bad models/ v0003 --reason "worse on val"
    """
    from annotate.modelstore import ModelStoreError, printable

    store = _store(directory)
    try:
        marked = store.unmark(version) if undo else store.mark_bad(version, reason)
    except (ModelStoreError, OSError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{directory}: {marked.name} {'may be served again' if undo else 'is marked bad: ' + printable(marked.bad)}")


def register(app: typer.Typer) -> None:
    """Add the ``models`` group (``list``, ``pull``, ``verify``, ``versions``, ``rollback``, ``mark-bad``) to ``app``."""
    app.add_typer(models_app, name="models", rich_help_panel="Set-up")
