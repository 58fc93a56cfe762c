"""``pslg export coco|rrsis``, ``pslg import rrsis|coco``, ``pslg validate``, ``pslg stats``.

Exit codes: 0 all good; 1 some items failed (they are listed; everything else was written) unless
``--skip-errors``; 2 the command could not run at all (bad options, output exists, unreadable config).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from converters.model import Report

console = Console(stderr=True, soft_wrap=True)
out_console = Console(soft_wrap=True)

export_app = typer.Typer(help="Label Studio export (file or live project) → COCO or RRSIS-D dataset.",
                         no_args_is_help=True)
import_app = typer.Typer(help="RRSIS-D or COCO dataset → Label Studio tasks JSON (ground truth for review).",
                         no_args_is_help=True)

SELECT_HELP = "Which annotation wins when a task has several: latest | ground-truth | annotator:EMAIL_OR_ID."
MAX_LISTED = 50


def _print_report(report: Report, skip_errors: bool, what: str) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
    console.print(f"[bold]{escape(what)}[/bold]: {counts or 'nothing written'}")
    for reason, n in sorted(report.skipped.items()):
        console.print(f"  skipped {n} × {escape(reason)}")
    for w in report.warnings[:MAX_LISTED]:
        console.print(f"  [yellow]warning[/yellow] {escape(w)}", highlight=False)
    if report.errors:
        console.print(f"[red]{len(report.errors)} item(s) failed[/red]"
                      + (" (--skip-errors: exit code 0)" if skip_errors else ""))
        for e in report.errors[:MAX_LISTED]:
            console.print(f"  [red]error[/red] {escape(str(e))}", highlight=False)
        if len(report.errors) > MAX_LISTED:
            console.print(f"  … and {len(report.errors) - MAX_LISTED} more")


def _exit(report: Report, skip_errors: bool) -> None:
    if report.errors and not skip_errors:
        raise typer.Exit(1)


def _image_mode(images: str, link: bool, symlink: bool) -> str:
    if link:
        return "link"
    if symlink:
        return "symlink"
    if images not in ("copy", "link", "symlink", "none"):
        raise typer.BadParameter("--images must be copy, link, symlink or none")
    return images


def _run_export(kind: str, export: Optional[Path], out: Path, *, url: Optional[str], token: Optional[str],
                project: Optional[int], config: Optional[Path], image_root: Optional[Path], select: str,
                missing_expression: Optional[str], images: str, link: bool, symlink: bool, fmt: str,
                dataset_name: str, split_ratios: str, seed: int, overwrite: bool, skip_errors: bool) -> None:
    from tqdm import tqdm

    from converters.atomic import OutputExistsError
    from converters.export import ExportOptions, export_file, export_live
    from converters.rrsis import parse_ratios

    if fmt not in ("rle", "polygon"):
        raise typer.BadParameter("--format must be rle or polygon")
    if missing_expression not in (None, "error", "label", "skip", "allow"):
        raise typer.BadParameter("--missing-expression must be error, label, skip or allow")
    if not (select in ("latest", "ground-truth") or select.startswith("annotator:")):
        raise typer.BadParameter(SELECT_HELP)
    try:
        ratios = parse_ratios(split_ratios)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    opts = ExportOptions(image_root=image_root, config_xml=config.read_text(encoding="utf-8") if config else None,
                         selection=select, missing_expression=missing_expression,
                         image_mode=_image_mode(images, link, symlink),  # type: ignore[arg-type]
                         seg_format=fmt,  # type: ignore[arg-type]
                         dataset_name=dataset_name, split_ratios=ratios, seed=seed, overwrite=overwrite)
    bar = tqdm(total=None, unit="B", unit_scale=True, desc=f"export {kind}", disable=None, leave=False)

    def progress(pos: int, total: int) -> None:
        bar.total = total or None
        bar.n = pos
        bar.refresh()

    try:
        if export is not None:
            if url or project:
                raise typer.BadParameter("give either EXPORT or --url/--project, not both")
            if str(export) == "-":  # stream from stdin (e.g. curl … | pslg export coco - --out DIR)
                import sys

                report = export_file(kind, sys.stdin.buffer, out, opts, progress=progress)  # type: ignore[arg-type]
            else:
                if not export.exists() or export.is_dir():
                    raise typer.BadParameter(f"export file {export} not found")
                report = export_file(kind, export, out, opts, progress=progress)  # type: ignore[arg-type]
        else:
            token = token or os.environ.get("LABEL_STUDIO_API_KEY")
            if not (url and project is not None and token):
                raise typer.BadParameter("give EXPORT, or --url, --project and --token (or LABEL_STUDIO_API_KEY)")
            try:
                report = export_live(kind, url, token, project, out, opts, progress=progress)  # type: ignore[arg-type]
            except OutputExistsError:
                raise
            except Exception as exc:  # unreachable server, refused token, bad config: say which, never the token
                status = getattr(exc, "status_code", None)
                body = getattr(exc, "body", None)
                detail = str(body if body is not None else exc).replace(token, "***")[:300]
                console.print(f"[red]error[/red] cannot export project {project} from {escape(url)}: "
                              f"{type(exc).__name__}{f' (HTTP {status})' if status else ''}: {escape(detail)}")
                raise typer.Exit(2) from None
    except OutputExistsError as exc:
        console.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except ValueError as exc:  # unreadable labeling config
        if isinstance(exc, typer.BadParameter):
            raise
        console.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    finally:
        bar.close()
    _print_report(report, skip_errors, f"{kind} → {out}")
    _exit(report, skip_errors)


def _export_command(kind: str):
    def command(
        export: Optional[Path] = typer.Argument(
            None, help="Label Studio JSON export file, or - for stdin (omit with --url)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder (must be empty unless --overwrite)."),
        url: Optional[str] = typer.Option(None, help="Live project: Label Studio URL."),
        token: Optional[str] = typer.Option(None, help="API token (PAT or legacy); default $LABEL_STUDIO_API_KEY.",
                                            show_default=False),
        project: Optional[int] = typer.Option(None, help="Live project: project id."),
        config: Optional[Path] = typer.Option(None, help="Labeling config XML (for a file export): fixes the "
                                              "label set and its order; unknown labels become errors."),
        image_root: Optional[Path] = typer.Option(None, help="Where task image paths resolve: "
                                                  "/data/local-files/?d=REL → ROOT/REL, /data/upload/… → ROOT/…"),
        select: str = typer.Option("latest", help=SELECT_HELP),
        missing_expression: Optional[str] = typer.Option(
            None, help="Object without an expression: error | label (use the label) | skip | allow. "
            "Default: error for rrsis, allow for coco."),
        images: str = typer.Option("copy", help="Image files: copy | link (hard link) | symlink | none."),
        link: bool = typer.Option(False, "--link", help="Same as --images link."),
        symlink: bool = typer.Option(False, "--symlink", help="Same as --images symlink."),
        fmt: str = typer.Option("rle", "--format", help="Segmentation: rle (lossless, holes kept) | polygon."),
        dataset_name: str = typer.Option("rrsisd", help="RRSIS dataset folder name."),
        split_ratios: str = typer.Option("0.8,0.1,0.1", help="train,val,test ratios for images without a split."),
        seed: int = typer.Option(0, help="Seed of the per-image split hash."),
        overwrite: bool = typer.Option(False, help="Replace a non-empty output folder (atomically)."),
        skip_errors: bool = typer.Option(False, help="Exit 0 even when some items failed."),
    ) -> None:
        _run_export(kind, export, out, url=url, token=token, project=project, config=config,
                    image_root=image_root, select=select, missing_expression=missing_expression, images=images,
                    link=link, symlink=symlink, fmt=fmt, dataset_name=dataset_name, split_ratios=split_ratios,
                    seed=seed, overwrite=overwrite, skip_errors=skip_errors)

    command.__doc__ = {
        "coco": "Export to COCO: annotations.json (compressed RLE by default, iscrowd 0, bbox/area from the "
                "mask) + images/.",
        "rrsis": "Export to the RRSIS-D layout: <name>/refs(unc).p + instances.json + images/<name>/JPEGImages.",
    }[kind]
    return command


export_app.command("coco")(_export_command("coco"))
export_app.command("rrsis")(_export_command("rrsis"))


def _run_import(kind: str, source: Path, out: Path, as_: str, url_prefix: Optional[str],
                document_root: Optional[Path], image_dir: Optional[Path], split: Optional[str],
                skip_errors: bool) -> None:
    from converters.importer import coco_tasks, rrsis_tasks, write_tasks

    if as_ not in ("predictions", "annotations"):
        raise typer.BadParameter("--as must be predictions or annotations")
    report = Report()
    try:
        if kind == "rrsis":
            tasks = rrsis_tasks(source, report, split=split, as_=as_, url_prefix=url_prefix,  # type: ignore[arg-type]
                                document_root=document_root, image_dir=image_dir)
        else:
            tasks = coco_tasks(source, report, as_=as_, url_prefix=url_prefix,  # type: ignore[arg-type]
                               document_root=document_root, image_dir=image_dir)
        write_tasks(tasks, out)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    _print_report(report, skip_errors, f"{kind} → {out}")
    _exit(report, skip_errors)


def _import_command(kind: str):
    def command(
        source: Path = typer.Argument(..., help="RRSIS root / dataset folder, or COCO JSON / folder."),
        out: Path = typer.Option(..., "--out", "-o", help="Tasks JSON file to write."),
        as_: str = typer.Option("predictions", "--as", help="Ground truth as predictions | annotations."),
        url_prefix: Optional[str] = typer.Option(None, help="Image URL = PREFIX + file name."),
        document_root: Optional[Path] = typer.Option(
            None, help="Label Studio LOCAL_FILES_DOCUMENT_ROOT: image URLs become /data/local-files/?d=REL."),
        image_dir: Optional[Path] = typer.Option(None, help="Folder of the image files (default: the layout's)."),
        split: Optional[str] = typer.Option(None, help="RRSIS: only this split."),
        skip_errors: bool = typer.Option(False, help="Exit 0 even when some items failed."),
    ) -> None:
        _run_import(kind, source, out, as_, url_prefix, document_root, image_dir, split, skip_errors)

    command.__doc__ = {
        "rrsis": "RRSIS-D layout → tasks, one per expression (config: rrsis_expression_per_task.xml).",
        "coco": "COCO → tasks, one per image, instances as brush regions (config: expressions_per_region.xml).",
    }[kind]
    return command


import_app.command("rrsis")(_import_command("rrsis"))
import_app.command("coco")(_import_command("coco"))


def validate_command(
    dataset: Path = typer.Argument(..., help="RRSIS root / dataset folder, or COCO JSON / folder."),
    image_dir: Optional[Path] = typer.Option(None, help="Folder of the image files (default: the layout's)."),
    no_images: bool = typer.Option(False, "--no-images", help="Do not check the image files."),
) -> None:
    """Check a dataset: masks decode, sizes match the images, boxes inside, refs resolve, ids unique, splits
    disjoint. Exit 1 when anything is wrong."""
    from converters.checks import open_dataset, validate

    try:
        ds = open_dataset(dataset, image_dir)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    report = validate(ds, check_images=not no_images)
    _print_report(report, False, f"validate {ds.kind} {dataset}")
    if report.ok:
        out_console.print("valid")
    _exit(report, False)


def stats_command(
    dataset: Path = typer.Argument(..., help="RRSIS root / dataset folder, or COCO JSON / folder."),
) -> None:
    """Counts per split and category, expression length, mask-area histogram."""
    from converters.checks import open_dataset, stats

    try:
        s = stats(open_dataset(dataset))
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    out_console.print(f"{s['kind']}: {s['images']} images, {s['annotations']} annotations")
    splits = sorted(s["per_split"])
    t = Table(title="objects (refs) per category and split")
    t.add_column("category")
    for sp in splits:
        t.add_column(sp, justify="right")
    for cat, row in s["per_category"].items():
        t.add_row(escape(cat), *(str(row.get(sp, 0)) for sp in splits))
    t.add_row("[bold]total[/bold]", *(str(s["per_split"][sp]) for sp in splits))
    t.add_row("images", *(str(s["images_per_split"].get(sp, 0)) for sp in splits))
    out_console.print(t)
    if s["expression_tokens"]:
        e = s["expression_tokens"]
        t = Table(title="expression length (tokens)")
        for k in ("count", "min", "mean", "median", "max"):
            t.add_column(k, justify="right")
        t.add_row(*(str(e[k]) for k in ("count", "min", "mean", "median", "max")))
        out_console.print(t)
    t = Table(title="mask area (pixels)")
    t.add_column("area")
    t.add_column("masks", justify="right")
    t.add_column("")
    peak = max(s["area_histogram"].values()) or 1
    for label, n in s["area_histogram"].items():
        t.add_row(label, str(n), "█" * round(30 * n / peak))
    out_console.print(t)


def register(app: typer.Typer) -> None:
    """Add ``export``, ``import``, ``validate`` and ``stats`` to ``app``."""
    panel = "Datasets"
    app.add_typer(export_app, name="export", rich_help_panel=panel)
    app.add_typer(import_app, name="import", rich_help_panel=panel)
    app.command("validate", rich_help_panel=panel)(validate_command)
    app.command("stats", rich_help_panel=panel)(stats_command)
