"""``pslg train grounding`` (fine-tune stage 1 on an RRSIS dataset) and ``pslg eval`` (the RRSIS table).

Exit codes: 0 done; 1 the command ran but some items failed (listed, and counted as misses in the scores);
2 nothing could run (bad options, unreadable dataset, model that cannot be loaded, unusable device).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import typer

from annotate.atomic import atomic_write_text

EXIT_ITEMS_FAILED = 1
EXIT_USAGE = 2
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)

train_app = typer.Typer(name="train", help="Train the models of the toolkit on your own data.", no_args_is_help=True)


def _fail(message: str) -> "typer.Exit":
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/bold red] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def _read_split(data: Path, split: str, images: Optional[Path] = None) -> list:
    from converters.rrsis import read_rrsis

    try:
        return read_rrsis(data, split, image_dir=images)
    except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
        raise _fail(f"cannot read the RRSIS dataset at {data}: {exc}") from None


@train_app.command("grounding")
def train_grounding(
    data: Path = typer.Option(..., "--data", help="RRSIS-layout dataset (refs(unc).p + instances.json + images), e.g. from `pslg export rrsis`."),
    base: str = typer.Option(..., "--base", help="Model to start from: a Grounding DINO directory (also an earlier `pslg train grounding` version) or a hub id such as IDEA-Research/grounding-dino-tiny."),
    out: Path = typer.Option(..., "--out", help="Models directory; each run adds grounding-vNNNN-<timestamp>/ to it."),
    epochs: int = typer.Option(10, "--epochs", min=1),
    lr: float = typer.Option(1e-4, "--lr", help="AdamW learning rate."),
    batch_size: int = typer.Option(4, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps"),
    train_backbones: bool = typer.Option(False, "--train-backbones/--freeze-backbones", help="Also update the Swin image and BERT text encoders (default: frozen)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of the image files when they are not at <data>/images/<name>/JPEGImages."),
    train_split: str = typer.Option("train", "--train-split"),
    val_split: str = typer.Option("val", "--val-split"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue an interrupted run with the same data, base and settings."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fine-tune Grounding DINO on the train split's boxes (derived from masks); evaluate on val; write a new version."""
    from annotate.device import DeviceError
    from annotate.grounding.base import GroundingError
    from annotate.grounding.evaluation import samples_from_records
    from annotate.grounding.training import TrainConfig, train_grounder

    train_records = _read_split(data, train_split, images)
    if not train_records:
        raise _fail(f"{data} has no refs in split {train_split!r}")
    val_records = _read_split(data, val_split, images)
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, train_backbones=train_backbones)
    try:
        result = train_grounder(
            samples_from_records(train_records), samples_from_records(val_records), base, out, config,
            device=device, data_root=str(Path(data).resolve()), resume=resume, progress=progress, log=typer.echo,
        )
    except (GroundingError, DeviceError, ValueError) as exc:
        raise _fail(str(exc)) from None
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


def evaluate_dataset(
    records: list,
    pipeline: Any,
    oracle_box: bool,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the pipeline on every expression of ``records``; RRSIS scores (native + 480), box accuracy, per category."""
    import numpy as np
    from tqdm.auto import tqdm

    from annotate.grounding.evaluation import summarise
    from annotate.image_io import ImageLoadError, image_key, load_image
    from annotate.metrics import box_iou, rrsis_scores
    from annotate.types import Prompt

    by_image: dict[Path, list] = defaultdict(list)
    for rec in records:
        by_image[Path(rec.image_path)].append(rec)
    preds: list = []
    gts: list = []
    cats: list[str] = []
    box_ious: list[float] = []
    grounding_scores: list[Optional[float]] = []
    errors: list[str] = []
    for path, recs in tqdm(by_image.items(), desc="eval", unit="image", disable=not progress):
        items = [(rec, sentence) for rec in recs for sentence in rec.sentences]
        if not items:
            continue
        try:
            rgb = load_image(path).rgb
            results = pipeline.run(
                rgb, [Prompt(box=rec.bbox_xyxy if oracle_box else None, text=s) for rec, s in items], image_key=image_key(rgb)
            )
        except (ImageLoadError, OSError, ValueError) as exc:
            results = [None] * len(items)
            errors.append(f"{path.name}: {exc}")
        for (rec, sentence), res in zip(items, results):
            gt = rec.load_mask()
            if res is not None and res.ok:
                preds.append(_fit(np.asarray(res.mask, bool), gt.shape))
                box_ious.append(box_iou(res.box, rec.bbox_xyxy) if res.box is not None else 0.0)
                grounding_scores.append(res.grounding_score)
            else:
                preds.append(np.zeros(gt.shape, bool))
                box_ious.append(0.0)
                grounding_scores.append(None)
                if res is not None:
                    errors.append(f"ref {rec.ref_id} ({path.name}, {sentence!r}): {res.error}")
            gts.append(gt)
            cats.append(rec.category or "(none)")

    def table(idx: list[int]) -> dict[str, Any]:
        p, g = [preds[i] for i in idx], [gts[i] for i in idx]
        row = {"native": _scores_dict(rrsis_scores(p, g, protocol="native")),
               "480": _scores_dict(rrsis_scores(p, g, protocol="480")), "n": len(idx)}
        if not oracle_box:
            box = summarise([box_ious[i] for i in idx], [cats[i] for i in idx])
            row["box"] = {"acc@0.5": box.acc50, "mean_iou": box.mean_iou}
        return row

    everything = list(range(len(preds)))
    per_cat: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cats):
        per_cat[c].append(i)
    return {
        "overall": table(everything) if everything else None,
        "per_category": {c: table(idx) for c, idx in sorted(per_cat.items())},
        "errors": errors,
    }


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    oracle = report["settings"]["oracle_box"]
    for protocol in ("native", "480"):
        title = f"RRSIS {report['settings']['split']} — {'native resolution' if protocol == 'native' else '480×480 (published protocol)'}"
        t = Table(title=title)
        t.add_column("category")
        for x in THRESHOLDS:
            t.add_column(f"Pr@{x:.1f}", justify="right")
        t.add_column("mIoU", justify="right")
        t.add_column("oIoU", justify="right")
        if not oracle:
            t.add_column("box Acc@0.5", justify="right")
        t.add_column("n", justify="right")
        rows = [("all", report["overall"])] + list(report["per_category"].items())
        for name, row in rows:
            if row is None:
                continue
            s = row[protocol]
            cells = [f"{100 * s['precision'][f'{x:.1f}']:.2f}" for x in THRESHOLDS]
            cells += [f"{100 * s['miou']:.2f}", f"{100 * s['oiou']:.2f}"]
            if not oracle:
                cells.append(f"{100 * row['box']['acc@0.5']:.2f}")
            t.add_row(f"[bold]{name}[/bold]" if name == "all" else name, *cells, str(row["n"]))
        console.print(t)
    if report["errors"]:
        console.print(f"[yellow]{len(report['errors'])} item(s) failed (counted as IoU 0):[/yellow]")
        for e in report["errors"][:20]:
            console.print(f"  {e}", highlight=False, markup=False)


def eval_command(
    data: Path = typer.Option(..., "--data", help="RRSIS-layout dataset."),
    split: str = typer.Option("test", "--split"),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of the image files when they are not at <data>/images/<name>/JPEGImages."),
    grounding: Optional[str] = typer.Option(None, "--grounding", "-g", metavar="MODEL", help="Stage-1 model: a local folder (Grounding DINO, OWLv2, `pslg train grounding` output) or a hub id."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", envvar="PSLG_SAM_CHECKPOINT", help="SAM checkpoint; without it the weights-free classical segmenter runs."),
    model_type: str = typer.Option("vit_b", "--model-type", envvar="PSLG_SAM_MODEL_TYPE"),
    cfpg: Optional[bool] = typer.Option(None, "--cfpg/--no-cfpg", help="CFPG foreground point (default: the measured default for the segmenter; --no-cfpg for the ablation)."),
    mbo: Optional[bool] = typer.Option(None, "--mbo/--no-mbo", help="MBO boundary refinement (default: the measured default for the segmenter; --no-mbo for the ablation)."),
    oracle_box: bool = typer.Option(False, "--oracle-box", help="Use the ground-truth box instead of stage 1: separates stage-1 from stage-2 errors."),
    device: str = typer.Option("auto", "--device"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="JSON report path (default eval-<split>.json)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N refs (quick checks)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Score text → box → mask on an RRSIS split: Pr@0.5…0.9, mIoU, oIoU (native and 480×480), box Acc@0.5, per category."""
    if not grounding and not oracle_box:
        raise _fail("give --grounding MODEL (text → box) or --oracle-box (ground-truth boxes)")
    records = _read_split(data, split, images)
    if limit:
        records = records[:limit]
    if not records:
        raise _fail(f"{data} has no refs in split {split!r}")

    from annotate.device import DeviceError
    from annotate.pipeline import Pipeline
    from annotate.segmenters import build_segmenter

    try:
        segmenter = build_segmenter(checkpoint, model_type=model_type, device=device)
    except (DeviceError, ValueError, FileNotFoundError, OSError) as exc:
        raise _fail(str(exc)) from None
    grounder = None
    if grounding and not oracle_box:
        from annotate.grounding import load_grounder

        try:
            grounder = load_grounder(grounding, device=device)
        except Exception as exc:  # any failure to load a model is reported, not traced
            raise _fail(f"cannot load grounding model {grounding}: {exc}") from None
    pipeline = Pipeline(segmenter, grounder=grounder, use_cfpg=cfpg, use_mbo=mbo)
    report = evaluate_dataset(records, pipeline, oracle_box=oracle_box, progress=progress)
    report["settings"] = {
        "data": str(Path(data).resolve()), "split": split, "grounding": grounding if not oracle_box else None,
        "oracle_box": oracle_box, "checkpoint": str(checkpoint) if checkpoint else None, "model_type": model_type,
        "cfpg": pipeline.use_cfpg, "mbo": pipeline.use_mbo, "model_version": pipeline.model_version,
        "refs": len(records),
    }
    _print_report(report)
    path = output or Path(f"eval-{split}.json")
    atomic_write_text(path, json.dumps(report, indent=2))
    typer.echo(f"wrote {path}")
    if report["errors"]:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``pslg train grounding`` and ``pslg eval`` to ``app``."""
    panel = "Grounding (stage 1) and evaluation"
    app.add_typer(train_app, name="train", rich_help_panel=panel)
    app.command("eval", rich_help_panel=panel)(eval_command)
