"""Learned shape priors on held-out images: fit on every other image of a COCO set, measure on the rest.

Per category and overall mIoU of the weights-free stage 2 without and with the priors, on the same jittered
boxes (±10 %, seed 0, as ``bench/active_loop.py``), plus wall ms per instance of each (same process).

    python bench/priors_holdout.py --coco INSTANCES.json --image-root DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np


from annotate.priors import PriorSample, ShapePriors
from annotate.quality import QualityModel
from active_loop import load_coco, prelabel


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coco", type=Path, required=True)
    ap.add_argument("--image-root", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    pixels, instances = load_coco(args.coco, args.image_root, args.seed)
    images = sorted({i.image for i in instances})
    fit_images = set(images[::2])
    train = [i for i in instances if i.image in fit_images]
    test = [i for i in instances if i.image not in fit_images]
    priors = ShapePriors.fit(PriorSample(i.mask, i.box, i.category) for i in train)
    print(f"fitted on {len(train)} instances ({len(fit_images)} images), measured on {len(test)} "
          f"({len(images) - len(fit_images)} images)")
    rows = {}
    for name, p in (("today", None), ("learned priors", priors)):
        t = time.perf_counter()
        out = prelabel(pixels, test, p, QualityModel())
        ms = (time.perf_counter() - t) * 1000 / max(1, len(test))
        by: dict[str, list[float]] = {}
        for i in test:
            by.setdefault(i.category, []).append(out[i.index].iou)
        rows[name] = {"miou": round(float(np.mean([out[i.index].iou for i in test])), 4), "ms_per_instance": round(ms, 1),
                      "per_category": {k: round(float(np.mean(v)), 3) for k, v in sorted(by.items())}}
        print(name, json.dumps(rows[name]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
