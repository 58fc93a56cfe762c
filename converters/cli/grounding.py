"""``pslg train grounding`` (fine-tune stage 1 on an RRSIS dataset) and ``pslg eval`` (the RRSIS table).

Exit codes: 0 done; 1 the command ran but some items failed (listed, and counted as misses in the scores);
2 nothing could run (bad options, unreadable dataset, model that cannot be loaded, unusable device).
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import typer

from annotate.atomic import atomic_write_text
from annotate.image_io import DEFAULT_MAX_PIXELS
from converters.cli.common import EXIT_INTERRUPTED, HELP_MARKUP, check_writable_folder, interruptible, model_spec_problem, print_table, write_error

EXIT_ITEMS_FAILED = 1
EXIT_USAGE = 2
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)

train_app = typer.Typer(rich_markup_mode=HELP_MARKUP, name="train", help="Train the models of the toolkit on your own data.", no_args_is_help=True)


def _fail(message: str) -> "typer.Exit":
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def _read_split(data: Path, split: str, images: Optional[Path] = None, *, required: bool = True) -> list:
    """The refs of ``split``; with ``required``, an empty split fails naming the splits the dataset has."""
    from converters.rrsis import read_rrsis

    try:
        records = read_rrsis(data, split, image_dir=images)
        if records or not required:
            return records
        present = sorted({r.split for r in read_rrsis(data, image_dir=images)})
    except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
        raise _fail(f"cannot read the RRSIS dataset at {data}: {exc}") from None
    raise _fail(f"{data} has no refs in split {split!r}; "
                + (f"its splits: {', '.join(repr(s) for s in present)}" if present else "it has no refs at all"))


def _default_split(data: Path, images: Optional[Path]) -> str:
    """``test`` when the dataset has it, else its only split (said on stderr); several others: fail naming them."""
    from converters.rrsis import read_rrsis

    try:
        present = sorted({r.split for r in read_rrsis(data, image_dir=images)})
    except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
        raise _fail(f"cannot read the RRSIS dataset at {data}: {exc}") from None
    if "test" in present or not present:
        return "test"
    if len(present) == 1:
        typer.echo(f"eval: {data} has no 'test' split; scoring its only split, {present[0]!r}", err=True)
        return present[0]
    raise _fail(f"{data} has no 'test' split; give --split, one of {', '.join(repr(s) for s in present)}")


def check_model_spec(spec: str, option: str) -> None:
    """Fail (exit 2) when ``spec`` names a missing local folder (see ``common.model_spec_problem``)."""
    problem = model_spec_problem(spec, option)
    if problem:
        raise _fail(problem)


def _has_files(folder: Path) -> bool:
    return any(p.is_file() for p in folder.rglob("*"))


@train_app.command("grounding", epilog=(
    "Examples:\n\n"
    "\b\n  pslg train grounding --data data/ --base IDEA-Research/grounding-dino-tiny --out models/\n\n"
    "\b\n  pslg train grounding --data data/ --base models/ --out models/ --epochs 5 --device cuda\n\n"
    "\b\n  pslg train grounding --data data/ --base florence-community/Florence-2-base --out models-florence/"))
def train_grounding(
    data: Path = typer.Option(..., "--data", help="RRSIS-layout dataset (refs(unc).p + instances.json + images), e.g. from `pslg export rrsis`."),
    base: str = typer.Option(..., "--base", help="Model to start from: a Grounding DINO directory, a model store (its current version) or a hub id such as IDEA-Research/grounding-dino-tiny. A Florence-2 or Qwen2.5-VL base trains a LoRA adapter (the [vlm] extra)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model store (see `pslg models versions`); each run adds a version vNNNN/ and makes it current. Point the backend's PSLG_GROUNDING_MODEL here to serve it without a restart."),
    epochs: int = typer.Option(10, "--epochs", min=1, help="Passes over the train split."),
    lr: float = typer.Option(1e-4, "--lr", help="AdamW learning rate."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Expressions per optimiser step."),
    seed: int = typer.Option(0, "--seed", help="Seed of the shuffling and of the new weights."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps"),
    train_backbones: bool = typer.Option(False, "--train-backbones/--freeze-backbones", help="Also update the Swin image and BERT text encoders (default: frozen)."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder of the image files when they are not at <data>/images/<name>/JPEGImages."),
    train_split: str = typer.Option("train", "--train-split", help="Split to train on."),
    val_split: str = typer.Option("val", "--val-split", help="Split to measure box Acc@0.5 on after training."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue an interrupted run with the same data, base and settings."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Fine-tune Grounding DINO (or a LoRA adapter of Florence-2 / Qwen2.5-VL) on the train split's boxes; evaluate on val; write a new version."""
    from annotate.device import DeviceError
    from annotate.extras import MissingExtraError, require_extra
    from annotate.grounding.base import GroundingError
    from annotate.grounding.evaluation import samples_from_records

    try:
        require_extra("grounding", "Training a grounding model")
    except MissingExtraError as exc:
        raise _fail(str(exc)) from None
    from annotate.grounding.training import TrainConfig, train_grounder

    check_model_spec(base, "--base")
    train_records = _read_split(data, train_split, image_root)
    val_records = _read_split(data, val_split, image_root, required=False)
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, train_backbones=train_backbones)
    out_is_new = not out.exists()
    try:
        with interruptible():  # SIGTERM unwinds like Ctrl-C: the store keeps only committed versions
            result = train_grounder(
                samples_from_records(train_records), samples_from_records(val_records), base, out, config,
                device=device, data_root=str(Path(data).resolve()), resume=resume, progress=progress, log=typer.echo,
            )
    except BaseException as exc:
        if out_is_new and out.is_dir() and not _has_files(out):  # a failed first run leaves no empty folder
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(exc, KeyboardInterrupt):
            typer.echo(f"interrupted: no new version was committed to {out}", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        if isinstance(exc, (GroundingError, DeviceError, ValueError)):
            raise _fail(str(exc)) from None
        if isinstance(exc, OSError):
            raise _fail(write_error(exc, out)) from None
        raise
    if result.val is not None:
        typer.echo(f"val box Acc@0.5 {result.val.acc50:.3f}  mean IoU {result.val.mean_iou:.3f}  (n={result.val.n})")
    typer.echo(f"model version: {result.version}")
    typer.echo(str(result.path))
    if result.skipped:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _fit(mask: Any, shape: tuple[int, int]) -> Any:
    """``mask`` cropped / zero-padded to ``shape`` (RRSIS-D images may be a row taller than their annotation)."""
    import numpy as np

    if mask.shape == shape:
        return mask
    out = np.zeros(shape, dtype=bool)
    h, w = min(shape[0], mask.shape[0]), min(shape[1], mask.shape[1])
    out[:h, :w] = mask[:h, :w]
    return out


def _scores_dict(scores: Any) -> dict[str, Any]:
    return {"miou": scores.miou, "oiou": scores.oiou,
            "precision": {f"{k:.1f}": v for k, v in sorted(scores.precision.items())}, "n": scores.n}


def _generalized_dict(scores: Any) -> dict[str, Any]:
    return {"giou": scores.giou, "ciou": scores.ciou, "n_acc": scores.n_acc, "t_acc": scores.t_acc, "n": scores.n,
            "no_target": scores.n_no_target}


def evaluate_dataset(
    records: list,
    pipeline: Any,
    oracle_box: bool,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target_threshold: Optional[float] = None,
) -> dict[str, Any]:
    """Run the pipeline on every expression of ``records``; RRSIS scores (native + 480), box accuracy, generalized
    scores (gIoU, cIoU, N-acc, T-acc), per category.

    A dataset of one-object refs is answered as the RRSIS papers do (one box per expression, never empty). One
    with generalized refs (several objects or none) is answered with ``Pipeline.run_targets`` (every object
    stage 1 keeps above ``target_threshold``, or nothing); its RRSIS columns then cover the one-object refs only.
    """
    import numpy as np
    from tqdm.auto import tqdm

    from annotate.grounding.evaluation import summarise
    from annotate.image_io import ImageLoadError, image_key, load_image
    from annotate.metrics import box_iou, generalized_metrics, rrsis_scores
    from annotate.types import Prompt

    generalized = any(getattr(rec, "generalized", False) for rec in records)
    by_image: dict[Path, list] = defaultdict(list)
    for rec in records:
        by_image[Path(rec.image_path)].append(rec)
    preds: list = []
    gts: list = []
    cats: list[str] = []
    one_object: list[bool] = []
    box_ious: list[float] = []
    errors: list[str] = []
    for path, recs in tqdm(by_image.items(), desc="eval", unit="image", disable=not progress):
        items = [(rec, sentence) for rec in recs for sentence in rec.sentences]
        if not items:
            continue
        try:
            rgb = load_image(path, max_pixels=max_pixels).rgb
            if generalized:
                answers = [_answer_targets(pipeline, rgb, rec, s, oracle_box, target_threshold) for rec, s in items]
            else:
                results = pipeline.run(
                    rgb, [Prompt(box=rec.bbox_xyxy if oracle_box else None, text=s) for rec, s in items],
                    image_key=image_key(rgb))
                answers = [[res] for res in results]
        except (ImageLoadError, OSError, ValueError) as exc:
            answers = [None] * len(items)
            errors.append(f"{path.name}: {exc}")
        for (rec, sentence), answer in zip(items, answers):
            gt = rec.load_mask()
            pred = np.zeros(gt.shape, bool)
            box: Optional[tuple] = None
            for res in answer or []:
                if res.ok:
                    pred |= _fit(np.asarray(res.mask, bool), gt.shape)
                    box = res.box if box is None else box
                else:
                    errors.append(f"ref {rec.ref_id} ({path.name}, {sentence!r}): {res.error}")
            preds.append(pred)
            gts.append(gt)
            single = not getattr(rec, "generalized", False)
            one_object.append(single)
            box_ious.append(box_iou(box, rec.bbox_xyxy) if single and box is not None else 0.0)
            cats.append(rec.category or "(none)")

    def table(idx: list[int]) -> dict[str, Any]:
        row: dict[str, Any] = {"n": len(idx)}
        single = [i for i in idx if one_object[i]]
        if single:
            p, g = [preds[i] for i in single], [gts[i] for i in single]
            row["native"] = _scores_dict(rrsis_scores(p, g, protocol="native"))
            row["480"] = _scores_dict(rrsis_scores(p, g, protocol="480"))
            if not oracle_box:
                box = summarise([box_ious[i] for i in single], [cats[i] for i in single])
                row["box"] = {"acc@0.5": box.acc50, "mean_iou": box.mean_iou}
        row["generalized"] = _generalized_dict(generalized_metrics([preds[i] for i in idx], [gts[i] for i in idx]))
        return row

    everything = list(range(len(preds)))
    per_cat: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cats):
        per_cat[c].append(i)
    return {
        "overall": table(everything) if everything else None,
        "per_category": {c: table(idx) for c, idx in sorted(per_cat.items())},
        "errors": errors,
        "generalized_data": generalized,
    }


def _answer_targets(pipeline: Any, rgb: Any, rec: Any, sentence: str, oracle_box: bool,
                    threshold: Optional[float]) -> list:
    """Every object a generalized expression gets: the refs' own boxes (``--oracle-box``) or stage 1's choice."""
    from annotate.image_io import image_key
    from annotate.pipeline import PromptError
    from annotate.types import Prompt, PromptResult

    if oracle_box:
        return pipeline.run(rgb, [Prompt(box=b, text=sentence) for b in rec.boxes], image_key=image_key(rgb))
    try:
        return pipeline.run_targets(rgb, sentence, threshold=threshold, image_key=image_key(rgb))
    except (PromptError, ValueError) as exc:  # this expression only (a grounding error): counted as a miss
        return [PromptResult(mask=None, score=0.0, box=None, error=str(exc))]


def _category_column(table: Any, report: dict[str, Any]) -> None:
    """The category column, wide enough for every name: names are folded, never cut ("Large_Ve…")."""
    names = ["category", "all", *report["per_category"]]
    table.add_column("category", no_wrap=True, overflow="fold", min_width=min(40, max(map(len, names))))


def _print_errors(console: Any, errors: list[str]) -> None:
    if errors:
        console.print(f"[yellow]{len(errors)} item(s) failed (counted as IoU 0):[/yellow]")
        for e in errors[:20]:
            console.print(f"  {e}", highlight=False, markup=False)


def _print_box_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    t = Table(title=f"Stage 1 (boxes only) on {escape(report['settings']['split'])}")
    _category_column(t, report)
    for col in ("Acc@0.5", "mean IoU", "n"):
        t.add_column(col, justify="right")
    for name, row in [("all", report["overall"])] + list(report["per_category"].items()):
        t.add_row("[bold]all[/bold]" if name == "all" else escape(name), f"{100 * row['acc@0.5']:.2f}",
                  f"{100 * row['mean_iou']:.2f}", str(row["n"]))
    print_table(t, console)
    _print_errors(console, report["errors"])


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    oracle = report["settings"]["oracle_box"]
    rows = [(n, r) for n, r in [("all", report["overall"])] + list(report["per_category"].items()) if r is not None]
    for protocol in ("native", "480"):
        if not any(protocol in row for _, row in rows):
            continue
        title = f"RRSIS {report['settings']['split']} — {'native resolution' if protocol == 'native' else '480×480 (published protocol)'}"
        if report.get("generalized_data"):
            title += " — one-object refs"
        t = Table(title=title)
        _category_column(t, report)
        for x in THRESHOLDS:
            t.add_column(f"Pr@{x:.1f}", justify="right")
        t.add_column("mIoU", justify="right")
        t.add_column("oIoU", justify="right")
        if not oracle:
            t.add_column("box Acc@0.5", justify="right")
        t.add_column("n", justify="right")
        for name, row in rows:
            if protocol not in row:
                continue
            s = row[protocol]
            cells = [f"{100 * s['precision'][f'{x:.1f}']:.2f}" for x in THRESHOLDS]
            cells += [f"{100 * s['miou']:.2f}", f"{100 * s['oiou']:.2f}"]
            if not oracle:
                cells.append(f"{100 * row['box']['acc@0.5']:.2f}")
            t.add_row(f"[bold]{name}[/bold]" if name == "all" else escape(name), *cells, str(s["n"]))
        print_table(t, console)
    t = Table(title=f"Generalized (gRefCOCO) {report['settings']['split']} — native resolution")
    _category_column(t, report)
    for col in ("gIoU", "cIoU", "N-acc", "T-acc", "no target", "n"):
        t.add_column(col, justify="right")
    for name, row in rows:
        g = row["generalized"]
        cells = [f"{100 * g[k]:.2f}" if g[k] is not None else "-" for k in ("giou", "ciou", "n_acc", "t_acc")]
        t.add_row(f"[bold]{name}[/bold]" if name == "all" else escape(name), *cells, str(g["no_target"]), str(g["n"]))
    print_table(t, console)
    _print_errors(console, report["errors"])


def evaluate_boxes_only(records: list, grounder: Any, progress: bool = True,
                        max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Stage 1 alone: box Acc@0.5 and mean IoU per category (no segmenter runs: seconds, not minutes)."""
    from tqdm.auto import tqdm

    from annotate.grounding.evaluation import evaluate_boxes, samples_from_records
    from annotate.image_io import load_image

    scores = evaluate_boxes(grounder, samples_from_records(records),
                            progress=(lambda it: tqdm(it, desc="eval boxes", unit="expr")) if progress else None,
                            image_loader=lambda path: load_image(path, max_pixels=max_pixels).rgb)
    return {"overall": {"acc@0.5": scores.acc50, "mean_iou": scores.mean_iou, "n": scores.n},
            "per_category": scores.per_category, "errors": scores.errors}


EVAL_EPILOG = (
    "Examples:\n\n"
    "\b\n  pslg eval --data data/ --split test --grounding models/ --out eval-test.json\n\n"
    "\b\n  pslg eval --data data/ --split val --grounding models/ --boxes-only     (stage 1 alone, fast)\n\n"
    "\b\n  pslg eval --data data/ --split test --oracle-box --no-mbo               (stage 2 alone)"
)


def eval_command(
    data: Path = typer.Option(..., "--data", help="RRSIS-layout dataset (e.g. from `pslg export rrsis`).", show_default=False),
    split: Optional[str] = typer.Option(None, "--split", help="Split to score: train, val or test (default: test, or the only split the dataset has).", show_default=False),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder of the image files when they are not at <data>/images/<name>/JPEGImages.", show_default=False),
    grounding: Optional[str] = typer.Option(None, "--grounding", "-g", metavar="MODEL", help="Stage-1 model: a local folder (Grounding DINO, OWLv2, a `pslg train grounding` model store) or a hub id."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", envvar="PSLG_SAM_CHECKPOINT", help="SAM checkpoint (a file, or a name such as vit_b from `pslg models pull`); without it the weights-free classical segmenter runs.", show_default=False),
    model_type: str = typer.Option("vit_b", "--model-type", envvar="PSLG_SAM_MODEL_TYPE", help="SAM architecture of --checkpoint: vit_h, vit_l, vit_b or auto."),
    one_stage: Optional[str] = typer.Option(None, "--one-stage", metavar="MODEL", help="One-stage model (a SAM 3 folder or hub id) instead of --grounding and --checkpoint: the expression's category finds the instances, its spatial words pick one.", show_default=False),
    precision: str = typer.Option("auto", "--precision", envvar="PSLG_PRECISION", help="Model precision on CUDA: auto, fp32, bf16 or tf32 (CPU: fp32)."),
    cfpg: Optional[bool] = typer.Option(None, "--cfpg/--no-cfpg", help="CFPG foreground point (default: the measured default for the segmenter; --no-cfpg for the ablation).", show_default=False),
    mbo: Optional[bool] = typer.Option(None, "--mbo/--no-mbo", help="MBO boundary refinement (default: the measured default for the segmenter; --no-mbo for the ablation).", show_default=False),
    oracle_box: bool = typer.Option(False, "--oracle-box", help="Use the ground-truth box instead of stage 1: separates stage-1 from stage-2 errors."),
    boxes_only: bool = typer.Option(False, "--boxes-only", help="Score stage 1 only (box Acc@0.5, mean IoU): no mask stage runs."),
    spatial: bool = typer.Option(True, "--spatial/--no-spatial", help="Let position and size words (\"top left\", \"largest\") re-rank the grounder's boxes."),
    target_threshold: float = typer.Option(0.3, "--target-threshold", min=0.0, help="Datasets with multi-object or no-target refs: the re-ranked grounding score an object needs (none passes: \"no target\")."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the report as JSON to this file (default: print only).", show_default=False),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N refs (quick checks).", show_default=False),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", envvar="PSLG_MAX_PIXELS", min=1, help="Refuse images with more pixels (width × height) than this."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Score text → box → mask on an RRSIS split: Pr@0.5…0.9, mIoU, oIoU (native and 480×480), box Acc@0.5, and gIoU, cIoU, N-acc, T-acc (multi-object / no-target refs), per category."""
    if boxes_only and oracle_box:
        raise _fail("--boxes-only scores the grounder's boxes; --oracle-box replaces them: give one of the two")
    if one_stage and (grounding or boxes_only):
        raise _fail("--one-stage grounds and segments by itself: drop --grounding / --boxes-only")
    if not grounding and not oracle_box and not one_stage:
        raise _fail("give --grounding MODEL (text → box), --one-stage MODEL or --oracle-box (ground-truth boxes)")
    if grounding:
        check_model_spec(grounding, "--grounding")
    if one_stage:
        check_model_spec(one_stage, "--one-stage")
    from annotate.precision import PrecisionError, parse_precision

    try:
        parse_precision(precision)
    except PrecisionError as exc:
        raise _fail(str(exc)) from None
    if out is not None:  # before minutes of evaluation: an unwritable report path should cost nothing
        try:
            if out.is_dir():
                raise IsADirectoryError(21, "Is a folder, not a file", str(out))
            check_writable_folder(out.parent)
        except OSError as exc:
            raise _fail(write_error(exc, out)) from None
    if split is None:
        split = _default_split(data, image_root)
    records = _read_split(data, split, image_root)
    if limit:
        records = records[:limit]

    from annotate.device import DeviceError
    from annotate.extras import MissingExtraError
    from annotate.factory import build_pipeline, build_segmenter, load_grounding

    grounder = None
    if grounding and not oracle_box:
        try:
            grounder = load_grounding(grounding, device=device, **({} if spatial else {"spatial_weight": 0.0}))
        except Exception as exc:  # any failure to load a model is reported, not traced
            raise _fail(f"cannot load grounding model {grounding}: {exc}") from None
    settings = {"data": str(Path(data).resolve()), "split": split, "grounding": grounding if not oracle_box else None,
                "oracle_box": oracle_box, "boxes_only": boxes_only, "spatial": spatial, "refs": len(records),
                "target_threshold": target_threshold}
    if boxes_only:
        try:
            with interruptible():
                report = evaluate_boxes_only(records, grounder, progress=progress, max_pixels=max_pixels)
        except KeyboardInterrupt:
            typer.echo("interrupted: nothing written", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        report["settings"] = {**settings, "model_version": getattr(grounder, "model_version", None)}
        _print_box_report(report)
    else:
        try:
            if one_stage:
                from annotate.factory import build_one_stage_pipeline

                pipeline = build_one_stage_pipeline(one_stage, device=device, use_cfpg=cfpg, use_mbo=mbo,
                                                    precision=precision, **({} if spatial else {"spatial_weight": 0.0}))
            else:
                segmenter = build_segmenter(checkpoint, model_type=model_type, device=device, precision=precision)
        except (DeviceError, MissingExtraError, ValueError, FileNotFoundError, OSError) as exc:
            raise _fail(str(exc)) from None
        if not one_stage:
            pipeline = build_pipeline(segmenter=segmenter, grounding=grounder, use_cfpg=cfpg, use_mbo=mbo)
        try:
            with interruptible():  # SIGTERM (a scheduler, `timeout`) says so instead of dying silently
                report = evaluate_dataset(records, pipeline, oracle_box=oracle_box, progress=progress,
                                          max_pixels=max_pixels, target_threshold=target_threshold)
        except KeyboardInterrupt:
            typer.echo("interrupted: nothing written", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        report["settings"] = {**settings, "one_stage": one_stage, "checkpoint": str(checkpoint) if checkpoint and not one_stage else None,
                              "model_type": model_type, "cfpg": pipeline.use_cfpg, "mbo": pipeline.use_mbo,
                              "model_version": pipeline.model_version}
        _print_report(report)
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out, json.dumps(report, indent=2))
        except OSError as exc:
            raise _fail(write_error(exc, out)) from None
        typer.echo(f"wrote {out}")
    if report["errors"]:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``pslg train grounding`` and ``pslg eval`` to ``app``."""
    panel = "Grounding (stage 1) and evaluation"
    app.add_typer(train_app, name="train", rich_help_panel=panel)
    app.command("eval", rich_help_panel=panel, epilog=EVAL_EPILOG)(eval_command)
