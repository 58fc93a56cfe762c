"""``pslg export coco|rrsis``, ``pslg import rrsis|coco``, ``pslg validate``, ``pslg stats``.

Exit codes: 0 all good; 1 some items failed (they are listed; everything else was written) unless
``--skip-errors``, or nothing could be written because every item failed; 2 the command could not run at all
(bad options, output exists or is not writable, unreadable config); 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from converters.cli.common import HELP_MARKUP, EXIT_INTERRUPTED, interruptible, print_table, write_error
from converters.model import Report

console = Console(stderr=True, soft_wrap=True)
out_console = Console(soft_wrap=True)

export_app = typer.Typer(rich_markup_mode=HELP_MARKUP, help="Label Studio export (file or live project) → COCO or RRSIS-D dataset.",
                         no_args_is_help=True)
import_app = typer.Typer(rich_markup_mode=HELP_MARKUP, help="RRSIS-D or COCO dataset → Label Studio tasks JSON (ground truth for review).",
                         no_args_is_help=True)

SELECT_HELP = "Which annotation wins when a task has several: latest | ground-truth | annotator:EMAIL_OR_ID."
MAX_LISTED = 50


def _print_report(report: Report, skip_errors: bool, what: str) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
    console.print(f"[bold]{escape(what)}[/bold]: {escape(counts) or 'nothing written'}")
    for reason, n in sorted(report.skipped.items()):
        console.print(f"  skipped {n} × {escape(reason)}")
    for w in report.warnings[:MAX_LISTED]:
        console.print(f"  [yellow]warning[/yellow] {escape(w)}", highlight=False)
    if report.errors:
        console.print(f"[red]{len(report.errors)} item(s) failed[/red]"
                      + (" (--skip-errors: exit code 0)" if skip_errors and not report.nothing_written else ""))
        for e in report.errors[:MAX_LISTED]:
            console.print(f"  [red]error[/red] {escape(str(e))}", highlight=False)
        if len(report.errors) > MAX_LISTED:
            console.print(f"  … and {len(report.errors) - MAX_LISTED} more")


def _exit(report: Report, skip_errors: bool) -> None:
    if report.nothing_written:
        raise typer.Exit(1)
    if report.errors and not skip_errors:
        raise typer.Exit(1)


def _error(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error[/red] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _is_network_error(exc: BaseException) -> bool:
    """requests' errors are OSErrors too; they concern the server, not the output folder."""
    import requests

    return isinstance(exc, requests.RequestException)


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
        with interruptible():
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
                    if isinstance(exc, OSError) and not _is_network_error(exc):
                        raise  # the output folder: reported below
                    status = getattr(exc, "status_code", None)
                    body = getattr(exc, "body", None)
                    detail = str(body if body is not None else exc).replace(token, "***")[:300]
                    raise _error(f"cannot export project {project} from {url}: "
                                 f"{type(exc).__name__}{f' (HTTP {status})' if status else ''}: {detail}") from None
    except KeyboardInterrupt:
        bar.close()
        raise _error(f"interrupted: nothing was written to {out}", EXIT_INTERRUPTED) from None
    except OutputExistsError as exc:
        raise _error(str(exc)) from None
    except OSError as exc:  # unwritable or full output folder, unreadable export
        raise _error(write_error(exc, out)) from None
    except ValueError as exc:  # unreadable labeling config
        if isinstance(exc, typer.BadParameter):
            raise
        raise _error(str(exc)) from None
    finally:
        bar.close()
    if report.nothing_written:
        _print_report(report, skip_errors, f"{kind} → {out}")
        raise _error(f"nothing written to {out}: no task gave an object to export"
                     + (" (every task failed)" if report.errors else ""), 1)
    _print_report(report, skip_errors, f"{kind} → {out}")
    _exit(report, skip_errors)


# Options shared by both export formats (one definition, so the two commands cannot drift apart).
_EXPORT_ARG = typer.Argument(None, help="Label Studio JSON export file, or - for stdin (omit with --url).",
                             show_default=False)
_OUT_OPT = typer.Option(..., "--out", "-o", help="Output folder: new, or empty (filled in place); "
                        "a non-empty one needs --overwrite.", show_default=False)
_URL_OPT = typer.Option(None, "--url", help="Live project: Label Studio URL.", show_default=False)
_TOKEN_OPT = typer.Option(None, "--token", help="API token (PAT or legacy); default $LABEL_STUDIO_API_KEY.",
                          show_default=False)
_PROJECT_OPT = typer.Option(None, "--project", help="Live project: project id.", show_default=False)
_CONFIG_OPT = typer.Option(None, "--config", help="Labeling config XML (for a file export): fixes the label set "
                           "and its order; unknown labels become errors.", show_default=False)
_IMAGE_ROOT_OPT = typer.Option(None, "--image-root", help="Folder the task image paths resolve in: "
                               "/data/local-files/?d=REL → ROOT/REL, /data/upload/… → ROOT/…", show_default=False)
_SELECT_OPT = typer.Option("latest", "--select", help=SELECT_HELP)
_IMAGES_OPT = typer.Option("copy", "--images", help="Image files: copy | link (hard link) | symlink | none.")
_LINK_OPT = typer.Option(False, "--link", help="Same as --images link.")
_SYMLINK_OPT = typer.Option(False, "--symlink", help="Same as --images symlink.")
_FORMAT_OPT = typer.Option("rle", "--format", help="Segmentation: rle (lossless) | polygon (a mask with holes "
                           "is written as RLE, with a warning: polygons cannot express holes).")
_OVERWRITE_OPT = typer.Option(False, "--overwrite", help="Replace the content of a non-empty output folder.")
_SKIP_ERRORS_OPT = typer.Option(False, "--skip-errors", help="Exit 0 even when some items failed.")

_EXPORT_EPILOG = (
    "Examples:\n\n"
    "\b\n  pslg export {kind} project-1.json --image-root ~/ls-media --out {out}\n\n"
    "\b\n  pslg export {kind} --url http://localhost:8080 --project 1 --out {out}   "
    "(token from $LABEL_STUDIO_API_KEY)\n\n"
    "\b\n  curl … | pslg export {kind} - --image-root ~/ls-media --out {out}"
)


@export_app.command("coco", epilog=_EXPORT_EPILOG.format(kind="coco", out="coco/"))
def export_coco(
    export: Optional[Path] = _EXPORT_ARG,
    out: Path = _OUT_OPT,
    url: Optional[str] = _URL_OPT,
    token: Optional[str] = _TOKEN_OPT,
    project: Optional[int] = _PROJECT_OPT,
    config: Optional[Path] = _CONFIG_OPT,
    image_root: Optional[Path] = _IMAGE_ROOT_OPT,
    select: str = _SELECT_OPT,
    missing_expression: str = typer.Option(
        "allow", "--missing-expression", help="Object without an expression: allow | label (use the label) | "
        "skip | error."),
    images: str = _IMAGES_OPT,
    link: bool = _LINK_OPT,
    symlink: bool = _SYMLINK_OPT,
    fmt: str = _FORMAT_OPT,
    overwrite: bool = _OVERWRITE_OPT,
    skip_errors: bool = _SKIP_ERRORS_OPT,
) -> None:
    """Export to COCO: annotations.json (compressed RLE by default, iscrowd 0, bbox/area from the mask) + images/."""
    _run_export("coco", export, out, url=url, token=token, project=project, config=config, image_root=image_root,
                select=select, missing_expression=missing_expression, images=images, link=link, symlink=symlink,
                fmt=fmt, dataset_name="rrsisd", split_ratios="1", seed=0, overwrite=overwrite,
                skip_errors=skip_errors)


@export_app.command("rrsis", epilog=_EXPORT_EPILOG.format(kind="rrsis", out="data/"))
def export_rrsis(
    export: Optional[Path] = _EXPORT_ARG,
    out: Path = _OUT_OPT,
    url: Optional[str] = _URL_OPT,
    token: Optional[str] = _TOKEN_OPT,
    project: Optional[int] = _PROJECT_OPT,
    config: Optional[Path] = _CONFIG_OPT,
    image_root: Optional[Path] = _IMAGE_ROOT_OPT,
    select: str = _SELECT_OPT,
    missing_expression: str = typer.Option(
        "error", "--missing-expression", help="Object without an expression: error | label (use the label; "
        "not a spatial cue for the grounder) | skip | allow."),
    images: str = _IMAGES_OPT,
    link: bool = _LINK_OPT,
    symlink: bool = _SYMLINK_OPT,
    fmt: str = _FORMAT_OPT,
    dataset_name: str = typer.Option("rrsisd", "--dataset-name", help="RRSIS dataset folder name."),
    split_ratios: str = typer.Option("0.8,0.1,0.1", "--split-ratios",
                                     help="train,val,test ratios for images without a split."),
    seed: int = typer.Option(0, "--seed", help="Seed of the per-image split hash."),
    overwrite: bool = _OVERWRITE_OPT,
    skip_errors: bool = _SKIP_ERRORS_OPT,
) -> None:
    """Export to the RRSIS-D layout: <name>/refs(unc).p + instances.json + images/<name>/JPEGImages (8-bit RGB)."""
    _run_export("rrsis", export, out, url=url, token=token, project=project, config=config, image_root=image_root,
                select=select, missing_expression=missing_expression, images=images, link=link, symlink=symlink,
                fmt=fmt, dataset_name=dataset_name, split_ratios=split_ratios, seed=seed, overwrite=overwrite,
                skip_errors=skip_errors)


def _rrsis_split_message(source: Path, split: str, image_root: Optional[Path]) -> str:
    """"no refs in split X" naming the splits the dataset does have."""
    from converters.rrsis import read_rrsis

    present = sorted({r.split for r in read_rrsis(source, image_dir=image_root)})
    return (f"{source} has no refs in split {split!r}; "
            + (f"its splits: {', '.join(repr(s) for s in present)}" if present else "it has no refs at all"))


def _run_import(kind: str, source: Path, out: Path, as_: str, url_prefix: Optional[str],
                document_root: Optional[Path], image_root: Optional[Path], split: Optional[str],
                skip_errors: bool) -> None:
    from converters.importer import coco_tasks, rrsis_tasks, write_tasks

    if as_ not in ("predictions", "annotations"):
        raise typer.BadParameter("--as must be predictions or annotations")
    report = Report()
    try:
        if kind == "rrsis":
            tasks = rrsis_tasks(source, report, split=split, as_=as_, url_prefix=url_prefix,  # type: ignore[arg-type]
                                document_root=document_root, image_dir=image_root)
        else:
            tasks = coco_tasks(source, report, as_=as_, url_prefix=url_prefix,  # type: ignore[arg-type]
                               document_root=document_root, image_dir=image_root)
        if kind == "rrsis" and split is not None:
            from converters.rrsis import read_rrsis

            if not read_rrsis(source, split, image_dir=image_root):
                raise _error(_rrsis_split_message(source, split, image_root))
        with interruptible():
            write_tasks(tasks, out)
    except KeyboardInterrupt:
        raise _error(f"interrupted: nothing was written to {out}", EXIT_INTERRUPTED) from None
    except (FileNotFoundError, ValueError) as exc:
        raise _error(str(exc)) from None
    except OSError as exc:
        raise _error(write_error(exc, out)) from None
    _print_report(report, skip_errors, f"{kind} → {out}")
    _exit(report, skip_errors)


_IMPORT_EPILOG = {
    "rrsis": "Example:\n\n\b\n  pslg import rrsis data/ --split val --document-root ~/ls-media --out tasks.json",
    "coco": "Example:\n\n\b\n  pslg import coco coco/annotations.json --url-prefix http://files.local/ --out tasks.json",
}


def _import_command(kind: str):
    def command(
        source: Path = typer.Argument(..., help="RRSIS root / dataset folder, or COCO JSON / folder.",
                                      show_default=False),
        out: Path = typer.Option(..., "--out", "-o", help="Tasks JSON file to write.", show_default=False),
        as_: str = typer.Option("predictions", "--as", help="Ground truth as predictions | annotations."),
        url_prefix: Optional[str] = typer.Option(None, "--url-prefix", help="Image URL = PREFIX + file name.",
                                                 show_default=False),
        document_root: Optional[Path] = typer.Option(
            None, "--document-root", help="Label Studio LOCAL_FILES_DOCUMENT_ROOT: image URLs become "
            "/data/local-files/?d=REL.", show_default=False),
        image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder of the image files "
                                                  "(default: the layout's).", show_default=False),
        split: Optional[str] = typer.Option(None, "--split", help="RRSIS: only this split.", show_default=False),
        skip_errors: bool = _SKIP_ERRORS_OPT,
    ) -> None:
        _run_import(kind, source, out, as_, url_prefix, document_root, image_root, split, skip_errors)

    command.__doc__ = {
        "rrsis": "RRSIS-D layout → tasks, one per expression (config: rrsis_expression_per_task.xml).",
        "coco": "COCO → tasks, one per image, instances as brush regions (config: expressions_per_region.xml).",
    }[kind]
    if kind == "coco":  # COCO has no splits: do not offer the option
        import inspect

        sig = inspect.signature(command)
        command.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "split"])
    return command


import_app.command("rrsis", epilog=_IMPORT_EPILOG["rrsis"])(_import_command("rrsis"))
import_app.command("coco", epilog=_IMPORT_EPILOG["coco"])(_import_command("coco"))


def validate_command(
    dataset: Path = typer.Argument(..., help="RRSIS root / dataset folder, or COCO JSON / folder.",
                                   show_default=False),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder of the image files "
                                              "(default: the layout's).", show_default=False),
    check_images: bool = typer.Option(True, "--images/--no-images", help="Check the image files (sizes, "
                                      "presence)."),
) -> None:
    """Check a dataset: every mask decodes (RLE and polygons), sizes match the images, boxes inside, refs resolve,
    ids unique, splits disjoint. Exit 1 when anything is wrong."""
    from converters.checks import open_dataset, validate

    try:
        ds = open_dataset(dataset, image_root)
    except (FileNotFoundError, ValueError) as exc:
        raise _error(str(exc)) from None
    report = validate(ds, check_images=check_images)
    _print_report(report, False, f"validate {ds.kind} {dataset}")
    if report.ok:
        out_console.print("valid")
    _exit(report, False)


def _names_column(table: Table, title: str, names: list[str]) -> None:
    """A first column that shows every name in full (folded, never cut with an ellipsis)."""
    table.add_column(title, no_wrap=True, overflow="fold", min_width=min(40, max([len(title), *map(len, names)])))


def stats_command(
    dataset: Path = typer.Argument(..., help="RRSIS root / dataset folder, or COCO JSON / folder.",
                                   show_default=False),
) -> None:
    """Counts per split and category, expression length, mask-area histogram."""
    from converters.checks import open_dataset, stats

    try:
        s = stats(open_dataset(dataset))
    except (FileNotFoundError, ValueError) as exc:
        raise _error(str(exc)) from None
    out_console.print(f"{s['kind']}: {s['images']} images, {s['annotations']} annotations")
    splits = sorted(s["per_split"])
    t = Table(title="objects (refs) per category and split")
    _names_column(t, "category", [*s["per_category"], "images"])
    for sp in splits:
        t.add_column(sp, justify="right")
    for cat, row in s["per_category"].items():
        t.add_row(escape(cat), *(str(row.get(sp, 0)) for sp in splits))
    t.add_row("[bold]total[/bold]", *(str(s["per_split"][sp]) for sp in splits))
    t.add_row("images", *(str(s["images_per_split"].get(sp, 0)) for sp in splits))
    print_table(t, out_console)
    if s["expression_tokens"]:
        e = s["expression_tokens"]
        t = Table(title="expression length (tokens)")
        for k in ("count", "min", "mean", "median", "max"):
            t.add_column(k, justify="right")
        t.add_row(*(str(e[k]) for k in ("count", "min", "mean", "median", "max")))
        print_table(t, out_console)
    t = Table(title="mask area (pixels)")
    _names_column(t, "area", list(s["area_histogram"]))
    t.add_column("masks", justify="right")
    t.add_column("")
    peak = max(s["area_histogram"].values()) or 1
    for label, n in s["area_histogram"].items():
        t.add_row(label, str(n), "█" * round(30 * n / peak))
    print_table(t, out_console)


def register(app: typer.Typer) -> None:
    """Add ``export``, ``import``, ``validate`` and ``stats`` to ``app``."""
    panel = "Datasets"
    app.add_typer(export_app, name="export", rich_help_panel=panel)
    app.add_typer(import_app, name="import", rich_help_panel=panel)
    app.command("validate", rich_help_panel=panel,
                epilog="Examples:\n\n\b\n  pslg validate data/rrsisd\n\n"
                       "\b\n  pslg validate coco/annotations.json --no-images")(validate_command)
    app.command("stats", rich_help_panel=panel,
                epilog="Example:\n\n\b\n  pslg stats data/rrsisd")(stats_command)
