"""What exact evaluation and strict validation cost: PIL-exact 480 resizing, and reading every RLE's counts.

    .venv/bin/python bench/eval_fidelity.py [--masks 200] [--repeat 3]

What it prints, all measured in this run:
  * 480×480 protocol resizing (``annotate.metrics.resize_mask``, which calls PIL's ``Image.NEAREST``) against
    the closed-form index formula ``floor((dst + 0.5) · src / 480)`` it replaced (the baseline): time per mask,
    the ratio, and how many of the 480 row / column indices the formula picks differently from PIL;
  * ``pslg validate``'s RLE check (``converters.checks.check_rle``: counts read character by character, must
    cover height × width) against pycocotools' ``area`` alone (the baseline, which accepts malformed counts):
    time per annotation and the ratio.

Masks are random blobs (``annotate.synthetic.make_scene``) at the sides listed in ``SIDES``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from annotate.metrics import resize_mask
from annotate.synthetic import make_scene
from converters.checks import check_rle

SIDES = (512, 768, 1024, 1147)


def formula_resize(mask: np.ndarray, h: int = 480, w: int = 480) -> np.ndarray:
    """The closed-form nearest index the metrics used before matching PIL (the baseline)."""
    src_h, src_w = mask.shape
    rows = np.minimum(((np.arange(h) + 0.5) * (src_h / h)).astype(np.intp), src_h - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * (src_w / w)).astype(np.intp), src_w - 1)
    return mask[rows[:, None], cols[None, :]]


def differing_indices(side: int) -> int:
    """Row indices (of 480) where the formula and PIL pick different source rows."""
    ramp = np.tile(np.arange(side, dtype=np.int32)[:, None], (1, 2))
    pil = np.asarray(Image.fromarray(ramp).resize((2, 480), Image.NEAREST))[:, 0]
    formula = np.minimum(((np.arange(480) + 0.5) * (side / 480)).astype(np.intp), side - 1)
    return int(np.count_nonzero(pil != formula))


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", type=int, default=200, help="masks per side")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{'side':>5} {'differ/480':>10} {'formula ms':>11} {'PIL ms':>8} {'ratio':>7} "
          f"{'area ms':>8} {'check ms':>9} {'ratio':>7}")
    for side in SIDES:
        masks = []
        seed = 0
        while len(masks) < args.masks:
            scene = make_scene(seed=seed, height=side, width=side, n_objects=4)
            masks += [o.mask for o in scene.objects]
            seed += 1
        masks = masks[: args.masks]
        rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
        t_formula = best_of(args.repeat, lambda: [formula_resize(m) for m in masks]) / len(masks)
        t_pil = best_of(args.repeat, lambda: [resize_mask(m) for m in masks]) / len(masks)
        t_area = best_of(args.repeat, lambda: [mask_utils.area(r) for r in rles]) / len(rles)
        t_check = best_of(args.repeat, lambda: [(check_rle(r), mask_utils.area(r)) for r in rles]) / len(rles)
        print(f"{side:>5} {differing_indices(side):>10} {1e3 * t_formula:>11.3f} {1e3 * t_pil:>8.3f} "
              f"{t_pil / t_formula:>6.2f}x {1e3 * t_area:>8.4f} {1e3 * t_check:>9.4f} {t_check / t_area:>6.1f}x")


if __name__ == "__main__":
    main()
