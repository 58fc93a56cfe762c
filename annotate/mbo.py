"""MBO — PSLG-SAM's mask boundary iterative optimisation (GrabCut-like refinement of a segmenter's mask).

A segmenter's mask is usually right in its interior and wrong by a few pixels along its boundary. MBO keeps the
interior (the mask eroded = sure foreground) and the far exterior (the mask dilated, inverted = sure
background), fits colour GMMs to both, relabels the uncertain band by graph cut (OpenCV GrabCut with
``GC_INIT_WITH_MASK``: GMM data term + contrast-sensitive smoothness), re-fits and repeats until the labels stop
changing (``tol``) or ``max_iter`` is reached. A collapse guard returns the input when the refined mask strays
far from it (a graph cut on a weak colour contrast can swallow a whole car park or vanish).

Clicks are hard constraints here too: around each click the disc out to the input mask's nearest boundary
(the part of the mask the click vouches for) keeps its label, and a refinement that would flip a clicked
pixel is rejected. Large masks are refined at a bounded resolution (``max_side``) and mapped back.
"""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from annotate.clicks import click_agrees, distance_to_boundary
from annotate.geometry import mask_iou
from annotate.types import Box, Point


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
    points: Sequence[Point] = (),
    point_labels: Sequence[int] = (),
    max_side: int = 200,
) -> np.ndarray:
    """Refine ``mask`` (bool H×W) on ``image`` (H×W×3 RGB); return the refined mask or, if it collapsed, ``mask``.

    ``band`` / ``outer_band``: depth of the uncertain band inside / outside the boundary, as shares of the mask's
    equivalent radius (at least ``min_band`` pixels): pixels deeper inside are sure foreground, further outside
    sure background. The outer band is wider because segmenters more often miss a rim than add one.
    ``tol``: stop when fewer than this share of the mask's area changed label in an iteration.
    ``min_ratio``/``max_ratio``/``min_iou``: the collapse guard (area ratio and IoU against the input).
    ``box``: when given, pixels outside the box grown by ``box_grow`` are sure background.
    ``points`` / ``point_labels``: clicks (1 = object, 0 = not) that the result must keep.
    ``max_side``: the refined crop is processed at most this many pixels on a side (0 = full resolution).
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
    cw, ch = rx1 - rx0, ry1 - ry0
    scale = 1.0
    if max_side and max(cw, ch) > max_side:
        # bounded cost: refine a downscaled crop (band widths scale with it) and map the result back
        scale = max_side / max(cw, ch)
        sw, sh = max(1, int(round(cw * scale))), max(1, int(round(ch * scale)))
        crop = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA)
        sub = (cv2.resize(sub * 255, (sw, sh), interpolation=cv2.INTER_AREA) >= 128).astype(np.uint8)
        r, ro = max(min_band, int(round(r * scale))), max(min_band + 1, int(round(ro * scale)))
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
        bx0 = int(np.floor((box[0] - box_grow * bw - rx0) * scale))
        by0 = int(np.floor((box[1] - box_grow * bh - ry0) * scale))
        bx1 = int(np.ceil((box[2] + box_grow * bw - rx0) * scale))
        by1 = int(np.ceil((box[3] + box_grow * bh - ry0) * scale))
        keep = np.zeros(sub.shape, bool)
        keep[max(0, by0) : max(0, by1), max(0, bx0) : max(0, bx1)] = True
        gc[~keep & (gc != cv2.GC_FGD)] = cv2.GC_BGD
    clicks = [((float(x), float(y)), int(v)) for (x, y), v in zip(points, point_labels)]
    for (x, y), label in clicks:
        if not click_agrees(mask, (x, y), label):
            continue  # a click the input contradicts is the segmenter's to honour, not the refinement's
        # the disc out to the input's nearest boundary is what the click vouches for: it keeps its label
        radius = max(1.0, distance_to_boundary(mask, (x, y)) - 1.0) * scale
        centre = (int(round((x - rx0) * scale - 0.5)), int(round((y - ry0) * scale - 0.5)))
        cv2.circle(gc, centre, max(0, int(radius)), cv2.GC_FGD if label else cv2.GC_BGD, -1)
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
        sure = inner | (gc == cv2.GC_FGD)
        touching = np.unique(lab[sure & cur])
        cur = np.isin(lab, touching[touching > 0])
    if scale != 1.0:
        cur = cv2.resize(cur.astype(np.uint8) * 255, (cw, ch), interpolation=cv2.INTER_LINEAR) >= 128
    out = np.zeros_like(mask)
    out[ry0:ry1, rx0:rx1] = cur
    new_area = int(np.count_nonzero(out))
    if not (min_ratio * area <= new_area <= max_ratio * area) or mask_iou(out, mask) < min_iou:
        return mask
    # a refinement never overrules a click the input honoured
    if any(click_agrees(mask, pt, v) and not click_agrees(out, pt, v) for pt, v in clicks):
        return mask
    return out
