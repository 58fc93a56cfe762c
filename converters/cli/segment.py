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
from typing import Any, Optional, Sequence

import typer

from annotate.atomic import atomic_write_bytes

EXIT_PROMPT_FAILED = 1
EXIT_USAGE = 2

#: Keys a PROMPTS.json entry may have.
PROMPT_KEYS = ("box", "points", "point_labels", "text")

#: Overlay colours (RGB), one per prompt, cycled; chosen to stay distinguishable on green/grey aerial scenes.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 64, 160),
    (0, 200, 255),
    (255, 200, 0),
    (160, 80, 255),
    (255, 110, 30),
    (0, 255, 160),
    (255, 255, 255),
    (60, 120, 255),
)
POSITIVE = (40, 230, 60)
NEGATIVE = (240, 40, 40)

HELP = """Segment objects in one image with PSLG-SAM stage 2 (box/points → SAM or the weights-free segmenter → MBO).

[bold]One prompt[/bold] (writes DIR/mask.png, DIR/overlay.png, DIR/results.json):

  pslg segment scene.tif --box 120,40,260,180 --point 190,110 --out-dir out/

[bold]Many prompts, one encoder pass[/bold] (writes DIR/mask_000.png …, one DIR/overlay.png, DIR/results.json):

  pslg segment scene.tif --prompts prompts.json --out-dir out/

PROMPTS.json is a list of objects in image pixels:
{"box": \\[x0, y0, x1, y1], "points": \\[\\[x, y], ...], "point_labels": \\[1, 0, ...], "text": "..."};
everything but one of box / points / text is optional, point_labels default to 1 (on the object).

[bold]Text prompts[/bold] need a grounding model (stage 1): --text "the storage tank at the top left"
--grounding DIR_OR_HUB_ID. A prompt with text and a box uses the box.

[bold]Segmenter[/bold]: without --checkpoint the weights-free classical segmenter runs; with --checkpoint
(or $PSLG_SAM_CHECKPOINT) SAM runs (--model-type vit_h | vit_l | vit_b | auto, or $PSLG_SAM_MODEL_TYPE).

[bold]results.json[/bold]: a list, one entry per prompt in order: segmentation (COCO compressed RLE),
score, box and points actually used (CFPG point included), area, bbox (COCO xywh), mask_file,
grounding_score, timings_ms, model_version, and error (null when the prompt succeeded).

Exit codes: 0 all prompts succeeded; 1 some prompt failed (the others are written); 2 nothing could run.
"""


# ---------------------------------------------------------------------------------------------- parsing


def parse_numbers(text: str, count: int, what: str) -> tuple[float, ...]:
    """``"1,2,3,4"`` → ``(1.0, 2.0, 3.0, 4.0)``; raises ``typer.BadParameter`` naming ``what``."""
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise typer.BadParameter(f"{what} {text!r} must be {count} comma-separated numbers") from None
    if len(values) != count:
        raise typer.BadParameter(f"{what} {text!r} must be {count} comma-separated numbers, got {len(values)}")
    return values


def prompt_from_json(item: Any, index: int):
    """Turn one PROMPTS.json entry into a ``Prompt``; raise ValueError with a message naming the entry."""
    from annotate.types import Prompt

    where = f"prompt {index}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object with box / points / point_labels / text, got {type(item).__name__}")
    unknown = sorted(set(item) - set(PROMPT_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(PROMPT_KEYS)}")
    box = item.get("box")
    if box is not None:
        if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_number(v) for v in box):
            raise ValueError(f"{where}: box must be [x0, y0, x1, y1] in pixels, got {box!r}")
        box = tuple(float(v) for v in box)
    points_raw = item.get("points") or []
    if not isinstance(points_raw, (list, tuple)) or not all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_number(v) for v in p) for p in points_raw
    ):
        raise ValueError(f"{where}: points must be a list of [x, y] pairs, got {points_raw!r}")
    labels_raw = item.get("point_labels") or []
    if not isinstance(labels_raw, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels_raw):
        raise ValueError(f"{where}: point_labels must be a list of 0/1 integers, got {labels_raw!r}")
    text = item.get("text")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{where}: text must be a string, got {type(text).__name__}")
    return Prompt(
        box=box,
        points=[(float(p[0]), float(p[1])) for p in points_raw],
        point_labels=[int(v) for v in labels_raw],
        text=text,
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_prompts_file(path: Path) -> list[Any]:
    """The raw entries of a PROMPTS.json (a JSON list); raises ValueError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"prompts file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read prompts file {path}: {exc}") from None
    if not isinstance(data, list):
        raise ValueError(f"prompts file {path} must hold a JSON list of prompts, got {type(data).__name__}")
    if not data:
        raise ValueError(f"prompts file {path} holds no prompts")
    return data


# ---------------------------------------------------------------------------------------------- writing


def write_png(path: Path, image) -> None:
    """Write an RGB (H×W×3) or single-channel (H×W) uint8 array as PNG, atomically."""
    import cv2
    import numpy as np

    arr = np.ascontiguousarray(image)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:  # pragma: no cover - OpenCV only fails here on impossible shapes
        raise RuntimeError(f"could not encode {path.name} as PNG")
    atomic_write_bytes(path, buf.tobytes())


def render_overlay(image, results: Sequence[Any], user_points: Sequence[int]):
    """The image with every mask tinted and outlined, its box, its points, and its index.

    Positive points are green discs, negative ones red crosses; a point the CFPG added (beyond the
    ``user_points[i]`` the user gave) is a green diamond, so a reviewer sees what the method chose.
    """
    import cv2
    import numpy as np

    canvas = image.astype(np.float32).copy()
    h, w = image.shape[:2]
    side = min(h, w)
    thick = max(1, round(side / 700))  # thin lines: aerial objects are often 10–30 pixels long
    radius = max(2, round(side / 260))
    font = min(1.0, max(0.35, side / 1800))
    for i, r in enumerate(results):
        if r.mask is not None and r.mask.any():
            colour = np.array(PALETTE[i % len(PALETTE)], np.float32)
            canvas[r.mask] = canvas[r.mask] * 0.5 + colour * 0.5
    out = np.clip(canvas, 0, 255).astype(np.uint8)
    for i, r in enumerate(results):
        colour = PALETTE[i % len(PALETTE)]
        if r.mask is not None and r.mask.any():
            contours, _ = cv2.findContours(r.mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, colour, thick, cv2.LINE_AA)
        if r.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in r.box)
            cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, thick, cv2.LINE_AA)
            if len(results) > 1:
                label = str(i)
                (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
                # above the box's top-left corner, or below the box when there is no room above
                ty = y0 - base - 1 if y0 - th - base - 2 >= 0 else min(h - base - 1, y1 + th + 2)
                cv2.rectangle(out, (x0, ty - th - 1), (x0 + tw + 2, ty + base), colour, -1)
                cv2.putText(out, label, (x0 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), 1, cv2.LINE_AA)
        for j, ((px, py), lab) in enumerate(zip(r.points, r.point_labels)):
            c = (int(round(px)), int(round(py)))
            if lab == 1 and j >= user_points[i]:  # added by CFPG
                d = radius + 1
                pts = np.array([[c[0], c[1] - d], [c[0] + d, c[1]], [c[0], c[1] + d], [c[0] - d, c[1]]], np.int32)
                cv2.fillPoly(out, [pts], POSITIVE, cv2.LINE_AA)
                cv2.polylines(out, [pts], True, (0, 0, 0), 1, cv2.LINE_AA)
            elif lab == 1:
                cv2.circle(out, c, radius, POSITIVE, -1, cv2.LINE_AA)
                cv2.circle(out, c, radius, (0, 0, 0), 1, cv2.LINE_AA)
            else:
                cv2.line(out, (c[0] - radius, c[1] - radius), (c[0] + radius, c[1] + radius), NEGATIVE, thick + 1, cv2.LINE_AA)
                cv2.line(out, (c[0] - radius, c[1] + radius), (c[0] + radius, c[1] - radius), NEGATIVE, thick + 1, cv2.LINE_AA)
    return out


def result_entry(result: Any, text: Optional[str], mask_file: Optional[str], model_version: str) -> dict[str, Any]:
    """One results.json entry (JSON-ready) for a ``PromptResult``."""
    from annotate.masks import coco_rle_encode, mask_area, mask_to_bbox

    ok = result.error is None and result.mask is not None
    return {
        "segmentation": coco_rle_encode(result.mask) if ok else None,
        "score": float(result.score) if ok else None,
        "area": int(mask_area(result.mask)) if ok else None,
        "bbox": [float(v) for v in mask_to_bbox(result.mask)] if ok and result.mask.any() else None,
        "box": [float(v) for v in result.box] if result.box is not None else None,
        "points": [[float(x), float(y)] for x, y in result.points],
        "point_labels": [int(v) for v in result.point_labels],
        "text": text,
        "grounding_score": None if result.grounding_score is None else float(result.grounding_score),
        "mask_file": mask_file if ok else None,
        "timings_ms": {k: round(float(v), 2) for k, v in result.timings_ms.items()},
        "model_version": model_version,
        "error": result.error,
    }


# ---------------------------------------------------------------------------------------------- command


def _fail(message: str) -> "typer.Exit":
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/bold red] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def segment(
    image: Path = typer.Argument(..., help="Image to segment: PNG, JPEG, TIFF or GeoTIFF (grayscale, 16-bit and multi-band are converted to 8-bit RGB).", show_default=False),
    out_dir: Path = typer.Option(..., "--out-dir", "-o", help="Folder for mask PNGs, overlay.png and results.json (created if missing).", show_default=False),
    box: Optional[str] = typer.Option(None, "--box", "-b", metavar="X0,Y0,X1,Y1", help="Box around the object, in pixels."),
    point: list[str] = typer.Option([], "--point", "-p", metavar="X,Y", help="A point on the object (repeatable)."),
    negative_point: list[str] = typer.Option([], "--negative-point", "-n", metavar="X,Y", help="A point NOT on the object (repeatable)."),
    text: Optional[str] = typer.Option(None, "--text", "-t", help="Referring expression; needs --grounding unless a box is given."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", metavar="PROMPTS.json", help="Many prompts in one run (a JSON list, see above); excludes --box/--point/--text."),
    grounding: Optional[str] = typer.Option(None, "--grounding", "-g", metavar="MODEL", help="Stage-1 grounding model for text prompts: a local folder or a Hugging Face hub id."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", envvar="PSLG_SAM_CHECKPOINT", help="SAM checkpoint (.pth). Without it the weights-free classical segmenter runs.", show_default=False),
    model_type: str = typer.Option("vit_b", "--model-type", "-m", envvar="PSLG_SAM_MODEL_TYPE", help="SAM architecture of --checkpoint: vit_h, vit_l, vit_b, or auto (detect from the weights)."),
    device: str = typer.Option("auto", "--device", "-d", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."),
    cfpg: Optional[bool] = typer.Option(None, "--cfpg/--no-cfpg", help="Add the clustering-based foreground point inside each box (default: the measured default for the segmenter).", show_default=False),
    mbo: Optional[bool] = typer.Option(None, "--mbo/--no-mbo", help="Refine each mask's boundary with MBO (default: the measured default for the segmenter).", show_default=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print the results table."),
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

    # ---- inputs and models
    from annotate.image_io import ImageLoadError, image_key, load_image

    try:
        loaded = load_image(image)
    except (ImageLoadError, OSError) as exc:
        raise _fail(str(exc) if str(image) in str(exc) else f"cannot read image {image}: {exc}") from None
    rgb = loaded.rgb

    from annotate.device import DeviceError
    from annotate.segmenters import build_segmenter

    try:
        segmenter = build_segmenter(checkpoint, model_type=model_type, device=device)
    except (DeviceError, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    grounder = None
    if grounding:
        from annotate.grounding import load_grounder

        try:
            grounder = load_grounder(grounding, device=device)
        except Exception as exc:  # any failure to load a model is reported, not traced
            raise _fail(f"cannot load grounding model {grounding}: {exc}") from None

    from annotate.pipeline import Pipeline
    from annotate.types import PromptResult

    pipeline = Pipeline(segmenter, grounder=grounder, use_cfpg=cfpg, use_mbo=mbo)
    started = time.perf_counter()
    runnable = [p for p, _, err in entries if err is None]
    answered = iter(pipeline.run(rgb, runnable, image_key=image_key(rgb)) if runnable else [])
    results: list[PromptResult] = []
    for p, _, err in entries:
        results.append(next(answered) if err is None else PromptResult(mask=None, score=0.0, box=None, error=err))
    elapsed = time.perf_counter() - started

    # ---- outputs
    import numpy as np

    from annotate.image_io import write_georeferenced_mask

    out_dir.mkdir(parents=True, exist_ok=True)
    version = pipeline.model_version
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
    user_points = [len(p.points) if p is not None else 0 for p, _, _ in entries]
    write_png(out_dir / "overlay.png", render_overlay(rgb, results, user_points))
    atomic_write_bytes(out_dir / "results.json", (json.dumps(records, indent=2) + "\n").encode("utf-8"))

    failed = sum(1 for r in results if r.error is not None)
    if not quiet:
        _print_table(records, image, rgb.shape, version, elapsed, out_dir)
    if failed:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]{failed} of {len(results)} prompt(s) failed[/bold red]; see {out_dir / 'results.json'}", highlight=False)
        raise typer.Exit(EXIT_PROMPT_FAILED)


def _print_table(records: list[dict], image: Path, shape: tuple, version: str, elapsed: float, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{image.name} ({shape[1]}×{shape[0]}) — {version}", title_justify="left")
    for col, kw in (("#", {"justify": "right"}), ("status", {}), ("score", {"justify": "right"}), ("area", {"justify": "right"}),
                    ("box", {}), ("points", {"justify": "right"}), ("ms", {"justify": "right"}), ("mask / error", {})):
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
            rec["mask_file"] if ok else f"[red]{rec['error']}[/red]",
        )
    console = Console()
    console.print(table)
    console.print(f"results in {out_dir} (pipeline {elapsed:.2f} s)", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``pslg segment`` to ``app``."""
    app.command("segment", help=HELP, rich_help_panel="Pre-labelling", no_args_is_help=True)(segment)
