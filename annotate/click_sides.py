"""Side moves: a negative click on a thin leak along a straight side of a convex mask moves the whole side.

Why: once a mask is nearly right, its largest error is often a strip one to three pixels wide along one side
(a car's shadow, the paint line around a court, a hull's wake). A click in the middle of such a strip is a
click on a rim, and a graph cut over a rim one or two pixels wide fixes a few pixels around the click: the
strip then needs a click every few pixels. For a nearly convex mask the click says more: that *side* lies
further in, by about the width of the strip. The move is made only where that reading is safe:

* the mask is nearly convex (its area at least ``side_min`` of its convex hull's, counting the boundary's
  half-pixel), so a straight run of its outline is a side of the object, not the rim of a notch;
* the side is the run of outline through the point nearest the click whose direction stays within
  ``side_angle`` degrees of the direction there, at least ``side_len`` × the strip's width long;
* the band removed is the mask pixels within the strip's width (``side_w`` × (2d − 1), d the click's
  distance to the boundary) of the outside pixels along that run, and it holds no earlier positive click.
"""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from annotate.types import Point


def side_band(
    mask: np.ndarray,
    point: Point,
    d: float,
    constraints: Sequence[tuple[Point, int]],
    min_solidity: float,
    max_angle_deg: float,
    min_length: float,
    width_factor: float,
) -> Optional[tuple[np.ndarray, int, int]]:
    """(band, x0, y0): the mask pixels a negative click at ``point`` removes as a side move, or None.

    ``band`` is a boolean window whose top-left pixel is (x0, y0) in ``mask``; None when the mask is not
    nearly convex, the outline near the click is not a long enough straight run, or the band would remove an
    earlier positive click. ``d`` is the click's distance to the mask's boundary.
    """
    width = width_factor * (2.0 * d - 1.0)
    if width < 1.0:
        return None
    h, w = mask.shape
    x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
    if bw == 0:
        return None
    pad = int(np.ceil(width)) + 3
    x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad)
    old = np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.uint8)
    contours, _ = cv2.findContours(old, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    outline = max(contours, key=cv2.contourArea)
    hull_area = cv2.contourArea(cv2.convexHull(outline))
    # the contour runs through pixel centres: half a pixel of the boundary lies outside its polygon
    if hull_area <= 0 or np.count_nonzero(old) < min_solidity * (hull_area + 0.5 * cv2.arcLength(outline, True)):
        return None
    pts = outline[:, 0, :].astype(np.float64)
    n = len(pts)
    if n < 12:
        return None
    run = _straight_run(pts, (point[0] - x0 - 0.5, point[1] - y0 - 0.5), max_angle_deg)
    if len(run) < min_length * width:
        return None
    side = np.zeros(old.shape, bool)
    side[run[:, 1], run[:, 0]] = True
    inside = old > 0
    # the outside pixels along the run; the band is the mask pixels within the strip's width whose nearest
    # outside pixel is one of them
    origin = (cv2.dilate(side.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~inside
    dist, nearest = cv2.distanceTransformWithLabels(old, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    along = np.zeros(int(nearest.max()) + 1, bool)
    along[nearest[origin]] = True
    band = inside & (dist <= width + 0.5) & along[nearest]
    for (qx, qy), qlab in constraints:
        xi, yi = int(np.floor(qx)) - x0, int(np.floor(qy)) - y0
        if qlab and 0 <= xi < band.shape[1] and 0 <= yi < band.shape[0] and band[yi, xi]:
            return None
    return band, x0, y0


def _straight_run(pts: np.ndarray, near: tuple[float, float], max_angle_deg: float) -> np.ndarray:
    """The outline points (int x, y) around the one nearest ``near`` whose direction stays within the angle.

    The direction at a point is that of the chord between the points four steps before and after it, which
    ignores the staircase of a pixel outline.
    """
    n = len(pts)
    at = int(np.argmin((pts[:, 0] - near[0]) ** 2 + (pts[:, 1] - near[1]) ** 2))
    tangent = np.roll(pts, -4, axis=0) - np.roll(pts, 4, axis=0)
    angle = np.arctan2(tangent[:, 1], tangent[:, 0])
    limit = np.deg2rad(max_angle_deg)

    def straight(j: int) -> bool:
        return abs((angle[j % n] - angle[at] + np.pi) % (2 * np.pi) - np.pi) <= limit

    back = 0
    while back < n // 2 and straight(at - back - 1):
        back += 1
    ahead = 0
    while ahead < n // 2 and straight(at + ahead + 1):
        ahead += 1
    return pts[[(at + j) % n for j in range(-back, ahead + 1)]].astype(np.int32)
