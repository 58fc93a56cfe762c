"""``pslg tile`` (a large GeoTIFF/COG → tiles + Label Studio tasks) and ``pslg export geo`` (tile annotations →
GeoJSON/GeoPackage in map coordinates).

Exit codes: 0 done; 1 some tasks failed (listed; everything else written) unless ``--skip-errors``, or nothing
to write; 2 the command could not run (bad options, unreadable scene, output not writable, missing extra);
130 interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from converters.cli.common import EXIT_INTERRUPTED, interruptible, write_error

TILE_EPILOG = (
    "Examples:\n\n"
    "\b\n  pslg tile scene.tif --size 1024 --overlap 128 --out tiles/ --document-root ~/ls-media\n\n"
    "\b\n  pslg tile https://example.org/cog.tif --bands 4,3,2 --out tiles/ --url-prefix http://files.local/tiles/"
)
GEO_EPILOG = (
    "Examples:\n\n"
    "\b\n  pslg export geo project-1.json --out geo/               (GeoJSON in each scene's CRS)\n\n"
    "\b\n  pslg export geo project-1.json --out geo/ --format gpkg --to-wgs84"
)


def _console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _error(message: str, code: int = 2) -> typer.Exit:
    from rich.markup import escape

    _console().print(f"[red]error[/red] {escape(message)}", highlight=False)
    return typer.Exit(code)


def tile_command(
    scene: str = typer.Argument(..., help="GeoTIFF / COG: a local path or an http(s) URL (read in windows).",
                                show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for tiles/ and tasks.json (created if missing).",
                             show_default=False),
    size: int = typer.Option(1024, "--size", min=16, max=8192, help="Tile side in pixels (at most 8192: a tile is one Label Studio image)."),
    overlap: int = typer.Option(128, "--overlap", min=0, help="Pixels shared by neighbouring tiles (objects on a "
                                "seam are whole in one of them, and joined again by `export geo`)."),
    bands: Optional[str] = typer.Option(None, "--bands", metavar="B1,B2,B3", help="1-based bands shown as RGB "
                                        "(e.g. 4,3,2 for false colour); default 1,2,3 (or 1).", show_default=False),
    fmt: str = typer.Option("png", "--format", help="Tile images: png | jpeg."),
    url_prefix: Optional[str] = typer.Option(None, "--url-prefix", help="Tile URL = PREFIX + file name.",
                                             show_default=False),
    document_root: Optional[Path] = typer.Option(
        None, "--document-root", help="Label Studio LOCAL_FILES_DOCUMENT_ROOT: tile URLs become "
        "/data/local-files/?d=REL (--out must lie under it).", show_default=False),
    scene_id: Optional[str] = typer.Option(None, "--scene-id", help="The scene's id in the tasks (default: the "
                                           "file name without extension).", show_default=False),
) -> None:
    """Cut a large scene into overlapping tiles + a Label Studio tasks JSON (each task knows its place in the scene).

    8-bit bands are kept; other dtypes get ONE 2–98 % stretch for the whole scene (from a decimated read), so
    neighbouring tiles match. Tiles with only nodata are skipped.
    """
    from converters.cli.segment_prompts import parse_numbers
    from converters.tiling import tile_scene

    if fmt not in ("png", "jpeg", "jpg"):
        raise typer.BadParameter("--format must be png or jpeg")
    if overlap >= size:
        raise typer.BadParameter(f"--overlap {overlap} must be smaller than --size {size}")
    band_list = None
    if bands is not None:
        parts = [p for p in bands.split(",") if p.strip()]
        try:
            band_list = [int(v) for v in parse_numbers(bands, len(parts), "--bands")]
        except typer.BadParameter as exc:
            raise _error(str(exc)) from None
    try:
        with interruptible():
            report = tile_scene(scene, out, size=size, overlap=overlap, bands=band_list,
                                fmt="jpeg" if fmt in ("jpeg", "jpg") else "png",  # type: ignore[arg-type]
                                url_prefix=url_prefix, document_root=document_root, scene_id=scene_id)
    except KeyboardInterrupt:
        raise _error(f"interrupted: {out}/tasks.json was not written", EXIT_INTERRUPTED) from None
    except ValueError as exc:
        raise _error(str(exc)) from None
    except OSError as exc:
        raise _error(write_error(exc, out)) from None
    stretch = report.stretch
    how = ("8-bit, no stretch" if stretch is None or stretch.low is None else
           "scene stretch " + ", ".join(f"b{b}: {lo:g}–{hi:g}" for b, lo, hi in zip(stretch.bands, stretch.low,
                                                                                   stretch.high or ())))
    _console().print(f"{report.scene} ({report.width}×{report.height}, {report.crs or 'no CRS'}): "
                     f"{report.tiles} tile(s), {report.skipped_empty} nodata-only skipped; {how}; "
                     f"tasks in {out / 'tasks.json'}", highlight=False)


def export_geo_command(
    export: Path = typer.Argument(..., help="Label Studio JSON export of tile tasks (made by pslg tile), or - for "
                                  "stdin.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (one file per scene): new, or empty; a "
                             "non-empty one needs --overwrite.", show_default=False),
    fmt: str = typer.Option("geojson", "--format", help="geojson | gpkg (GeoPackage)."),
    to_wgs84: bool = typer.Option(False, "--to-wgs84", help="Write longitude/latitude (EPSG:4326) instead of the "
                                  "scene's CRS."),
    crs: Optional[str] = typer.Option(None, "--crs", help="Write in this CRS (e.g. EPSG:3857) instead of the "
                                      "scene's.", show_default=False),
    source: str = typer.Option("annotations", "--source", help="annotations | predictions (pre-labels, with their "
                               "scores) | both (the annotation where there is one, else the pre-label)."),
    select: str = typer.Option("latest", "--select", help="Which annotation wins when a task has several: latest | "
                               "ground-truth | annotator:EMAIL_OR_ID."),
    config: Optional[Path] = typer.Option(None, "--config", help="Labeling config XML: fixes the label set.",
                                          show_default=False),
    merge_iou: float = typer.Option(0.5, "--merge-iou", min=0.0, max=1.0, help="Pieces of two tiles are one object "
                                    "when their IoU inside the tiles' overlap is at least this."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the content of a non-empty output folder."),
    skip_errors: bool = typer.Option(False, "--skip-errors", help="Exit 0 even when some tasks failed."),
) -> None:
    """Tile annotations (brush or polygons) → one feature per object in map coordinates, seams merged."""
    from converters.atomic import OutputExistsError
    from converters.cli.dataset import _exit, _print_report
    from converters.geo_export import WGS84, GeoExportOptions, export_geo

    from annotate.extras import MissingExtraError

    if fmt not in ("geojson", "gpkg"):
        raise typer.BadParameter("--format must be geojson or gpkg")
    if source not in ("annotations", "predictions", "both"):
        raise typer.BadParameter("--source must be annotations, predictions or both")
    if to_wgs84 and crs:
        raise typer.BadParameter("give --to-wgs84 or --crs, not both")
    if not (select in ("latest", "ground-truth") or select.startswith("annotator:")):
        raise typer.BadParameter("--select must be latest, ground-truth or annotator:EMAIL_OR_ID")
    if crs:
        from rasterio.crs import CRS
        from rasterio.errors import CRSError

        try:
            CRS.from_user_input(crs)
        except (CRSError, ValueError) as exc:  # "EPSG:nope" fails inside the parser as a ValueError
            raise _error(f"--crs {crs!r} is not a CRS: {exc}") from None
    if str(export) != "-" and (not export.exists() or export.is_dir()):
        raise _error(f"export file {export} not found")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise _error(f"{out} exists and is not an empty folder (use --overwrite to replace its content)")
    opts = GeoExportOptions(fmt=fmt, to_crs=WGS84 if to_wgs84 else crs,  # type: ignore[arg-type]
                            config_xml=config.read_text(encoding="utf-8") if config else None, selection=select,
                            source=source, agree_iou=merge_iou, overwrite=overwrite)
    try:
        with interruptible():
            import sys

            report = export_geo(sys.stdin.buffer if str(export) == "-" else export, out, opts)
    except MissingExtraError as exc:
        raise _error(str(exc)) from None
    except KeyboardInterrupt:
        raise _error(f"interrupted: nothing was written to {out}", EXIT_INTERRUPTED) from None
    except OutputExistsError as exc:
        raise _error(str(exc)) from None
    except OSError as exc:
        raise _error(write_error(exc, out)) from None
    except ValueError as exc:
        raise _error(str(exc)) from None
    _print_report(report, skip_errors, f"geo → {out}")
    if report.nothing_written:
        raise _error(f"nothing written to {out}: no tile task gave an object to export", 1)
    _exit(report, skip_errors)


def register(app: typer.Typer) -> None:
    """Add ``pslg tile`` and ``pslg export geo`` to ``app``."""
    from converters.cli.dataset import export_app

    app.command("tile", rich_help_panel="Datasets", epilog=TILE_EPILOG, no_args_is_help=True)(tile_command)
    export_app.command("geo", epilog=GEO_EPILOG, no_args_is_help=True)(export_geo_command)
