"""Write the iSAID devkit images' human instance masks as COCO instances (RLE), for bench/active_loop.py.

iSAID's devkit ships instance-id PNGs, not COCO; the active-loop bench reads COCO. ``file_name`` is relative to
the devkit folder, so pass that folder as ``--image-root``:

    python bench/isaid_to_coco.py --data DATA_DIR --out isaid_instances.json
    python bench/active_loop.py --coco isaid_instances.json --image-root DATA_DIR/isaid_devkit ...

The images are the stage-2 bench's (P0005, P0003) plus its held-out P0004: 306 instances, 3 classes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence


from annotate.atomic import atomic_write_text
from annotate.masks import coco_rle_encode
from stage2_isaid import BENCH_IMAGES, DEV_IMAGES, load_isaid


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the folder holding isaid_devkit/")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    images = BENCH_IMAGES + DEV_IMAGES
    loaded = load_isaid(args.data, images)
    cats = sorted({i.category for b in loaded for i in b.instances})
    out: dict = {"images": [], "annotations": [], "categories": [{"id": k + 1, "name": c} for k, c in enumerate(cats)]}
    for n, (rel, b) in enumerate(zip(images, loaded), 1):
        h, w = b.rgb.shape[:2]
        out["images"].append({"id": n, "file_name": f"{rel}.png", "width": w, "height": h})
        for inst in b.instances:
            out["annotations"].append({"id": len(out["annotations"]) + 1, "image_id": n, "iscrowd": 0,
                                       "category_id": cats.index(inst.category) + 1,
                                       "segmentation": coco_rle_encode(inst.mask)})
    atomic_write_text(args.out, json.dumps(out))
    print(f"{len(out['annotations'])} instances on {len(images)} images, classes {cats} → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
