"""``pslg segment``: run PSLG-SAM stage 2 (and optionally stage 1) on one image from the command line.

One image, one or many prompts, one encoder pass: the pipeline sets the image on the segmenter once and answers
every prompt from that embedding. Every prompt succeeds or fails on its own; a failed prompt is reported in
``results.json`` (``"error"``) and makes the exit code 1, while the other prompts are still written.

Exit codes: 0 every prompt succeeded; 1 at least one prompt failed (the others were written);
2 nothing could run (bad options, unreadable image or prompts file, missing checkpoint, unusable device).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from annotate.atomic import atomic_write_bytes
from annotate.image_io import DEFAULT_MAX_PIXELS
from converters.cli.common import check_writable_folder, model_spec_problem, print_table, write_error
from converters.cli.segment_overlay import render_overlay
from converters.cli.segment_prompts import parse_numbers, prompt_from_json, read_prompts_file
from converters.cli.segment_results import output_conflicts, owned_files, remove_stale_masks, result_entry, write_png

EXIT_PROMPT_FAILED = 1
EXIT_USAGE = 2

HELP = """Segment objects in one image with PSLG-SAM stage 2 (box/points → SAM or the weights-free segmenter → MBO).

One prompt (writes DIR/mask.png, DIR/overlay.png, DIR/results.json):

\b
  pslg segment scene.tif --box 120,40,260,180 --point 190,110 --out out/

Many prompts, one encoder pass (writes DIR/mask_000.png …, one DIR/overlay.png, DIR/results.json):

\b
  pslg segment scene.tif --prompts prompts.json --out out/

PROMPTS.json is a list of objects in image pixels:
{"box": [x0, y0, x1, y1], "points": [[x, y], ...], "point_labels": [1, 0, ...], "text": "..."};
everything but one of box / points / text is optional, point_labels default to 1 (on the object).

Text prompts need a grounding model (stage 1): --text "the storage tank at the top left"
--grounding DIR_OR_HUB_ID. A prompt with text and a box uses the box.

Segmenter: without --checkpoint the weights-free classical segmenter runs; with --checkpoint
(or $PSLG_SAM_CHECKPOINT) SAM runs (--model-type vit_h | vit_l | vit_b | auto, or $PSLG_SAM_MODEL_TYPE).
--checkpoint may also be a Hugging Face model folder or hub id of SAM 2.1, SAM-HQ or EdgeTAM
(e.g. facebook/sam2.1-hiera-tiny). --one-stage SAM3_MODEL runs SAM 3 alone: the expression's category
finds every instance, its position/size words pick one (replaces --grounding and --checkpoint).

results.json: a list, one entry per prompt in order: segmentation (COCO compressed RLE),
score, box and points actually used (CFPG point included), area, bbox (COCO xywh), mask_file,
grounding_score, timings_ms, model_version, and error (null when the prompt succeeded).

Exit codes: 0 all prompts succeeded; 1 some prompt failed (the others are written); 2 nothing could run.
"""

EPILOG = (
    "Examples:\n\n"
    "\b\n  pslg segment scene.tif --box 120,40,260,180 --point 190,110 --out out/\n\n"
    "\b\n  pslg segment scene.tif --prompts prompts.json --out out/\n\n"
    "\b\n  pslg segment scene.tif --text \"the storage tank at the top left\" --grounding models/ --out out/"
)


# ---------------------------------------------------------------------------------------------- command


def _fail(message: str) -> "typer.Exit":
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def segment(
    image: Path = typer.Argument(..., help="Image to segment: PNG, JPEG, TIFF or GeoTIFF (grayscale, 16-bit and multi-band are converted to 8-bit RGB).", show_default=False),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for mask PNGs, overlay.png and results.json (created if missing; files of an earlier run there are replaced, no other file is touched).", show_default=False),
    box: Optional[str] = typer.Option(None, "--box", "-b", metavar="X0,Y0,X1,Y1", help="Box around the object, in pixels."),
    point: list[str] = typer.Option([], "--point", "-p", metavar="X,Y", help="A point on the object (repeatable)."),
    negative_point: list[str] = typer.Option([], "--negative-point", "-n", metavar="X,Y", help="A point NOT on the object (repeatable)."),
    text: Optional[str] = typer.Option(None, "--text", "-t", help="Referring expression; needs --grounding unless a box is given."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", metavar="PROMPTS.json", help="Many prompts in one run (a JSON list, see above); excludes --box/--point/--text."),
    grounding: Optional[str] = typer.Option(None, "--grounding", "-g", metavar="MODEL", help="Stage-1 grounding model for text prompts: a local folder or a Hugging Face hub id."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", envvar="PSLG_SAM_CHECKPOINT", help="SAM checkpoint (.pth). Without it the weights-free classical segmenter runs.", show_default=False),
    model_type: str = typer.Option("vit_b", "--model-type", "-m", envvar="PSLG_SAM_MODEL_TYPE", help="SAM architecture of --checkpoint: vit_h, vit_l, vit_b, or auto (detect from the weights)."),
    one_stage: Optional[str] = typer.Option(None, "--one-stage", metavar="MODEL", help="One-stage model (a SAM 3 folder or hub id): text → the referred instance's mask; replaces --grounding and --checkpoint.", show_default=False),
    device: str = typer.Option("auto", "--device", "-d", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("auto", "--precision", envvar="PSLG_PRECISION", help="Model precision on CUDA: auto (bf16 where the loaded model's masks agree with fp32 at IoU ≥ 0.99), fp32, bf16 or tf32; CPU always runs fp32."),
    cfpg: Optional[bool] = typer.Option(None, "--cfpg/--no-cfpg", help="Add the clustering-based foreground point inside each box (default: the measured default for the segmenter).", show_default=False),
    mbo: Optional[bool] = typer.Option(None, "--mbo/--no-mbo", help="Refine each mask's boundary with MBO (default: the measured default for the segmenter).", show_default=False),
    spatial: bool = typer.Option(True, "--spatial/--no-spatial", help="Let position and size words of a text prompt (\"top left\", \"largest\") re-rank the grounder's boxes."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", envvar="PSLG_MAX_PIXELS", min=1, help="Refuse images with more pixels (width × height) than this; tile bigger scenes."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print the results table (failed prompts are still listed, one line each)."),
    crs: Optional[str] = typer.Option(None, "--crs", metavar="CRS", help="--box and --point are map coordinates in this CRS (e.g. EPSG:4326, or the scene's own EPSG code): only the window around the box is read from the GeoTIFF, and masks are written on that window's grid.", show_default=False),
) -> None:
    # ---- what to do: options → prompts (pure parsing first, so mistakes cost no model loading)
    single = prompts is None
    entries: list[tuple[Any, Optional[str], Optional[str]]] = []  # (Prompt | None, text, parse error)
    if single:
        from annotate.types import Prompt

        if box is None and not point and not negative_point and not text:
            raise _fail("give a prompt: --box, --point / --negative-point, --text, or --prompts PROMPTS.json")
        try:
            parsed_box = parse_numbers(box, 4, "--box") if box is not None else None
            pos = [parse_numbers(p, 2, "--point") for p in point]
            neg = [parse_numbers(p, 2, "--negative-point") for p in negative_point]
        except typer.BadParameter as exc:
            raise _fail(str(exc)) from None
        prompt = Prompt(box=parsed_box, points=[*pos, *neg], point_labels=[1] * len(pos) + [0] * len(neg), text=text)
        entries.append((prompt, text, None))
    else:
        if box is not None or point or negative_point or text:
            raise _fail("--prompts cannot be combined with --box, --point, --negative-point or --text")
        try:
            raw = read_prompts_file(prompts)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        for i, item in enumerate(raw):
            try:
                entries.append((prompt_from_json(item, i), item.get("text") if isinstance(item, dict) else None, None))
            except ValueError as exc:
                entries.append((None, item.get("text") if isinstance(item, dict) else None, str(exc)))

    if crs is not None and (not single or box is None):
        raise _fail("--crs needs --box (the box, and any --point, in map coordinates of that CRS); it cannot be used with --prompts")
    if crs is not None:
        from rasterio.crs import CRS
        from rasterio.errors import CRSError

        try:
            CRS.from_user_input(crs)
        except (CRSError, ValueError) as exc:
            raise _fail(f"--crs {crs!r} is not a CRS: {exc}") from None

    try:  # before any model loads: an unwritable folder should cost nothing
        check_writable_folder(out_dir)
    except OSError as exc:
        raise _fail(write_error(exc, out_dir)) from None
    if grounding and model_spec_problem(grounding, "--grounding"):
        raise _fail(model_spec_problem(grounding, "--grounding"))  # type: ignore[arg-type]
    if one_stage and grounding:
        raise _fail("--one-stage grounds and segments by itself: give --one-stage or --grounding, not both")
    if one_stage and model_spec_problem(one_stage, "--one-stage"):
        raise _fail(model_spec_problem(one_stage, "--one-stage"))  # type: ignore[arg-type]
    try:
        from annotate.precision import PrecisionError, parse_precision

        parse_precision(precision)
    except PrecisionError as exc:
        raise _fail(str(exc)) from None

    # ---- inputs and models
    from annotate.image_io import ImageLoadError, image_key, load_image

    window = None
    try:
        if crs is not None:  # a box on the map: read only the window that holds it, prompts in its pixels
            from annotate.scene import load_map_prompt

            prompt = entries[0][0]
            placed = load_map_prompt(str(image), prompt.box, prompt.points, crs, max_pixels=max_pixels)
            prompt.box, prompt.points = placed.box, list(placed.points)
            loaded, window = placed.image, placed.window
        else:
            loaded = load_image(image, max_pixels=max_pixels)
    except (ImageLoadError, OSError) as exc:
        raise _fail(str(exc) if str(image) in str(exc) else f"cannot read image {image}: {exc}") from None
    rgb = loaded.rgb
    georeferenced = loaded.crs is not None or loaded.transform is not None
    masks = ["mask.png"] if single else [f"mask_{i:03d}.png" for i in range(len(entries))]
    planned = masks + ([Path(m).with_suffix(".tif").name for m in masks] if georeferenced else []) + [
        "overlay.png", "results.json"]
    conflicts = output_conflicts(out_dir, planned, [image, prompts])
    if conflicts:  # the output writer touches only files it owns
        raise _fail("would overwrite files this command did not write: " + "; ".join(conflicts[:5])
                    + "; choose another --out folder")

    from annotate.device import DeviceError
    from annotate.extras import MissingExtraError
    from annotate.factory import build_pipeline, build_segmenter, load_grounding

    if one_stage:
        from annotate.factory import build_one_stage_pipeline

        try:
            one = build_one_stage_pipeline(one_stage, device=device, use_cfpg=cfpg, use_mbo=mbo, precision=precision,
                                           **({} if spatial else {"spatial_weight": 0.0}))
        except (DeviceError, MissingExtraError, ValueError, FileNotFoundError, OSError) as exc:
            raise _fail(str(exc)) from None
        segmenter, grounding = one.segmenter, None
    else:
        try:
            segmenter = build_segmenter(checkpoint, model_type=model_type, device=device, precision=precision)
        except (DeviceError, MissingExtraError, ValueError, FileNotFoundError, OSError) as exc:
            raise _fail(str(exc)) from None
    grounder = one.grounder if one_stage else None
    if grounding:
        try:
            grounder = load_grounding(grounding, device=device, **({} if spatial else {"spatial_weight": 0.0}))
        except Exception as exc:  # any failure to load a model is reported, not traced
            raise _fail(f"cannot load grounding model {grounding}: {exc}") from None

    from annotate.types import PromptResult

    pipeline = build_pipeline(segmenter=segmenter, grounding=grounder, use_cfpg=cfpg, use_mbo=mbo)
    started = time.perf_counter()
    runnable = [p for p, _, err in entries if err is None]
    answered = iter(pipeline.run(rgb, runnable, image_key=image_key(rgb)) if runnable else [])
    results: list[PromptResult] = []
    for p, _, err in entries:
        results.append(next(answered) if err is None else PromptResult(mask=None, score=0.0, box=None, error=err))
    elapsed = time.perf_counter() - started

    # ---- outputs
    version = pipeline.model_version
    try:
        records = _write_outputs(out_dir, entries, results, loaded, single, version, window)
    except OSError as exc:
        raise _fail(write_error(exc, out_dir)) from None

    failed = sum(1 for r in results if r.error is not None)
    if not quiet:
        _print_table(records, image, rgb.shape, version, elapsed, out_dir)
    if failed:
        from rich.console import Console
        from rich.markup import escape

        err = Console(stderr=True)
        if quiet:  # -q drops the table, never the reasons: one line per failed prompt, with its index
            for i, r in enumerate(results):
                if r.error is not None:
                    err.print(f"prompt {i}: {escape(str(r.error))}", highlight=False)
        err.print(f"[bold red]{failed} of {len(results)} prompt(s) failed[/bold red]; see {out_dir / 'results.json'}", highlight=False)
        raise typer.Exit(EXIT_PROMPT_FAILED)


def _write_outputs(out_dir: Path, entries: list, results: list, loaded: Any, single: bool, version: str,
                   window: Any = None) -> list[dict]:
    """Mask files, overlay.png and results.json; mask files an earlier run wrote (named by its results.json) that
    this one did not write are removed, so the folder describes this run only; no other file is touched.
    Returns the results.json records (with ``window``, the part of the scene read, for a map-coordinate box)."""
    import numpy as np

    from annotate.image_io import write_georeferenced_mask

    rgb = loaded.rgb
    out_dir.mkdir(parents=True, exist_ok=True)
    owned = owned_files(out_dir)  # before this run's results.json replaces the earlier one
    georeferenced = loaded.crs is not None or loaded.transform is not None
    records = []
    for i, ((p, txt, _), r) in enumerate(zip(entries, results)):
        mask_file = geo_mask_file = None
        if r.error is None and r.mask is not None:
            mask_file = "mask.png" if single else f"mask_{i:03d}.png"
            write_png(out_dir / mask_file, np.where(r.mask, 255, 0).astype(np.uint8))
            if georeferenced:  # the same mask on the scene's grid, for GIS tools
                geo_mask_file = Path(mask_file).with_suffix(".tif").name
                write_georeferenced_mask(out_dir / geo_mask_file, r.mask, loaded.crs, loaded.transform)
        records.append(result_entry(r, txt, mask_file, version))
        if georeferenced:
            records[-1].update(geo_mask_file=geo_mask_file, crs=loaded.crs)
        if window is not None:  # box, points and masks are in this window's pixels; its transform places them
            records[-1].update(window=window.as_list(), transform=list(loaded.transform))
    user_points = [len(p.points) if p is not None else 0 for p, _, _ in entries]
    write_png(out_dir / "overlay.png", render_overlay(rgb, results, user_points))
    atomic_write_bytes(out_dir / "results.json", (json.dumps(records, indent=2) + "\n").encode("utf-8"))
    remove_stale_masks(out_dir, [n for rec in records for n in (rec["mask_file"], rec.get("geo_mask_file")) if n], owned)
    return records


def _print_table(records: list[dict], image: Path, shape: tuple, version: str, elapsed: float, out_dir: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{image.name} ({shape[1]}×{shape[0]}) — {version}"), title_justify="left")
    for col, kw in (("#", {"justify": "right"}), ("status", {}), ("score", {"justify": "right"}), ("area", {"justify": "right"}),
                    ("box", {}), ("points", {"justify": "right"}), ("ms", {"justify": "right"}), ("mask / error", {"overflow": "fold"})):
        table.add_column(col, **kw)
    for i, rec in enumerate(records):
        ok = rec["error"] is None
        box = "—" if rec["box"] is None else ",".join(f"{v:.0f}" for v in rec["box"])
        table.add_row(
            str(i),
            "[green]ok[/green]" if ok else "[red]failed[/red]",
            f"{rec['score']:.3f}" if ok else "—",
            str(rec["area"]) if ok else "—",
            box,
            str(len(rec["points"])),
            f"{rec['timings_ms'].get('total', 0.0):.0f}",
            escape(rec["mask_file"]) if ok else f"[red]{escape(rec['error'])}[/red]",
        )
    console = Console()
    print_table(table, console)
    console.print(f"results in {out_dir} (pipeline {elapsed:.2f} s)", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``pslg segment`` to ``app``."""
    app.command("segment", help=HELP, epilog=EPILOG, rich_help_panel="Pre-labelling", no_args_is_help=True)(segment)
