"""MBO — PSLG-SAM's mask boundary iterative optimisation (GrabCut-like refinement of a segmenter's mask).

A segmenter's mask is usually right in its interior and wrong by a few pixels along its boundary. MBO keeps the
interior (the mask eroded = sure foreground) and the far exterior (the mask dilated, inverted = sure
background), fits colour GMMs to both, relabels the uncertain band by graph cut (OpenCV GrabCut with
``GC_INIT_WITH_MASK``: GMM data term + contrast-sensitive smoothness), re-fits and repeats until the labels stop
changing (``tol``) or ``max_iter`` is reached. A collapse guard returns the input when the refined mask strays
far from it (a graph cut on a weak colour contrast can swallow a whole car park or vanish).
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from annotate.types import Box


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / u if u else 0.0


def refine_mask(
    image: np.ndarray,
    mask: np.ndarray,
    box: Optional[Box] = None,
    *,
    band: float = 0.15,
    outer_band: float = 0.4,
    min_band: int = 1,
    max_iter: int = 5,
    tol: float = 0.005,
    min_ratio: float = 0.6,
    max_ratio: float = 1.5,
    min_iou: float = 0.6,
    box_grow: float = 0.15,
) -> np.ndarray:
    """Refine ``mask`` (bool H×W) on ``image`` (H×W×3 RGB); return the refined mask or, if it collapsed, ``mask``.

    ``band`` / ``outer_band``: depth of the uncertain band inside / outside the boundary, as shares of the mask's
    equivalent radius (at least ``min_band`` pixels): pixels deeper inside are sure foreground, further outside
    sure background. The outer band is wider because segmenters more often miss a rim than add one.
    ``tol``: stop when fewer than this share of the mask's area changed label in an iteration.
    ``min_ratio``/``max_ratio``/``min_iou``: the collapse guard (area ratio and IoU against the input).
    ``box``: when given, pixels outside the box grown by ``box_grow`` are sure background.
    """
    mask = np.asarray(mask, dtype=bool)
    area = int(np.count_nonzero(mask))
    if area < 4 or image.shape[:2] != mask.shape:
        return mask
    h, w = mask.shape
    radius = np.sqrt(area / np.pi)
    r = max(min_band, int(round(band * radius)))
    ro = max(min_band + 1, int(round(outer_band * radius)))
    ys, xs = np.nonzero(mask)
    m = 2 * ro + 4
    rx0, ry0 = max(0, int(xs.min()) - m), max(0, int(ys.min()) - m)
    rx1, ry1 = min(w, int(xs.max()) + 1 + m), min(h, int(ys.max()) + 1 + m)
    crop = np.ascontiguousarray(image[ry0:ry1, rx0:rx1, :3])
    sub = mask[ry0:ry1, rx0:rx1].astype(np.uint8)
    inner = cv2.erode(sub, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))).astype(bool)
    outer = cv2.dilate(sub, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ro + 1, 2 * ro + 1))).astype(bool)
    if not inner.any():
        return mask  # too thin to have a sure interior: nothing reliable to learn from
    gc = np.full(sub.shape, cv2.GC_BGD, np.uint8)
    gc[outer] = cv2.GC_PR_BGD
    gc[sub.astype(bool)] = cv2.GC_PR_FGD
    gc[inner] = cv2.GC_FGD
    if box is not None:
        bw, bh = box[2] - box[0], box[3] - box[1]
        bx0 = int(np.floor(box[0] - box_grow * bw)) - rx0
        by0 = int(np.floor(box[1] - box_grow * bh)) - ry0
        bx1 = int(np.ceil(box[2] + box_grow * bw)) - rx0
        by1 = int(np.ceil(box[3] + box_grow * bh)) - ry0
        keep = np.zeros(sub.shape, bool)
        keep[max(0, by0) : max(0, by1), max(0, bx0) : max(0, bx1)] = True
        gc[~keep & (gc != cv2.GC_FGD)] = cv2.GC_BGD
    if not np.any(gc == cv2.GC_BGD):
        return mask
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    prev = sub.astype(bool)
    cur = prev
    try:
        for it in range(max(1, max_iter)):
            cv2.grabCut(crop, gc, None, bgd, fgd, 1, cv2.GC_INIT_WITH_MASK if it == 0 else cv2.GC_EVAL)
            cur = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
            changed = int(np.count_nonzero(cur != prev))
            prev = cur
            if changed <= tol * area:
                break
    except cv2.error:
        return mask
    # keep only the parts connected to the sure interior (graph cut can pick up look-alike specks)
    n, lab = cv2.connectedComponents(cur.astype(np.uint8), connectivity=8)
    if n > 2:
        cur = np.isin(lab, np.unique(lab[inner & cur])[1:] if np.any(inner & cur) else [])
    out = np.zeros_like(mask)
    out[ry0:ry1, rx0:rx1] = cur
    new_area = int(np.count_nonzero(out))
    if not (min_ratio * area <= new_area <= max_ratio * area) or _iou(out, mask) < min_iou:
        return mask
    return out
