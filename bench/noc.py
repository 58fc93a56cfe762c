"""Click corrections measured the standard way: NoC@85/90 with the usual click simulator, on COCO instances.

Protocol (fixed, so runs compare): for each instance (annotation order), its ground-truth box (from the mask)
is jittered by ±10 % of its width/height per side with ``numpy.random.default_rng(seed)`` — round 0 is that
box alone. Each next click goes to the pixel farthest inside (distance-transform maximum, image border counted
as boundary) the larger of the two error regions: positive on a missed region, negative on a leak. The prompt
of round k is the box plus all k clicks (what Label Studio sends), answered by the default ``Pipeline`` of the
segmenter in use, one segmenter per image (its per-image caches work as in the backend). Clicking stops after
``--max-clicks`` or once IoU 0.90 was reached and 5 clicks were made (``iou_after`` needs 5).

Figures, overall and per class:
``n``; ``noc85`` / ``noc90``: mean number of clicks (after the box) to reach IoU 0.85 / 0.90, ``max-clicks``
when never; ``nof90``: instances that never reach 0.90; ``ignored_share``: share of clicks whose pixel keeps
the wrong label; ``drop_share``: share of clicks after which IoU is lower than before; ``iou_after``: mean IoU
after 0 (box only), 1, 3 and 5 clicks (an instance already perfect keeps its IoU); ``ms_per_click_p95``: 95th
percentile of the wall time of one click's request (box + all clicks), in this process
(``cpu_ms_per_click_p95``: the same in this process's CPU time, which a busy machine does not inflate).

    python bench/noc.py --coco INSTANCES.json --image-root DIR [--max-clicks 20] [--seed 0] [--json OUT.json]
    python bench/noc.py --isaid ISAID_DEVKIT_DIR [...]     # instance-id PNGs of iSAID read as instances
    python bench/noc.py ... --checkpoint sam_vit_h.pth      # SAM; --model-type auto (default) reads its architecture
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np


from annotate.geometry import mask_iou
from annotate.factory import build_pipeline
from annotate.pipeline import Pipeline
from annotate.segmenters.base import Segmenter
from annotate.types import Box, Prompt

THRESHOLDS = (0.85, 0.90)
IOU_AFTER = (0, 1, 3, 5)
JITTER = 0.10


@dataclass
class Instance:
    mask: np.ndarray
    category: str


@dataclass
class Trace:
    """One instance's session: IoU after each round, and per click whether it was ignored / lowered IoU."""

    category: str
    ious: list[float] = field(default_factory=list)
    ignored: list[bool] = field(default_factory=list)
    dropped: list[bool] = field(default_factory=list)
    click_ms: list[float] = field(default_factory=list)
    click_cpu_ms: list[float] = field(default_factory=list)


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def coco_images(coco_path: Path, image_root: Path) -> Iterator[tuple[str, np.ndarray, list[Instance]]]:
    """(name, RGB, instances) per image of a COCO instances file (RLE or polygon masks, via pycocotools)."""
    from pycocotools import mask as mask_utils

    data = json.loads(coco_path.read_text())
    cats = {c["id"]: c["name"] for c in data.get("categories", [])}
    anns_by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in data.get("annotations", []):
        if not ann.get("iscrowd", 0):
            anns_by_image[ann["image_id"]].append(ann)
    for img in data.get("images", []):
        anns = anns_by_image.get(img["id"], [])
        if not anns:
            continue
        rgb = _read_rgb(image_root / img["file_name"])
        h, w = rgb.shape[:2]
        instances = []
        for ann in anns:
            seg = ann["segmentation"]
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg.get("counts"), list):
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = seg
            m = mask_utils.decode(rle).astype(bool)
            if m.any():
                instances.append(Instance(mask=m, category=cats.get(ann["category_id"], str(ann["category_id"]))))
        yield img["file_name"], rgb, instances


def isaid_images(root: Path, only: Sequence[str] = ()) -> Iterator[tuple[str, np.ndarray, list[Instance]]]:
    """iSAID images with their ``*_instance_id_RGB.png`` / ``*_instance_color_RGB.png`` masks, as instances.

    ``only``: image paths relative to ``root`` without extension (e.g. ``val/images/P0003``); default all.
    """
    from stage2_isaid import isaid_instances

    id_pngs = sorted(root.rglob("*_instance_id_RGB.png"))
    if only:
        id_pngs = [p for p in id_pngs if str(p.relative_to(root))[: -len("_instance_id_RGB.png")] in set(only)]
    if not id_pngs:
        raise SystemExit(f"no iSAID *_instance_id_RGB.png files under {root}")
    for id_png in id_pngs:
        rel = str(id_png.relative_to(root))[: -len("_instance_id_RGB.png")]
        rgb, found = isaid_instances(root, rel)
        yield rel, rgb, [Instance(mask=m, category=cat) for m, cat in found]


def jittered_box(mask: np.ndarray, rng: np.random.Generator, jitter: float = JITTER) -> Box:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
    w, h = x1 - x0, y1 - y0
    j = rng.uniform(-jitter, jitter, size=4)
    return (x0 + j[0] * w, y0 + j[1] * h, x1 + j[2] * w, y1 + j[3] * h)


def next_click(pred: np.ndarray, gt: np.ndarray) -> Optional[tuple[tuple[float, float], int]]:
    """The simulator's click: the innermost pixel of the larger error region (positive = missed, negative = leak)."""
    fn, fp = gt & ~pred, pred & ~gt
    n_fn, n_fp = int(np.count_nonzero(fn)), int(np.count_nonzero(fp))
    if n_fn == 0 and n_fp == 0:
        return None
    err, label = (fn, 1) if n_fn >= n_fp else (fp, 0)
    ys, xs = np.nonzero(err)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    sub = np.pad(err[y0:y1, x0:x1], 1).astype(np.uint8)  # the image border counts as boundary
    dt = cv2.distanceTransform(sub, cv2.DIST_L2, 5)[1:-1, 1:-1]
    iy, ix = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return (float(x0 + ix) + 0.5, float(y0 + iy) + 0.5), label


def run_instance(pipe: Pipeline, rgb: np.ndarray, inst: Instance, box: Box, image_key: str, max_clicks: int) -> Trace:
    trace = Trace(category=inst.category)
    points: list[tuple[float, float]] = []
    labels: list[int] = []
    res = pipe.run(rgb, [Prompt(box=box)], image_key=image_key)[0]
    if not res.ok:
        raise SystemExit(f"{image_key}: the box prompt failed: {res.error}")
    pred = res.mask
    trace.ious.append(mask_iou(pred, inst.mask))
    for k in range(1, max_clicks + 1):
        if max(trace.ious) >= THRESHOLDS[-1] and k > max(IOU_AFTER):
            break
        click = next_click(pred, inst.mask)
        if click is None:
            break
        (x, y), label = click
        points.append((x, y))
        labels.append(label)
        t0, c0 = time.perf_counter(), time.process_time()
        res = pipe.run(rgb, [Prompt(box=box, points=list(points), point_labels=list(labels))], image_key=image_key)[0]
        trace.click_ms.append((time.perf_counter() - t0) * 1000.0)
        trace.click_cpu_ms.append((time.process_time() - c0) * 1000.0)
        if not res.ok:
            raise SystemExit(f"{image_key}: click {k} failed: {res.error}")
        pred = res.mask
        iou = mask_iou(pred, inst.mask)
        trace.ignored.append(bool(pred[int(y), int(x)]) != bool(label))
        trace.dropped.append(iou < trace.ious[-1] - 1e-9)
        trace.ious.append(iou)
    return trace


def summarise(traces: Sequence[Trace], max_clicks: int) -> dict:
    def noc(tr: Trace, thr: float) -> int:
        return next((k for k, v in enumerate(tr.ious) if v >= thr), max_clicks)

    def iou_after(tr: Trace, k: int) -> float:
        return tr.ious[min(k, len(tr.ious) - 1)]

    clicks = [flag for tr in traces for flag in tr.ignored]
    drops = [flag for tr in traces for flag in tr.dropped]
    ms = [v for tr in traces for v in tr.click_ms]
    cpu = [v for tr in traces for v in tr.click_cpu_ms]
    return {
        "n": len(traces),
        "noc85": round(float(np.mean([noc(t, 0.85) for t in traces])), 2),
        "noc90": round(float(np.mean([noc(t, 0.90) for t in traces])), 2),
        "nof90": int(sum(noc(t, 0.90) >= max_clicks and max(t.ious) < 0.90 for t in traces)),
        "ignored_share": round(float(np.mean(clicks)), 4) if clicks else 0.0,
        "drop_share": round(float(np.mean(drops)), 4) if drops else 0.0,
        "iou_after": {str(k): round(float(np.mean([iou_after(t, k) for t in traces])), 3) for k in IOU_AFTER},
        "ms_per_click_p95": round(float(np.percentile(ms, 95)), 1) if ms else 0.0,
        "cpu_ms_per_click_p95": round(float(np.percentile(cpu, 95)), 1) if cpu else 0.0,
        "clicks": len(clicks),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--coco", type=Path, help="COCO instances JSON (RLE or polygon masks)")
    src.add_argument("--isaid", type=Path, help="a folder holding iSAID images with *_instance_id_RGB.png masks")
    ap.add_argument("--image-root", type=Path, help="folder the COCO file_name entries are relative to")
    ap.add_argument("--isaid-images", nargs="*", default=["train/images/P0005", "val/images/P0003"],
                    help="with --isaid: the images to use, relative to DIR (default: the iSAID pair of "
                         "bench/stage2_isaid.py; pass nothing to use every image under DIR)")
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--limit", type=int, default=0, help="only the first N instances (quick look)")
    ap.add_argument("--checkpoint", default=None, help="a SAM checkpoint (default: the weights-free segmenter)")
    ap.add_argument("--model-type", default="auto",
                    help="SAM architecture of --checkpoint: auto (default: the checkpoint's own), vit_b, vit_l or vit_h")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    ap.add_argument("--point-only", action="store_true",
                    help="instead: one positive click at each object's innermost pixel and no box; mean IoU per class")
    args = ap.parse_args(argv)
    if args.coco is not None and args.image_root is None:
        ap.error("--coco needs --image-root")

    from annotate.factory import build_segmenter

    cv2.setNumThreads(max(1, args.threads))
    images = coco_images(args.coco, args.image_root) if args.coco is not None else isaid_images(args.isaid, args.isaid_images)
    if args.point_only:
        return point_only(images, args)
    rng = np.random.default_rng(args.seed)
    segmenter: Optional[Segmenter] = None
    traces: list[Trace] = []
    for name, rgb, instances in images:
        if args.limit and len(traces) >= args.limit:
            break
        if segmenter is None or args.checkpoint is None:
            # SAM loads once; classical per image
            segmenter = build_segmenter(args.checkpoint, model_type=args.model_type, device=args.device)
        pipe = build_pipeline(segmenter=segmenter)
        for inst in instances:
            if args.limit and len(traces) >= args.limit:
                break
            box = jittered_box(inst.mask, rng)
            traces.append(run_instance(pipe, rgb, inst, box, name, args.max_clicks))
    if not traces:
        raise SystemExit("no instances found")
    by_class: dict[str, list[Trace]] = defaultdict(list)
    for tr in traces:
        by_class[tr.category].append(tr)
    report = {
        "segmenter": segmenter.name if segmenter is not None else "",
        "pipeline": build_pipeline(segmenter=segmenter).model_version if segmenter is not None else "",
        "max_clicks": args.max_clicks,
        "seed": args.seed,
        "overall": summarise(traces, args.max_clicks),
        "per_class": {c: summarise(ts, args.max_clicks) for c, ts in sorted(by_class.items())},
    }
    _print(report)
    if args.json is not None:
        from annotate.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0


def point_only(images: Iterator[tuple[str, np.ndarray, list[Instance]]], args: argparse.Namespace) -> int:
    """One positive click, no box: the click lands on each object's innermost pixel (distance-transform max)."""
    from rich.console import Console
    from rich.table import Table


    ious: dict[str, list[float]] = defaultdict(list)
    n = 0
    for name, rgb, instances in images:
        pipe = build_pipeline(args.checkpoint, model_type=args.model_type, device=args.device)
        for inst in instances:
            if args.limit and n >= args.limit:
                break
            click = next_click(np.zeros_like(inst.mask), inst.mask)
            assert click is not None
            res = pipe.run(rgb, [Prompt(points=[click[0]], point_labels=[1])], image_key=name)[0]
            if not res.ok:
                raise SystemExit(f"{name}: the point prompt failed: {res.error}")
            ious[inst.category].append(mask_iou(res.mask, inst.mask))
            n += 1
    table = Table(title="one positive click, no box: mean IoU")
    for col in ("class", "n", "mIoU"):
        table.add_column(col)
    every = [v for vals in ious.values() for v in vals]
    for cat, vals in sorted(ious.items()) + [("overall", every)]:
        table.add_row(cat, str(len(vals)), f"{np.mean(vals):.3f}")
    Console(width=100).print(table)
    return 0


def _print(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"NoC — {report['pipeline']}, max {report['max_clicks']} clicks, seed {report['seed']}")
    for col in ("class", "n", "NoC@85", "NoC@90", "NoF@90", "ignored", "IoU↓", "IoU@0", "@1", "@3", "@5", "p95 ms/click",
                "p95 CPU ms"):
        table.add_column(col, justify="left" if col == "class" else "right")
    rows = [("overall", report["overall"])] + list(report["per_class"].items())
    for name, s in rows:
        a = s["iou_after"]
        table.add_row(
            name, str(s["n"]), f"{s['noc85']:.2f}", f"{s['noc90']:.2f}", str(s["nof90"]),
            f"{s['ignored_share']:.1%}", f"{s['drop_share']:.1%}", f"{a['0']:.3f}", f"{a['1']:.3f}", f"{a['3']:.3f}",
            f"{a['5']:.3f}", f"{s['ms_per_click_p95']:.0f}", f"{s['cpu_ms_per_click_p95']:.0f}",
        )
    Console(width=150).print(table)


if __name__ == "__main__":
    raise SystemExit(main())
