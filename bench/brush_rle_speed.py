"""Brush RLE encode/decode speed: ``annotate.masks`` vs ``label_studio_sdk.converter.brush`` (same run).

Usage: ``python bench/brush_rle_speed.py [--repeat 3]``. Prints, per case, the best-of-N time of each
implementation and the speed ratio (sdk time / ours), after checking the bytes are identical. Cases: the 190
real iSAID brush masks of ``../shared/data/derived/label_studio_brush_export_isaid.json`` (skipped when absent),
synthetic blob masks at 1024² and 4096², and a 256² noise mask (many short runs: the sdk's worst case).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from label_studio_sdk.converter.brush import decode_rle, mask2rle

from converters.labelstudio.brush import brush_rle_decode, brush_rle_encode

SHARED = Path(os.environ.get("PSLG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def blobs(size: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((size, size), np.uint8)
    for _ in range(n):
        c = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        axes = (int(rng.integers(5, size // 8)), int(rng.integers(5, size // 8)))
        cv2.ellipse(m, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m.astype(bool)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    cases: list[tuple[str, list[np.ndarray]]] = []
    export = SHARED / "derived" / "label_studio_brush_export_isaid.json"
    if export.is_file():
        masks = []
        for task in json.loads(export.read_text()):
            for ann in task["annotations"]:
                for r in ann["result"]:
                    if r.get("type") == "brushlabels":
                        masks.append(brush_rle_decode(r["value"]["rle"], r["original_height"], r["original_width"]))
        cases.append((f"iSAID export ({len(masks)} masks, ~900x1000)", masks))
    else:
        print(f"(skipping the real export: {export} is absent)")
    cases.append(("blobs 1024x1024 (x5)", [blobs(1024, 12, s) for s in range(5)]))
    cases.append(("blobs 4096x4096 (x1)", [blobs(4096, 40, 0)]))
    cases.append(("noise 256x256 (x1)", [np.random.default_rng(0).random((256, 256)) > 0.5]))

    print(f"{'case':45s} {'op':6s} {'sdk s':>9s} {'ours s':>9s} {'ratio':>8s}")
    for name, masks in cases:
        rles = [mask2rle(m.astype(np.uint8) * 255) for m in masks]
        for m, r in zip(masks, rles):
            assert brush_rle_encode(m) == r, f"bytes differ on {name}"
        t_sdk = best_of(lambda: [mask2rle(m.astype(np.uint8) * 255) for m in masks], args.repeat)
        t_ours = best_of(lambda: [brush_rle_encode(m) for m in masks], args.repeat)
        print(f"{name:45s} {'encode':6s} {t_sdk:9.4f} {t_ours:9.4f} {t_sdk / t_ours:7.1f}x")
        t_sdk = best_of(
            lambda: [decode_rle(r).reshape(m.shape[0], m.shape[1], 4)[:, :, 3] > 0 for m, r in zip(masks, rles)],
            args.repeat,
        )
        t_ours = best_of(lambda: [brush_rle_decode(r, *m.shape) for m, r in zip(masks, rles)], args.repeat)
        print(f"{name:45s} {'decode':6s} {t_sdk:9.4f} {t_ours:9.4f} {t_sdk / t_ours:7.1f}x")


if __name__ == "__main__":
    main()
