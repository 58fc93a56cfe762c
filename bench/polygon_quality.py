"""How much does turning masks into Label Studio polygons cost? IoU and vertex counts per tolerance.

Label Studio polygons are single rings without holes (``annotate.polygons.mask_outlines``: one ring per piece,
large holes bridged, small holes filled, specks dropped, Douglas–Peucker at a tolerance). For every tolerance
and for the hole policy (bridged vs all filled) this prints, over real masks, the IoU of the re-rasterised
polygons against the mask they came from (mean, 5th percentile, minimum), vertices per object (mean, 95th
percentile, max) and ms per object; plus the baseline of COCO-style polygons through pixel centres
(``annotate.masks.mask_to_polygons``, unioned) at tolerance 0.

Masks (fixed):
* ``isaid-gt``: the 190 human instance masks of iSAID train/P0005 + val/P0003 (mostly vehicles, small);
* ``isaid-pred``: the weights-free pipeline's masks for the same instances from boxes jittered ±10 % (seed 0,
  as bench/stage2_isaid.py): what the backend actually turns into polygons (speckle, holes);
* ``nwpu-gt``: the 335 human masks of the NWPU VHR-10 dev set (airplanes, courts, track fields, harbours).

    python bench/polygon_quality.py [--data DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np


from annotate.geometry import mask_iou
from annotate.masks import coco_rle_decode, mask_to_polygons, polygons_to_mask
from annotate.polygons import mask_outlines, outlines_to_mask
from stage2_isaid import BENCH_IMAGES, load_isaid

REPO_ROOT = Path(__file__).resolve().parents[1]

TOLERANCES: tuple[str, ...] = ("0", "0.5", "1.0", "1.5", "2.0", "0.5%", "1%")
NO_HOLES = 10**12  # min_hole_area that fills every hole


def _crop(mask: np.ndarray, pad: int = 2) -> np.ndarray:
    """The mask cropped to its box plus ``pad`` (polygons are translation-invariant; smaller arrays are faster)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, mask.shape[0])
    x0, x1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, mask.shape[1])
    return mask[y0:y1, x0:x1]


def isaid_masks(data: Path, predicted: bool) -> list[np.ndarray]:
    images = load_isaid(data, BENCH_IMAGES)
    if not predicted:
        return [inst.mask for img in images for inst in img.instances]
    from annotate.factory import build_pipeline
    from annotate.types import Prompt

    pipeline = build_pipeline()
    out = []
    for img in images:
        results = pipeline.run(img.rgb, [Prompt(box=inst.box) for inst in img.instances])
        out += [r.mask for r in results if r.ok and r.mask is not None and r.mask.any()]
    return out


def nwpu_masks(data: Path) -> list[np.ndarray]:
    path = data / "nwpu_vhr10_dev" / "instances_dev.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass --data pointing at the shared data folder")
    coco = json.loads(path.read_text())
    return [coco_rle_decode(a["segmentation"]) for a in coco["annotations"]]


def measure(masks: Sequence[np.ndarray], convert: Callable[[np.ndarray], tuple[np.ndarray, int]]) -> dict:
    ious, verts, times = [], [], []
    for m in masks:
        t0 = time.perf_counter()
        back, n = convert(m)
        times.append(time.perf_counter() - t0)
        ious.append(mask_iou(back, m))
        verts.append(n)
    ious_a, verts_a = np.array(ious), np.array(verts)
    return {"miou": ious_a.mean(), "p5": np.percentile(ious_a, 5), "min": ious_a.min(), "v_mean": verts_a.mean(),
            "v_p95": np.percentile(verts_a, 95), "v_max": verts_a.max(), "ms": 1000 * float(np.mean(times))}


def outlines(tolerance: str, min_hole_area: Optional[int] = None) -> Callable[[np.ndarray], tuple[np.ndarray, int]]:
    kwargs = {} if min_hole_area is None else {"min_hole_area": min_hole_area}

    def run(m: np.ndarray) -> tuple[np.ndarray, int]:
        rings = mask_outlines(m, tolerance, **kwargs)
        return outlines_to_mask(rings, *m.shape), sum(len(r) for r in rings)
    return run


def coco_centres(m: np.ndarray) -> tuple[np.ndarray, int]:
    polys = mask_to_polygons(m)
    return polygons_to_mask(polys, *m.shape), sum(len(p) // 2 for p in polys)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=0, help="at most N masks per set (0 = all)")
    args = parser.parse_args(argv)
    sets = {"isaid-gt": isaid_masks(args.data, False), "isaid-pred": isaid_masks(args.data, True),
            "nwpu-gt": nwpu_masks(args.data)}
    print(f"{'set':<11}{'method':<28}{'n':>5}{'mIoU':>8}{'p5':>8}{'min':>8}{'verts':>8}{'v95':>7}{'vmax':>7}{'ms':>7}")
    for name, masks in sets.items():
        masks = [_crop(m) for m in masks if m.any()]
        if args.limit:
            masks = masks[:args.limit]
        rows = [("coco centres, tol 0", coco_centres)]
        rows += [(f"outlines tol {t}", outlines(t)) for t in TOLERANCES]
        rows += [(f"outlines tol {t}, holes filled", outlines(t, NO_HOLES)) for t in ("0", "1.0")]
        for label, fn in rows:
            r = measure(masks, fn)
            print(f"{name:<11}{label:<28}{len(masks):>5}{r['miou']:>8.4f}{r['p5']:>8.4f}{r['min']:>8.4f}"
                  f"{r['v_mean']:>8.1f}{r['v_p95']:>7.0f}{r['v_max']:>7d}{r['ms']:>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
