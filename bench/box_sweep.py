"""Cost per box of the weights-free stage 2 as boxes grow, bounded resolution vs full resolution, in one run.

Two parts, both on real images:

1. **Time sweep**: square boxes of growing side (32 px … the whole image) centred on an iSAID image, at its
   native size (P0003, 1147×1023, 1.2 MP) and upscaled to 4 MP; CPU seconds per box (segmenter + MBO, one
   OpenCV thread) for the default bounded path and for the full-resolution path (``max_roi_side=0`` and MBO
   ``max_side=0``, the behaviour before bounding). The full-resolution path is skipped for boxes whose longer
   side exceeds ``--old-max-side`` (it takes minutes there).
2. **Quality on large objects**: NWPU VHR-10 dev instances whose box has a side ≥ ``--large`` px (ground track
   fields, harbors, bridges, ships), boxes jittered ±10 % (seed 0), mIoU of both paths on the same boxes, plus
   their CPU time per box.

    python bench/box_sweep.py [--data DIR] [--old-max-side 700] [--large 150]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np


from annotate.geometry import mask_iou
from annotate.factory import build_pipeline
from annotate.pipeline import Pipeline
from annotate.segmenters.classical import ClassicalSegmenter
from annotate.types import Box, Prompt

REPO_ROOT = Path(__file__).resolve().parents[1]

SIDES = (32, 64, 128, 256, 512, 1024, 1536, 0)  # 0 = the whole image


def bounded() -> Pipeline:
    """Today's default: ROI and MBO crop processed at a bounded resolution."""
    return build_pipeline(segmenter=ClassicalSegmenter())


def full_resolution() -> Pipeline:
    """The path before bounding, kept callable: every ROI and MBO crop at full resolution."""
    return build_pipeline(segmenter=ClassicalSegmenter(max_roi_side=0), mbo_params={"max_side": 0})


def cpu_seconds(pipe: Pipeline, rgb: np.ndarray, box: Box) -> tuple[float, np.ndarray]:
    c0 = time.process_time()
    res = pipe.run(rgb, [Prompt(box=box)])[0]
    if not res.ok:
        raise SystemExit(f"box {box} failed: {res.error}")
    return time.process_time() - c0, res.mask


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path} (pass --data pointing at the shared data folder)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def time_sweep(rgb: np.ndarray, label: str, old_max_side: int) -> list[tuple]:
    h, w = rgb.shape[:2]
    rows = []
    for side in SIDES:
        if side and side > min(h, w):
            continue
        if side == 0:
            box = (0.0, 0.0, float(w), float(h))
        else:
            cx, cy = w / 2, h / 2
            box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        new_s, new_m = cpu_seconds(bounded(), rgb, box)
        long_side = max(box[2] - box[0], box[3] - box[1])
        if long_side <= old_max_side:
            old_s, old_m = cpu_seconds(full_resolution(), rgb, box)
            agree = mask_iou(new_m, old_m)
        else:
            old_s, agree = float("nan"), float("nan")
        rows.append((label, "whole image" if side == 0 else f"{side}×{side}", new_s, old_s, agree))
        print(f"  {label} {rows[-1][1]}: bounded {new_s:.3f} s, full {old_s:.3f} s", flush=True)
    return rows


def large_objects(data: Path, min_side: int, seed: int = 0) -> list[tuple[str, np.ndarray, list[tuple[np.ndarray, Box, str]]]]:
    from pycocotools import mask as mask_utils

    import json

    root = data / "nwpu_vhr10_dev"
    coco = json.loads((root / "instances_dev.json").read_text())
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    out = []
    for img in coco["images"]:
        items = []
        for ann in by_image.get(img["id"], []):
            m = mask_utils.decode(ann["segmentation"]).astype(bool)
            ys, xs = np.nonzero(m)
            x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
            j = rng.uniform(-0.1, 0.1, size=4)  # drawn for every instance so boxes match bench/noc.py's order
            if max(x1 - x0, y1 - y0) < min_side:
                continue
            bw, bh = x1 - x0, y1 - y0
            items.append((m, (x0 + j[0] * bw, y0 + j[1] * bh, x1 + j[2] * bw, y1 + j[3] * bh), cats[ann["category_id"]]))
        if items:
            out.append((img["file_name"], _read_rgb(root / img["file_name"]), items))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data", help="shared data folder")
    ap.add_argument("--old-max-side", type=int, default=700, help="skip the full-resolution path above this box side")
    ap.add_argument("--large", type=int, default=150, help="quality part: objects whose box has a side ≥ this")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    native = _read_rgb(args.data / "isaid_devkit" / "val" / "images" / "P0003.png")
    f = np.sqrt(4.0e6 / (native.shape[0] * native.shape[1]))
    four_mp = cv2.resize(native, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
    rows = time_sweep(native, f"P0003 {native.shape[1]}×{native.shape[0]}", args.old_max_side)
    rows += time_sweep(four_mp, f"P0003×{f:.2f} {four_mp.shape[1]}×{four_mp.shape[0]}", args.old_max_side)
    table = Table(title="CPU s per box (segmenter + MBO, 1 OpenCV thread): bounded (default) vs full resolution")
    for col in ("image", "box", "bounded s", "full-res s", "speed-up", "mask IoU bounded vs full"):
        table.add_column(col, justify="left" if col in ("image", "box") else "right")
    for label, box, new_s, old_s, agree in rows:
        table.add_row(label, box, f"{new_s:.3f}", "—" if np.isnan(old_s) else f"{old_s:.3f}",
                      "—" if np.isnan(old_s) else f"{old_s / max(new_s, 1e-6):.1f}×", "—" if np.isnan(agree) else f"{agree:.3f}")
    console.print(table)

    per_class: dict[str, list[tuple[float, float, float, float]]] = {}
    for name, rgb, items in large_objects(args.data, args.large):
        for gt, box, cat in items:
            new_s, new_m = cpu_seconds(bounded(), rgb, box)
            old_s, old_m = cpu_seconds(full_resolution(), rgb, box)
            per_class.setdefault(cat, []).append((mask_iou(new_m, gt), mask_iou(old_m, gt), new_s, old_s))
    table = Table(title=f"large objects of nwpu_vhr10_dev (box side ≥ {args.large} px, ±10 % jitter): bounded vs full resolution")
    for col in ("class", "n", "mIoU bounded", "mIoU full-res", "CPU s bounded (mean / max)", "CPU s full-res (mean / max)"):
        table.add_column(col, justify="left" if col == "class" else "right")
    every = [v for vals in per_class.values() for v in vals]
    for cat, vals in sorted(per_class.items()) + [("all", every)]:
        a = np.array(vals)
        table.add_row(cat, str(len(a)), f"{a[:, 0].mean():.3f}", f"{a[:, 1].mean():.3f}",
                      f"{a[:, 2].mean():.3f} / {a[:, 2].max():.3f}", f"{a[:, 3].mean():.3f} / {a[:, 3].max():.3f}")
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
