"""Click corrections: each click re-segments the part of the object it belongs to, and never is ignored.

Why not a global re-segmentation with one more seed: it moves pixels far from the click (a corner comes
back, a shape candidate is swapped) and the session oscillates. Why not a small edit around the click: an
error is often a part far longer than wide (a missed wing, a shadow strip along a hull) and a disc the
width of the error fixes a sliver of it per click. So a click is a **one-directional re-segmentation of its
part** of the object region:

* the region is the box (given, or the mask's bounding box) grown by a margin, processed at most
  ``max_side`` pixels on a side; its colour models (OpenCV GrabCut) come from the whole region with the
  current mask as the prior;
* a **negative** click may only remove mask pixels, a **positive** click only add; the pixels it may change
  are those near it (out to a multiple of d, the click's distance to the mask boundary: the simulator and
  annotators click in the middle of the wrong region) and the **part it lies in** -- the uniform-colour
  region around it on its side of the mask, grown by a band -- unless that part is most of the box or of
  the mask (then it is no evidence of where the error ends); every other pixel keeps its label as a hard
  seed, so far pixels keep the previous mask;
* the click and every earlier click are hard seeds, the graph cut decides the rest, and only the change
  connected to the click is kept: a negative click removes the connected leak it lies in, a positive one
  adds the connected part it lies in;
* a negative click keeps the one-pixel edge of what it removes next to what remains (human outlines include
  the pixels an object's edge crosses), and after a positive click on a mostly convex mask the pockets of its
  convex hull next to what the click added are filled when that adds little (a click on one side of a convex
  object moves that side, not one bump; after a click on a rim, only when the pockets are at most a few times
  what the click added);
* a negative click on a thin leak along a straight side of a nearly convex mask moves that whole side in by
  the leak's width (``annotate.click_sides``): a shadow strip along a car is one click, not one per few pixels;
  on a one-pixel rim, the one-pixel band along a straight run of at least ``rim_side`` px goes;
* a part that holds an earlier click of the other label runs across the object's edge (a bridge's deck and
  the road leaving it): it is not re-segmented whole when it is large against the click's neighbourhood;
* the part is found with a looser colour tolerance (``flood_tol``) than the hard seed around the click
  (``seed_tol``): the part only says where the cut may act, the seed says what it must give the click's label;
* the clicked pixel always ends with the clicked label and earlier clicks keep theirs.

A session's answer depends only on the base mask, the box and the click list: ``edit_session`` replays it
from the longest cached prefix, so caching saves time and never changes a mask.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, Optional, Sequence

import cv2
import numpy as np

from annotate.click_sides import side_band
from annotate.types import Box, Point


@dataclass(frozen=True)
class ClickParams:
    """Hyperparameters of one click (chosen on the method's logic and synthetic scenes; measured in bench/noc.py)."""

    #: The region a click re-segments: the box (or, without one, the mask's bounding box) grown by this share
    #: of its size plus ``margin_min`` px on every side, plus the click's own neighbourhood.
    margin: float = 0.15
    margin_min: int = 6
    #: Pixels within ``reach`` × d + ``reach_min`` px of a negative click (d: its distance to the mask's
    #: boundary, the half-width of the error: the simulator and annotators click in the middle of the wrong
    #: region) may change; positive clicks use ``reach_add`` / ``reach_min_add``.
    reach: float = 1.5
    reach_min: float = 1.0
    reach_add: float = 1.5
    reach_min_add: float = 0.5
    #: The part of the image a click lies in (the uniform-colour region around it on its side of the mask,
    #: ``flood_tol``) is re-segmented too, with a band of ``band`` × the object's scale (square root of the
    #: box's area) around it, unless it covers more than ``part_max`` of the box (positive click) or
    #: ``part_max_mask`` of the mask (negative click): then it is no evidence of where the error ends. A leak
    #: of one colour can be a large share of a loose box's mask (a shadow, a patch of water), hence the larger
    #: share for negative clicks.
    band: float = 0.02
    part_max: float = 0.3
    part_max_mask: float = 0.45
    #: A click closer than this (px) to the mask boundary sits on a thin rim: its neighbourhood is d, the part
    #: it lies in is the rim (its side's pixels within ``thin`` of the boundary), and when the region is
    #: processed at a reduced resolution it is processed at full resolution in a ``max_side`` window instead.
    thin: float = 3.5
    #: The region is processed at most this many pixels on a side (0 = full resolution).
    max_side: int = 200
    #: Radius of the hard seed disc at every click, in processed pixels.
    seed_radius: float = 1.5
    #: The new click's seed reaches out to ``seed_reach`` × d (less half a pixel) over the pixels of its colour
    #: (``flood_tol``): a click in the middle of a wrong region says those pixels are wrong too.
    seed_reach: float = 0.8
    #: A negative click keeps the one-pixel rim of what it removes next to the remaining mask: human outlines
    #: include the pixels the object's edge crosses (see ``annotate.masks.include_edge_pixels``).
    keep_edge: bool = True
    #: Convex completion: when the mask before a positive click is at least this solid (area / convex-hull
    #: area), the pockets between the corrected mask and its convex hull that touch what the click added are
    #: filled, if that adds at most ``convex_grow`` of its area and covers no earlier negative click (0 = off).
    convex_min: float = 0.7
    convex_grow: float = 0.2
    #: ... and for a click on a rim (d < ``convex_rim``), whose own change is a sliver, only when the pockets add
    #: at most ``convex_ratio`` × the pixels the click added (0 = no such limit).
    convex_rim: float = 1.5
    convex_ratio: float = 4.0
    #: A part (uniform-colour region) that holds an earlier click of the opposite label spans both sides of the
    #: object's edge: it is no evidence of where the error ends when it is also larger than ``contested_area`` ×
    #: the pixels near the click that may change (0 = always; ``contested`` False = off).
    contested: bool = True
    contested_area: float = 3.0
    #: Side moves (``annotate.click_sides``): a negative click on a thin leak (``side_dmin`` <= d < ``thin``)
    #: along a straight run of a nearly convex mask's outline (solidity >= ``side_min``; the run's direction
    #: within ``side_angle`` degrees and its length at least ``side_len`` × the strip's width) removes the band
    #: of ``side_w`` × (2d - 1) px along the whole run (``side_min`` = 0: off).
    side_min: float = 0.9
    side_angle: float = 15.0
    side_len: float = 6.0
    side_w: float = 0.6
    side_dmin: float = 1.5
    #: A negative click on a one-pixel rim (d < ``side_dmin``) along a straight run of at least ``rim_side`` px
    #: of a nearly convex mask's outline removes that one-pixel band along the run (0 = off).
    rim_side: float = 20.0
    #: Colour tolerance (Lab units per channel) of the flood fill that finds the part a click lies in.
    flood_tol: float = 14.0
    #: ... and of the flood fill that extends a click's hard seed (0 = ``flood_tol``).
    seed_tol: float = 10.0
    #: Within the click's neighbourhood the flood region is a hard seed when it covers at most this share of
    #: the pixels there that may change.
    local_max: float = 0.85
    #: GrabCut iterations.
    iterations: int = 3


def _pixel(mask: np.ndarray, x: float, y: float) -> tuple[int, int]:
    h, w = mask.shape[:2]
    return int(np.clip(np.floor(y), 0, h - 1)), int(np.clip(np.floor(x), 0, w - 1))


def click_agrees(mask: np.ndarray, point: Point, label: int) -> bool:
    """Whether the pixel under ``point`` already has the clicked label (1 = object, 0 = not)."""
    yi, xi = _pixel(mask, point[0], point[1])
    return bool(mask[yi, xi]) == bool(label)


def violated_clicks(mask: np.ndarray, points: Sequence[Point], labels: Sequence[int]) -> list[int]:
    """Indices of the clicks whose pixel has the wrong label in ``mask``."""
    return [i for i, (p, lab) in enumerate(zip(points, labels)) if not click_agrees(mask, p, lab)]


def distance_to_boundary(mask: np.ndarray, point: Point) -> float:
    """Distance (px) from ``point`` to the nearest pixel whose label differs from the one under it."""
    yi, xi = _pixel(mask, point[0], point[1])
    region = mask if mask[yi, xi] else ~mask
    # a crop around the point is enough when the boundary is near; grow it until the boundary is inside
    h, w = mask.shape
    half = 32
    while True:
        y0, y1, x0, x1 = max(0, yi - half), min(h, yi + half + 1), max(0, xi - half), min(w, xi + half + 1)
        sub = region[y0:y1, x0:x1]
        if not sub.all() or (y0 == 0 and x0 == 0 and y1 == h and x1 == w):
            break
        half *= 2
    if sub.all():
        return float(max(h, w))
    dt = cv2.distanceTransform(sub.astype(np.uint8), cv2.DIST_L2, 3)
    return float(dt[yi - y0, xi - x0])


def _disc(img: np.ndarray, x: float, y: float, r: float, value: int) -> None:
    cv2.circle(img, (int(round(x - 0.5)), int(round(y - 0.5))), max(0, int(round(r))), int(value), -1)
    yi, xi = _pixel(img, x, y)
    img[yi, xi] = value  # the clicked pixel itself, whatever the rounding of the disc


def _flood(lab: np.ndarray, allowed: np.ndarray, x: float, y: float, tol: float) -> Optional[np.ndarray]:
    """Pixels of ``allowed`` 4-connected to (x, y) within ``tol`` Lab units of its colour (None if not allowed)."""
    h, w = allowed.shape
    yi, xi = _pixel(allowed, x, y)
    if tol <= 0 or not allowed[yi, xi]:
        return None
    ff = np.zeros((h + 2, w + 2), np.uint8)
    ff[1:-1, 1:-1][~allowed] = 1
    t = (tol,) * 3
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (2 << 8)
    cv2.floodFill(np.ascontiguousarray(lab), ff, (xi, yi), 0, t, t, flags)
    return ff[1:-1, 1:-1] == 2


def _component_at(changed: np.ndarray, x: float, y: float) -> np.ndarray:
    """The 8-connected part of ``changed`` that holds (x, y); empty when (x, y) is not in it.

    Only the change connected to the click counts: a graph cut may flip look-alike specks elsewhere.
    """
    yi, xi = _pixel(changed, x, y)
    if not changed[yi, xi]:
        return np.zeros_like(changed)
    _, comp = cv2.connectedComponents(changed.astype(np.uint8), connectivity=8)
    return comp == comp[yi, xi]


def _region(
    mask: np.ndarray, point: Point, box: Optional[Box], d: float, p: ClickParams
) -> tuple[int, int, int, int, float]:
    """(x0, y0, x1, y1, scale): the part of the image a click re-segments, and the object's scale in px.

    The box (or the mask's bounding box, or without either the click's neighbourhood) grown by the margin,
    plus the click's own neighbourhood, so a click outside the box still has room to act.
    """
    h, w = mask.shape
    cx, cy = point
    near = min(d, float(max(p.max_side, 2 * p.margin_min))) + p.margin_min
    if box is not None:
        bx0, by0, bx1, by1 = (float(v) for v in box)
    else:
        x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
        if bw == 0 or bh == 0:
            bx0, by0, bx1, by1 = cx - near, cy - near, cx + near, cy + near
        else:
            bx0, by0, bx1, by1 = float(x), float(y), float(x + bw), float(y + bh)
    bw, bh = max(1.0, bx1 - bx0), max(1.0, by1 - by0)
    mx, my = p.margin * bw + p.margin_min, p.margin * bh + p.margin_min
    x0, y0 = min(bx0 - mx, cx - near), min(by0 - my, cy - near)
    x1, y1 = max(bx1 + mx, cx + near), max(by1 + my, cy + near)
    x0, y0 = int(max(0, np.floor(x0))), int(max(0, np.floor(y0)))
    x1, y1 = int(min(w, np.ceil(x1))), int(min(h, np.ceil(y1)))
    return x0, y0, x1, y1, float(np.sqrt(bw * bh))


def apply_click(
    image: np.ndarray,
    mask: np.ndarray,
    point: Point,
    label: int,
    constraints: Sequence[tuple[Point, int]] = (),
    params: Optional[ClickParams] = None,
    box: Optional[Box] = None,
) -> np.ndarray:
    """``mask`` corrected by one click at ``point`` (label 1 = object, 0 = not); ``constraints`` are earlier clicks.

    The click re-segments the region it belongs to (``box`` grown by a margin, or the mask's bounding box): a
    graph cut (OpenCV GrabCut) with the current mask as the prior — pixels near the click may change, farther
    ones keep their label as hard seeds — and the click, the uniform-colour region around it and every
    earlier click as hard seeds. A negative click then removes the connected part of the mask it lies in
    that the cut gives to the background (a leak), a positive click adds the connected part it lies in.

    Returns a new mask in which the clicked pixel has the clicked label and every constraint whose pixel had
    its label in ``mask`` keeps it. A click that ``mask`` already agrees with returns ``mask`` unchanged.
    """
    p = params or ClickParams()
    mask = np.asarray(mask, bool)
    if click_agrees(mask, point, label):
        return mask.copy()
    h, w = mask.shape
    positive = bool(label)
    cx, cy = float(point[0]), float(point[1])
    d = distance_to_boundary(mask, point)
    x0, y0, x1, y1, size = _region(mask, (cx, cy), box, d, p)
    cw, ch = x1 - x0, y1 - y0
    scale = 1.0
    if p.max_side and max(cw, ch) > p.max_side:
        scale = p.max_side / max(cw, ch)
        if d * scale < p.thin:
            # an error thinner than two processed pixels would vanish at the reduced resolution: full resolution
            # in a max_side window around the click instead
            half = p.max_side / 2.0
            x0, x1 = int(max(x0, np.floor(cx - half))), int(min(x1, np.ceil(cx + half)))
            y0, y1 = int(max(y0, np.floor(cy - half))), int(min(y1, np.ceil(cy + half)))
            cw, ch, scale = x1 - x0, y1 - y0, 1.0
    crop = np.ascontiguousarray(np.asarray(image)[y0:y1, x0:x1, :3])
    sub = mask[y0:y1, x0:x1]
    if scale != 1.0:
        sw, sh = max(1, int(round(cw * scale))), max(1, int(round(ch * scale)))
        crop = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA)
        sub = cv2.resize(sub.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST).astype(bool)
    sh, sw = sub.shape
    sx, sy = sw / cw, sh / ch

    def to_win(x: float, y: float) -> tuple[float, float]:
        return (x - x0) * sx, (y - y0) * sy

    wx, wy = to_win(cx, cy)
    yy, xx = np.mgrid[0:sh, 0:sw]
    # where the click may change the mask: its neighbourhood (out to a multiple of the error's half-width d),
    # plus the part of the image it lies in -- the uniform-colour region around it on its side of the mask,
    # grown by a band -- so an elongated missed part or leak is re-segmented along its length. Farther pixels
    # keep their label and anchor the colour models (without anchors GrabCut can flip a whole side whose
    # model it learnt from a wrong mask).
    reach = (p.reach_add * d + p.reach_min_add) if positive else (p.reach * d + p.reach_min)
    if d < p.thin:
        reach = d  # a rim one or two pixels wide: which side of a blurred edge a pixel is on is a coin flip
    near = np.hypot((xx + 0.5) / sx - (cx - x0), (yy + 0.5) / sy - (cy - y0)) <= reach
    side = ~sub if positive else sub.copy()
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB)
    region = _flood(lab, side, wx, wy, p.flood_tol)
    same_colour = region if not p.seed_tol or p.seed_tol == p.flood_tol else _flood(lab, side, wx, wy, p.seed_tol)
    local = None if same_colour is None else same_colour & near
    if region is not None and d < p.thin:
        # a click on a rim: the part it lies in is the rim, the pixels of its side within ``thin`` of the boundary
        along = cv2.distanceTransform(side.astype(np.uint8), cv2.DIST_L2, 3) <= p.thin * scale
        region = _component_at(region & along, wx, wy)
        if not region.any():
            region = None
    if region is not None:
        # a part that is most of the box (positive) or of the mask (negative) is no evidence of where the error ends
        cap = p.part_max * size * size * sx * sy if positive else p.part_max_mask * np.count_nonzero(sub)
        if np.count_nonzero(region) > cap:
            region = None
    editable_near = np.count_nonzero(side & near)
    if region is not None and p.contested and np.count_nonzero(region) > p.contested_area * editable_near:
        # a part holding an earlier click of the other label runs across the object's edge (a bridge's deck
        # and the road beyond it of one colour): re-segmenting it all would undo that click's work
        for (qx, qy), qlab in constraints:
            if bool(qlab) != positive and x0 <= qx < x1 and y0 <= qy < y1:
                qx_w, qy_w = to_win(qx, qy)
                if region[_pixel(region, qx_w, qy_w)]:
                    region = None
                    break
    if region is not None:
        band = max(1, int(round(p.band * size * sx)))
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1,) * 2)
        grown = cv2.dilate(region.astype(np.uint8), disc) > 0
        near |= grown
    gc = np.empty(sub.shape, np.uint8)
    # one direction only: a negative click can only remove mask pixels, a positive one only add
    if positive:
        gc[sub] = cv2.GC_FGD
        gc[~sub] = np.where(near[~sub], cv2.GC_PR_BGD, cv2.GC_BGD)
    else:
        gc[sub] = np.where(near[sub], cv2.GC_PR_FGD, cv2.GC_FGD)
        gc[~sub] = cv2.GC_BGD
    seed_value = cv2.GC_FGD if positive else cv2.GC_BGD
    flipped = cv2.GC_PR_FGD if positive else cv2.GC_PR_BGD
    if region is not None:
        # the part the click lies in starts on the click's side; the cut decides where it really ends
        gc[region] = flipped
    if local is not None:
        # near the click the uniform-colour region is a hard seed, unless it fills nearly all the pixels there
        # (then it is no evidence of where the error ends: a hint only)
        gc[local] = seed_value if np.count_nonzero(local) <= p.local_max * editable_near else flipped
    # a click on a thin error (a rim one or two pixels wide) must not seed beyond it: the seed disc stays inside
    # the distance to the mask's boundary
    r = max(0.0, min(p.seed_radius, d * scale - 1.0))
    for (qx, qy), qlab in constraints:
        if x0 <= qx < x1 and y0 <= qy < y1 and click_agrees(mask, (qx, qy), qlab):
            _disc(gc, *to_win(qx, qy), r, cv2.GC_FGD if qlab else cv2.GC_BGD)
    reach_seed = p.seed_reach * d * scale - 0.5
    if reach_seed > r and same_colour is not None:
        # the click sits in the middle of a wrong region: the pixels of its colour within about d of it are
        # wrong too (beyond its colour, a far click on a thin missed part would seed the ground around it)
        wide = np.zeros(gc.shape, np.uint8)
        _disc(wide, wx, wy, reach_seed, 1)
        gc[(wide > 0) & same_colour] = seed_value
    _disc(gc, wx, wy, r, seed_value)

    has_fg = np.any((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD))
    has_bg = np.any((gc == cv2.GC_BGD) | (gc == cv2.GC_PR_BGD))
    new = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    if has_fg and has_bg:
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            # GrabCut's colour models start from k-means on OpenCV's (thread-local) RNG: seeded, so an edit
            # depends only on its inputs and a session replayed from a cached prefix equals one from scratch
            cv2.setRNGSeed(0)
            cv2.grabCut(crop, gc, None, bgd, fgd, p.iterations, cv2.GC_INIT_WITH_MASK)
            new = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
        except cv2.error:
            pass  # degenerate colour statistics: the hard seeds alone are the edit
    changed = _component_at(new != sub, wx, wy)
    out = mask.copy()
    window = out[y0:y1, x0:x1]
    if scale != 1.0:
        # back to full resolution: the corrected mask (not the change alone, whose edge against the old mask
        # would fall between processed pixels) is interpolated, within one processed pixel of the change
        fixed = (sub | changed) if positive else (sub & ~changed)
        up = cv2.resize(fixed.astype(np.float32), (cw, ch), interpolation=cv2.INTER_LINEAR) >= 0.5
        zone = cv2.resize(cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8)), (cw, ch),
                          interpolation=cv2.INTER_NEAREST) > 0
        changed = zone & ((up & ~window) if positive else (~up & window))
        at_click = _component_at(changed, cx - x0, cy - y0)
        changed = at_click if at_click.any() else changed
    if positive:
        window |= changed
    else:
        window &= ~changed
        if p.keep_edge:
            _keep_edge(out, mask, (x0, y0, x1, y1))
    if positive and p.convex_min > 0:
        _complete_convex(out, mask, constraints, p, d)
    if not positive and p.side_min > 0 and p.side_dmin <= d < p.thin:
        _move_side(out, mask, (cx, cy), d, constraints, p)
    elif not positive and p.side_min > 0 and p.rim_side > 0 and d < p.side_dmin:
        # a one-pixel rim: the one-pixel band along a run of at least rim_side px
        _move_side(out, mask, (cx, cy), 1.0, constraints, p, min_length=p.rim_side, width_factor=1.0)
    # hard guarantees, whatever the resampling did: the click and the constraints it agreed with
    for (qx, qy), qlab in list(constraints) + [((cx, cy), int(label))]:
        if (qx, qy) == (cx, cy) or click_agrees(mask, (qx, qy), qlab):
            yi, xi = _pixel(out, qx, qy)
            out[yi, xi] = bool(qlab)
    return out


def _keep_edge(out: np.ndarray, before: np.ndarray, window: tuple[int, int, int, int]) -> None:
    """Give back (in place) the removed pixels 4-adjacent to what remains: the object's edge pixels.

    Why: a cut puts the boundary on the colour edge and splits the pixels the edge crosses about evenly, while
    a human outline includes them (``annotate.masks.include_edge_pixels``); removing a leak should leave the
    object's outline where a person draws it. Only pixels within ``window`` (where a click can change the mask)
    are considered.
    """
    x0, y0, x1, y1 = window
    h, w = out.shape
    ya, yb, xa, xb = max(0, y0 - 1), min(h, y1 + 1), max(0, x0 - 1), min(w, x1 + 1)
    sub, old = out[ya:yb, xa:xb], before[ya:yb, xa:xb]
    removed = old & ~sub
    if removed.any():
        from annotate.masks import include_edge_pixels

        sub |= removed & include_edge_pixels(sub)


def _move_side(out: np.ndarray, before: np.ndarray, point: Point, d: float,
               constraints: Sequence[tuple[Point, int]], p: ClickParams,
               min_length: Optional[float] = None, width_factor: Optional[float] = None) -> None:
    """Remove (in place) the band along the straight side a negative click on a thin leak lies on.

    Why: a graph cut over a rim one or two pixels wide fixes a few pixels around the click, so a strip of leak
    along a side (a shadow, a paint line) would need a click every few pixels (``annotate.click_sides``).
    """
    length = p.side_len if min_length is None else min_length
    width = p.side_w if width_factor is None else width_factor
    found = side_band(before, point, d, constraints, p.side_min, p.side_angle, length, width)
    if found is not None:
        band, x0, y0 = found
        out[y0:y0 + band.shape[0], x0:x0 + band.shape[1]] &= ~band


def _filled_hull(m: np.ndarray) -> np.ndarray:
    """``m`` with its convex hull filled."""
    hull = np.zeros(m.shape, np.uint8)
    cv2.fillPoly(hull, [cv2.convexHull(cv2.findNonZero(m.astype(np.uint8)))], 1)
    return (hull > 0) | m


def _complete_convex(out: np.ndarray, before: np.ndarray, constraints: Sequence[tuple[Point, int]],
                     p: ClickParams, d: float = float("inf")) -> None:
    """Fill (in place) the pockets of ``out``'s convex hull next to what a positive click added.

    Why: most objects of aerial datasets are convex (vehicles, tanks, courts, ship hulls, bridge spans), and a
    positive click on a long side of such a mask says that side lies further out, not that one bump does; the
    hull carries the click's evidence along the side. Only the pockets that touch the click's own change are
    filled (a notch elsewhere is no part of that evidence), only when the mask before the click was mostly
    convex (solidity ``p.convex_min``), when the pockets add little (``p.convex_grow`` of the area) and when
    they cover no earlier negative click, so concave objects (airplanes, harbours) keep their shape.
    """
    x, y, bw, bh = cv2.boundingRect((before | out).astype(np.uint8))
    if bw == 0 or not before.any():
        return
    old, new = before[y:y + bh, x:x + bw], out[y:y + bh, x:x + bw]
    if np.count_nonzero(old) < p.convex_min * np.count_nonzero(_filled_hull(old)):
        return
    added = _filled_hull(new) & ~new
    # only the pockets next to what this click added: the click is evidence about its side, not about a notch
    # elsewhere (a parking bay beside a car, the gap between a plane's wings)
    touching = cv2.dilate((new & ~old).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    _, pockets = cv2.connectedComponents(added.astype(np.uint8), connectivity=8)
    ids = np.unique(pockets[touching & added])
    added = np.isin(pockets, ids[ids > 0])
    if np.count_nonzero(added) > p.convex_grow * np.count_nonzero(new):
        return
    if d < p.convex_rim and p.convex_ratio > 0 and (
        np.count_nonzero(added) > p.convex_ratio * np.count_nonzero(new & ~old)
    ):
        return  # a click on a rim added a sliver: evidence about that sliver, not about a whole side
    if any(not lab and x <= pt[0] < x + bw and y <= pt[1] < y + bh and added[_pixel(new, pt[0] - x, pt[1] - y)]
           for pt, lab in constraints):
        return
    new |= added


def apply_clicks(
    image: np.ndarray,
    mask: np.ndarray,
    points: Sequence[Point],
    labels: Sequence[int],
    params: Optional[ClickParams] = None,
    box: Optional[Box] = None,
) -> np.ndarray:
    """``mask`` corrected by each click in order (each earlier click a hard constraint of the later ones)."""
    out = np.asarray(mask, bool)
    done: list[tuple[Point, int]] = []
    for point, label in zip(points, labels):
        pt = (float(point[0]), float(point[1]))
        out = apply_click(image, out, pt, int(label), done, params, box=box)
        done.append((pt, int(label)))
    return out


def honour_clicks(
    image: np.ndarray,
    mask: np.ndarray,
    points: Sequence[Point],
    labels: Sequence[int],
    params: Optional[ClickParams] = None,
    box: Optional[Box] = None,
) -> np.ndarray:
    """Correct ``mask`` only where it contradicts a click, so every click holds; the last stage of any pipeline.

    Clicks are repaired in order; the clicks the mask already agrees with are constraints of each repair.
    """
    mask = np.asarray(mask, bool)
    bad = violated_clicks(mask, points, labels)
    if not bad:
        return mask
    pts = [(float(p[0]), float(p[1])) for p in points]
    labs = [int(v) for v in labels]
    out = mask
    for i in bad:
        others = [(pts[j], labs[j]) for j in range(len(pts)) if j != i]
        out = apply_click(image, out, pts[i], labs[i], others, params, box=box)
    # two clicks on the same pixel with opposite labels cannot both hold: the later one wins
    for i in range(len(pts)):
        if not click_agrees(out, pts[i], labs[i]) and not any(
            _pixel(out, *pts[j]) == _pixel(out, *pts[i]) for j in range(i + 1, len(pts))
        ):
            yi, xi = _pixel(out, *pts[i])
            out[yi, xi] = bool(labs[i])
    return out


class _PrefixCache:
    """An LRU of click-session values by (base key, clicks so far), bounded in count; thread-safe.

    A session (Label Studio sends every click so far with each request) is replayed from the longest cached
    prefix of its clicks. Subclasses say how a value is stored (``_encode``) and handed back (``_decode``).
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._items: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()  # the backend answers requests from several threads

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def _encode(self, value):
        return value

    def _decode(self, stored):
        return stored

    def _put(self, base: Hashable, clicks: Sequence[tuple[Point, int]], value) -> None:
        if self.size <= 0:
            return
        key = (base, tuple(clicks))
        stored = self._encode(value)
        with self._lock:
            self._items[key] = stored
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def _longest(self, base: Hashable, clicks: Sequence[tuple[Point, int]]) -> tuple[int, object]:
        """(k, value) of the longest cached prefix ``clicks[:k]``; (0, None) when none is cached."""
        for k in range(len(clicks), -1, -1):
            key = (base, tuple(clicks[:k]))
            with self._lock:
                hit = self._items.get(key)
                if hit is not None:
                    self._items.move_to_end(key)
            if hit is not None:
                return k, self._decode(hit)
        return 0, None


class EditCache(_PrefixCache):
    """Masks of click sessions, by (base key, clicks so far), so each new click of a session costs one edit.

    Masks are stored bit-packed (a 4-MP mask takes 0.5 MB) with the session's score.
    """

    def _encode(self, value: tuple[np.ndarray, float]):
        mask, score = value
        return np.packbits(mask.ravel()), mask.shape, score

    def _decode(self, stored) -> tuple[np.ndarray, float]:
        packed, shape, score = stored
        return np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool), score

    def put(self, base: Hashable, clicks: Sequence[tuple[Point, int]], mask: np.ndarray, score: float) -> None:
        self._put(base, clicks, (mask, score))

    def longest(self, base: Hashable, clicks: Sequence[tuple[Point, int]]) -> tuple[int, Optional[np.ndarray], float]:
        """(k, mask, score) of the longest cached prefix ``clicks[:k]``; (0, None, 0.0) when none is cached."""
        k, hit = self._longest(base, clicks)
        return (k, hit[0], hit[1]) if hit is not None else (0, None, 0.0)


def edit_session(
    image: np.ndarray,
    base_key: Hashable,
    base: Callable[[], tuple[np.ndarray, float]],
    clicks: Sequence[tuple[Point, int]],
    cache: Optional[EditCache] = None,
    params: Optional[ClickParams] = None,
    box: Optional[Box] = None,
) -> tuple[np.ndarray, float]:
    """The mask of ``base()`` corrected by ``clicks`` in order, replayed from the longest cached prefix.

    ``base`` computes the click-free mask and its score (only called on a cache miss); every prefix is cached.
    ``box``: the object's box, the region each click re-segments (default: the mask's bounding box). The
    answer depends only on the base mask, the box and the click list, never on what was cached.
    """
    k, mask, score = cache.longest(base_key, clicks) if cache is not None else (0, None, 0.0)
    if mask is None:
        mask, score = base()
        if cache is not None:
            cache.put(base_key, (), mask, score)
    for i in range(k, len(clicks)):
        point, label = clicks[i]
        mask = apply_click(image, mask, point, label, clicks[:i], params, box=box)
        if cache is not None:
            cache.put(base_key, clicks[: i + 1], mask, score)
    return mask, score


class LogitsCache(_PrefixCache):
    """A segmenter's low-resolution logits of click sessions, by (base key, clicks so far); bounded in count.

    Why: SAM refines its previous answer when it gets that answer's logits back as ``mask_input``; a session's
    answer is then a chain over its click prefixes, and keeping every prefix's logits makes click k cost one
    decoder call. Stored as float16 (a 256×256 entry takes 128 KB).
    """

    def _encode(self, value: np.ndarray) -> np.ndarray:
        return np.asarray(value, np.float16)

    def _decode(self, stored: np.ndarray) -> np.ndarray:
        return stored.astype(np.float32)

    def put(self, base: Hashable, clicks: Sequence[tuple[Point, int]], logits: np.ndarray) -> None:
        self._put(base, clicks, logits)

    def longest(self, base: Hashable, clicks: Sequence[tuple[Point, int]]) -> tuple[int, Optional[np.ndarray]]:
        """(k, logits) of the longest cached prefix ``clicks[:k]``; (0, None) when none is cached."""
        return self._longest(base, clicks)
