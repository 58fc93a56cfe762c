"""A box prompt's mask stays in its box: the rule every stage's output obeys before it is served.

Why: a box is the annotator's (or the grounding model's) statement of where the object is. A segmenter, a
learned shape prior or a boundary refinement that paints far outside it (a ground-track field's pre-label
spilling thousands of pixels into the grass around it) makes the annotator erase what the box already ruled
out. Boxes are loose, though (a ±10 % jitter is usual for drawn and predicted boxes), so the mask may extend a
small margin beyond the box; and a positive click outside the box is the annotator saying the object goes
further, so the part of the mask connected to such a click is kept.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from annotate.types import Box, Point

#: How far (share of the box's side, per side) a mask may extend beyond its box: prompt boxes are loose.
BOX_MARGIN = 0.10
#: ... and at least this many pixels, so small boxes keep their boundary pixels.
BOX_MARGIN_MIN_PX = 2.0


def allowed_region(box: Box, shape: tuple[int, int], margin: float = BOX_MARGIN,
                   min_margin: float = BOX_MARGIN_MIN_PX) -> tuple[int, int, int, int]:
    """The pixel window ``(x0, y0, x1, y1)`` (exclusive ends) a box prompt's mask may cover."""
    h, w = shape
    x0, y0, x1, y1 = (float(v) for v in box)
    mx = max(min_margin, margin * (x1 - x0))
    my = max(min_margin, margin * (y1 - y0))
    return (int(max(0, np.floor(x0 - mx))), int(max(0, np.floor(y0 - my))),
            int(min(w, np.ceil(x1 + mx))), int(min(h, np.ceil(y1 + my))))


def confine_to_box(mask: np.ndarray, box: Box, points: Sequence[Point] = (), labels: Sequence[int] = (),
                   margin: float = BOX_MARGIN, min_margin: float = BOX_MARGIN_MIN_PX) -> np.ndarray:
    """``mask`` without the pixels beyond ``box`` (plus its margin), except where a positive click says otherwise.

    Pixels outside the allowed window are kept only when they are connected (8-connectivity, outside the window)
    to a positive click that lies outside it. Every click keeps its label: a positive click's pixel stays in the
    mask, a negative click's pixel stays out (this function never adds anything else).
    """
    mask = np.asarray(mask, bool)
    x0, y0, x1, y1 = allowed_region(box, mask.shape, margin, min_margin)
    inside = np.zeros(mask.shape, bool)
    inside[y0:y1, x0:x1] = True
    outside = mask & ~inside
    if not outside.any():
        return mask
    out = mask & inside
    h, w = mask.shape
    positives = [(int(np.clip(np.floor(py), 0, h - 1)), int(np.clip(np.floor(px), 0, w - 1)))
                 for (px, py), lab in zip(points, labels) if int(lab) == 1]
    beyond = [(yi, xi) for yi, xi in positives if not inside[yi, xi]]
    if beyond:
        _, comp = cv2.connectedComponents(outside.astype(np.uint8), connectivity=8)
        keep = {int(comp[yi, xi]) for yi, xi in beyond if outside[yi, xi]}
        if keep:
            out |= np.isin(comp, list(keep))
    for yi, xi in positives:
        out[yi, xi] = True
    return out
