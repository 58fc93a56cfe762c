"""The weights-free segmenter: k-means-seeded GrabCut in a cropped, upsampled ROI, regularised by a shape prior.

Why this design (measured in bench/stage2_isaid.py, see docs/stage2-method.md):

* GrabCut initialised from the whole box rectangle collapses or leaks on small aerial objects (0.43–0.58 mIoU
  on iSAID, below simply filling the box, 0.707). Seeding it with a k-means split of the box (foreground =
  the cluster rarer on the box border) plus a probable-foreground disc at the box centre, working in a crop
  around the box (upsampled when tiny) makes its colour models meaningful.
* A colour segmentation of a 20-pixel car is noisy, and on multi-coloured cars it often finds only a part
  (the bright roof). Most objects of aerial datasets are compact (vehicles are rotated rectangles, tanks are
  discs), so the segmentation's outline is replaced by its minimum-area rectangle or moment ellipse, whichever
  fits it (large holes, such as a roundabout's middle, are kept; an outline neither shape fits is kept as is).
  That shape is trusted only when it spans the prompt box (bounding-box IoU ≥ ``trust_iou``): the object
  touches the box's four sides, a part does not. Otherwise the **box prior** wins: the pixels covered by most
  of the rectangles that fit the box (the box and rotated rectangles inscribed along either diagonal) — a box
  with its corners cut, which is what an object at an unknown angle most likely covers.
* With learned shape priors (``annotate.priors``, fitted from corrections per category), the category's prior
  replaces the box prior and trims / completes the trusted shape, flipped to the box diagonal the colour
  segmentation follows: an airplane's cross or a harbour's comb, which no rectangle or ellipse fits.
* The score is that evidence: bounding-box agreement × shape fit when the segmentation is trusted, much lower
  for the box-prior fallback and lowest when the segmentation collapsed — a confidence a reviewer can sort on.

Clicks (points with a box) are hard constraints applied as local edits of the box's mask
(``annotate.clicks``): the box is segmented once (cached per image and box), then each click in order removes
(negative) or adds (positive) the region around it that the mask got wrong, so click k only changes the mask
near click k and no click is ever undone by a shape candidate or a fallback (in a ``Pipeline`` the edits come
after MBO: ``clicks_as_edits``). Points without a box: the object's extent is grown from the image around the
first positive point (the colour region under it, see ``_box_from_point``), segmented around that point as a
seed, then edited by every click.

Large boxes are segmented at a bounded resolution (``max_roi_side``) and the mask is mapped back, so the cost
of a box does not grow with its size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import cv2
import numpy as np

from annotate.cfpg import kmeans_foreground
from annotate.clicks import ClickParams, EditCache, edit_session
from annotate.geometry import box_iou, mask_iou
from annotate.priors import ShapePriors, diagonal_of
from annotate.segmenters.base import Segmenter
from annotate.types import SegmentationOutput


@dataclass(frozen=True)
class ClassicalParams:
    """Hyperparameters of the classical segmenter (defaults measured on iSAID, see docs/stage2-method.md)."""

    #: ROI margin around the box, as a fraction of the longer box side (and at least ``min_margin`` pixels).
    margin: float = 0.25
    min_margin: int = 6
    #: Upsample the ROI so the shorter box side has at least this many pixels (capped at ``max_scale``).
    target_side: int = 24
    max_scale: float = 4.0
    #: Fraction of the box size by which the box is grown before pixels outside count as sure background
    #: (prompt boxes are loose: a ±10 % jitter is usual).
    outer_grow: float = 0.15
    #: GrabCut iterations.
    iterations: int = 2
    #: Below this share of the box area the colour segmentation counts as collapsed.
    collapse_min: float = 0.12
    #: Whether the shape prior picks the returned mask among candidates (else the raw segmentation is returned).
    shape_prior: bool = True
    #: Aspect ratios (short/long side) of the rotated rectangles inscribed in the box.
    aspects: tuple[float, ...] = (0.25, 0.35, 0.45, 0.55, 0.7)
    #: Radius of a probable-foreground disc at the box centre, as a share of the shorter box side (0 = none).
    core: float = 0.2
    #: Trust the segmentation's minimum-area rectangle when its bounding box has at least this IoU with the box.
    trust_iou: float = 0.65
    #: Below this IoU between the segmentation and its best rectangle/ellipse, the segmentation is kept as is.
    shape_fit: float = 0.8
    #: Holes of the segmentation at least this share of the object's filled area are kept as holes.
    hole_min: float = 0.08
    #: Box prior: a pixel is foreground when at least this share of the box-fitting rectangles cover it.
    prior_level: float = 0.4
    #: Radius of the seed disc drawn around a point, in ROI pixels before upsampling.
    point_radius: float = 1.5
    #: Colour tolerance (Lab units per channel) and size cap (share of the grown box) of a negative click's region.
    flood_tol: float = 12.0
    flood_max: float = 0.5
    #: Point-only prompts: colour tolerances (Lab units) tried in turn for the region grown from the click and
    #: the area jump that means it broke out into the ground, the smallest box side (px) put around it, the
    #: margin added around the region (share of its size), and the window (px on a side) it may grow in.
    point_grow_tols: tuple[float, ...] = (8.0, 14.0, 20.0, 28.0, 38.0)
    point_jump: float = 3.0
    point_min_side: int = 48
    point_margin: float = 0.15
    point_max_side: int = 512
    #: The ROI is processed at most this many pixels on its longer side (larger boxes are downscaled and the
    #: mask mapped back; 0 = full resolution, the unbounded behaviour).
    max_roi_side: int = 200
    #: How many (box, clicks) → mask results are kept per image, so a click session pays one edit per click.
    cache_size: int = 32
    #: Learned shape priors (``annotate.priors``), when the segmenter has some: a pixel of the shape chosen
    #: from the colour evidence is kept where the category's prior is at least ``learned_keep`` × its
    #: calibrated level, and a pixel outside it is added where the prior is at least ``learned_add``.
    learned_keep: float = 0.5
    learned_add: float = 0.9


def _disc(mask: np.ndarray, x: float, y: float, r: float, value: int) -> None:
    cv2.circle(mask, (int(round(x)), int(round(y))), max(1, int(round(r))), int(value), -1)


def _inscribed_rect(bw: float, bh: float, aspect: float, diagonal: int) -> Optional[np.ndarray]:
    """Corners of a rectangle with short/long = ``aspect`` inscribed in a bw×bh box, long axis along a diagonal.

    The rectangle's bounding box is the box: L·cosθ + A·L·sinθ = bw and L·sinθ + A·L·cosθ = bh; solved for θ
    by bisection. ``diagonal`` ±1 picks "\\" or "/". None when no such rectangle exists for this aspect.
    """
    long_x = bw >= bh
    big, small = (bw, bh) if long_x else (bh, bw)
    ratio = small / big
    # along a side (θ=0) ratio = aspect; at 45° ratio = 1 → need aspect <= ratio
    if ratio < aspect - 1e-6:
        return None

    def f(theta: float) -> float:
        return (np.sin(theta) + aspect * np.cos(theta)) / (np.cos(theta) + aspect * np.sin(theta)) - ratio

    lo, hi = 0.0, np.pi / 4
    for _ in range(40):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    theta = (lo + hi) / 2
    length = big / (np.cos(theta) + aspect * np.sin(theta))
    width = aspect * length
    ang = theta if long_x else np.pi / 2 - theta
    ang *= diagonal
    u = np.array([np.cos(ang), np.sin(ang)]) * length / 2
    v = np.array([-np.sin(ang), np.cos(ang)]) * width / 2
    c = np.array([bw / 2, bh / 2])
    return np.array([c + u + v, c + u - v, c - u - v, c - u + v])


def _fill_poly(shape: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    """Rasterise a convex polygon given in continuous pixel coordinates (pixel (i, j) covers [i, i+1)).

    ``cv2.fillPoly`` fills every pixel its (rounded) outline touches, which adds about half a pixel on every
    side — a lot for a 20-pixel car — so the outline is pulled in by that much first.
    """
    out = np.zeros(shape, np.uint8)
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    c = p.mean(axis=0)
    d = p - c
    n = np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    p = p - 0.5 - d / n * np.minimum(0.7, n * 0.5)
    cv2.fillPoly(out, [np.round(p * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return out.astype(bool)


def _moment_ellipse(contours, shape: tuple[int, int]) -> Optional[np.ndarray]:
    """The ellipse with the area and second moments of the region the outer ``contours`` enclose, rasterised."""
    filled = np.zeros(shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, -1)
    ys, xs = np.nonzero(filled)
    if len(xs) < 5:
        return None
    cx, cy = xs.mean(), ys.mean()
    cov = np.cov(np.stack([xs - cx, ys - cy])) + np.eye(2) / 12.0  # + pixel extent
    evals, evecs = np.linalg.eigh(cov)
    if evals.min() <= 0:
        return None
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    d = np.stack([xx - cx, yy - cy], axis=-1) @ evecs  # coordinates along the principal axes
    # a filled ellipse with semi-axes a, b has variances a²/4, b²/4
    return (d[..., 0] ** 2 / (4 * evals[0]) + d[..., 1] ** 2 / (4 * evals[1])) <= 1.0


class ClassicalSegmenter(Segmenter):
    """Box / point prompts → mask with no learned weights (OpenCV GrabCut + k-means + shape prior)."""

    name = "classical-grabcut-v2"
    #: Clicks with a box are best applied as local edits of the refined box mask (``annotate.clicks``): the
    #: pipeline does so, after MBO, instead of passing them to ``predict``.
    clicks_as_edits = True
    #: Its boundary refinement (MBO, a colour cut) splits the pixels an object's edge crosses, which human outlines
    #: include: after MBO the pipeline grows its box mask by those pixels (``annotate.masks.include_edge_pixels``).
    splits_edge_pixels = True
    #: ``predict`` takes the prompt's ``category`` (for its learned shape priors).
    uses_category = True

    def __init__(
        self, params: Optional[ClassicalParams] = None, click_params: Optional[ClickParams] = None,
        priors: Optional[ShapePriors] = None, **overrides
    ) -> None:
        self.params = replace(params or ClassicalParams(), **overrides)
        #: learned per-category shape priors; their digest is part of ``name`` so new priors re-predict
        self.priors = priors
        if priors is not None:
            self.name = f"{ClassicalSegmenter.name}+priors-{priors.digest}"
        self._category: Optional[str] = None
        self.click_params = click_params or ClickParams()
        self._rgb: Optional[np.ndarray] = None
        self._image_key: Optional[str] = None
        self._cache = EditCache(self.params.cache_size)

    def set_image(self, image: np.ndarray, image_key: Optional[str] = None) -> None:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] < 3:
            raise ValueError(f"expected an H×W×3 RGB image, got shape {arr.shape}")
        # results are reused across calls only for an image known to be the same (same key, same size)
        same = image_key is not None and image_key == self._image_key and self._rgb is not None
        if not (same and self._rgb.shape[:2] == arr.shape[:2]):
            self._cache.clear()
        self._image_key = image_key
        self._rgb = np.ascontiguousarray(arr[:, :, :3].astype(np.uint8, copy=False))

    def predict(
        self,
        box: Optional[np.ndarray] = None,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        category: Optional[str] = None,
    ) -> SegmentationOutput:
        """``category`` picks the learned shape prior (``annotate.priors``) when the segmenter has priors."""
        if self._rgb is None:
            raise RuntimeError("ClassicalSegmenter.predict called before set_image")
        self._category = category if self.priors is not None else None
        h, w = self._rgb.shape[:2]
        pts = np.zeros((0, 2)) if point_coords is None else np.asarray(point_coords, np.float64).reshape(-1, 2)
        labs = np.ones(len(pts), int) if point_labels is None else np.asarray(point_labels, int).reshape(-1)
        if len(labs) != len(pts):
            raise ValueError(f"{len(pts)} points but {len(labs)} point labels")
        clicks = [((float(x), float(y)), int(v)) for (x, y), v in zip(pts, labs)]
        if box is None:
            if not any(v == 1 for _, v in clicks):
                raise ValueError("no prompt: give a box or at least one positive point")
            first = next(pt for pt, v in clicks if v == 1)
            bx = self._box_from_point(first)
            seed_pos = np.array([first])
        else:
            bx = tuple(float(v) for v in np.asarray(box, np.float64).reshape(4))
            seed_pos = np.zeros((0, 2))
        x0, y0, x1, y1 = bx
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"box {bx} is empty")
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise ValueError(f"box {bx} lies outside the {w}×{h} image")
        mask, score = self._segment_with_clicks((x0, y0, x1, y1), seed_pos, clicks)
        return SegmentationOutput(mask=mask, score=score)

    def _segment_with_clicks(self, box, seed_pos: np.ndarray, clicks: list) -> tuple[np.ndarray, float]:
        """The box's mask edited by each click in order; every prefix is cached so a session pays one edit a click."""
        base_key = (tuple(round(v, 3) for v in box), tuple(map(tuple, seed_pos.round(3))), self._category)
        assert self._rgb is not None
        return edit_session(
            self._rgb, base_key, lambda: self._segment(box, seed_pos, np.zeros((0, 2)), len(seed_pos) == 0), clicks, self._cache,
            self.click_params, box=box,
        )

    def _box_from_point(self, point: tuple[float, float]) -> tuple[float, float, float, float]:
        """A box for a point-only prompt, grown from the image: the colour region under the click.

        The region is flood-filled in Lab inside a window of ``point_max_side`` pixels with a growing tolerance
        (``point_grow_tols``), each opened to cut thin bridges into look-alike ground; the largest region before
        the growth jumps (the fill broke out into the ground: more than ``point_jump`` times the area, or the
        window's edge reached) is the object — a multi-coloured vehicle is found whole, not only its roof. Its
        bounding box plus ``point_margin`` is the object's extent, at least ``point_min_side`` px.
        """
        p = self.params
        rgb = self._rgb
        assert rgb is not None
        h, w = rgb.shape[:2]
        x, y = point
        half = p.point_max_side / 2
        wx0, wy0 = int(max(0, np.floor(x - half))), int(max(0, np.floor(y - half)))
        wx1, wy1 = int(min(w, np.ceil(x + half))), int(min(h, np.ceil(y + half)))
        crop = np.ascontiguousarray(rgb[wy0:wy1, wx0:wx1])
        lab = cv2.cvtColor(cv2.GaussianBlur(crop, (3, 3), 0), cv2.COLOR_RGB2LAB)
        ch, cw = lab.shape[:2]
        xi, yi = int(np.clip(np.floor(x) - wx0, 0, cw - 1)), int(np.clip(np.floor(y) - wy0, 0, ch - 1))
        best: Optional[np.ndarray] = None
        for tol_value in p.point_grow_tols:
            ff = np.zeros((ch + 2, cw + 2), np.uint8)
            tol = (tol_value,) * 3
            cv2.floodFill(lab, ff, (xi, yi), 0, tol, tol, 8 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (1 << 8))
            region = ff[1:-1, 1:-1].astype(bool)
            opened = cv2.morphologyEx(region.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
            if opened[yi, xi]:
                _, comp = cv2.connectedComponents(opened.astype(np.uint8), connectivity=8)
                region = comp == comp[yi, xi]
            ys, xs = np.nonzero(region)
            touches = (xs.min() == 0 and wx0 > 0) or (ys.min() == 0 and wy0 > 0) or (xs.max() == cw - 1 and wx1 < w) or (
                ys.max() == ch - 1 and wy1 < h
            )
            if touches or (best is not None and len(xs) > p.point_jump * np.count_nonzero(best)):
                break
            best = region
        half_min = p.point_min_side / 2
        if best is None:
            return (x - half_min, y - half_min, x + half_min, y + half_min)
        ys, xs = np.nonzero(best)
        rx0, ry0, rx1, ry1 = xs.min() + wx0, ys.min() + wy0, xs.max() + 1.0 + wx0, ys.max() + 1.0 + wy0
        mx, my = p.point_margin * (rx1 - rx0), p.point_margin * (ry1 - ry0)
        bx0, by0, bx1, by1 = rx0 - mx, ry0 - my, rx1 + mx, ry1 + my
        # never smaller than the minimum box around the click
        bx0, by0 = min(bx0, x - half_min), min(by0, y - half_min)
        bx1, by1 = max(bx1, x + half_min), max(by1, y + half_min)
        return (float(bx0), float(by0), float(bx1), float(by1))

    # ------------------------------------------------------------------ internals
    def _segment(self, box, pos: np.ndarray, neg: np.ndarray, box_given: bool) -> tuple[np.ndarray, float]:
        p = self.params
        rgb = self._rgb
        assert rgb is not None
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        m = max(p.min_margin, p.margin * max(bw, bh))
        rx0, ry0 = int(max(0, np.floor(x0 - m))), int(max(0, np.floor(y0 - m)))
        rx1, ry1 = int(min(w, np.ceil(x1 + m))), int(min(h, np.ceil(y1 + m)))
        if len(pos) or len(neg):  # clicks outside the box still have to land inside the ROI
            allp = np.concatenate([pos.reshape(-1, 2), neg.reshape(-1, 2)])
            rx0, ry0 = min(rx0, int(max(0, np.floor(allp[:, 0].min()) - 2))), min(ry0, int(max(0, np.floor(allp[:, 1].min()) - 2)))
            rx1, ry1 = max(rx1, int(min(w, np.ceil(allp[:, 0].max()) + 3))), max(ry1, int(min(h, np.ceil(allp[:, 1].max()) + 3)))
        scale = float(np.clip(p.target_side / max(1.0, min(bw, bh)), 1.0, p.max_scale))
        if p.max_roi_side > 0:
            # bounded cost: a large ROI is segmented downscaled (GrabCut and k-means cost grow with its area)
            scale = min(scale, p.max_roi_side / max(rx1 - rx0, ry1 - ry0))
        crop = rgb[ry0:ry1, rx0:rx1]
        sw, sh = max(1, int(round((rx1 - rx0) * scale))), max(1, int(round((ry1 - ry0) * scale)))
        if scale > 1.0:
            crop = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_LINEAR)
        elif scale < 1.0:
            crop = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA)
        sx, sy = (sw / (rx1 - rx0)), (sh / (ry1 - ry0))

        def to_roi(x: float, y: float) -> tuple[float, float]:
            return (x - rx0) * sx, (y - ry0) * sy

        bx0, by0 = to_roi(x0, y0)
        bx1, by1 = to_roi(x1, y1)
        ib = (int(np.floor(bx0)), int(np.floor(by0)), int(np.ceil(bx1)), int(np.ceil(by1)))
        in_box = np.zeros((sh, sw), bool)
        in_box[max(ib[1], 0) : ib[3], max(ib[0], 0) : ib[2]] = True
        gx, gy = p.outer_grow * (bx1 - bx0), p.outer_grow * (by1 - by0)
        grown = np.zeros((sh, sw), bool)
        grown[max(0, int(by0 - gy)) : int(np.ceil(by1 + gy)), max(0, int(bx0 - gx)) : int(np.ceil(bx1 + gx))] = True

        lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB)
        fg_cluster = kmeans_foreground(lab, in_box)
        gc = np.full((sh, sw), cv2.GC_BGD, np.uint8)
        gc[grown] = cv2.GC_PR_BGD
        if fg_cluster is not None:
            gc[in_box & fg_cluster] = cv2.GC_PR_FGD
        else:
            gc[in_box] = cv2.GC_PR_FGD
        if p.core > 0 and box_given:
            _disc(gc, (bx0 + bx1) / 2, (by0 + by1) / 2, p.core * min(bx1 - bx0, by1 - by0), cv2.GC_PR_FGD)
        r = p.point_radius * scale
        # a negative click means "not this region": the uniform-colour region around it (flood fill within the
        # grown box, capped) becomes sure background, so one click removes a whole part. Positive clicks only seed
        # a disc: flooding them leaked into look-alike ground on iSAID (dev mIoU 0.837 → 0.817 with CFPG points)
        for x, y in neg:
            rx, ry = to_roi(x, y)
            region = self._flood(lab, grown, rx, ry)
            if region is not None:
                gc[region] = cv2.GC_BGD
            _disc(gc, rx, ry, r, cv2.GC_BGD)
        for x, y in pos:
            _disc(gc, *to_roi(x, y), r, cv2.GC_FGD)

        seg = None
        has_fg = np.any((gc == cv2.GC_PR_FGD) | (gc == cv2.GC_FGD))
        has_bg = np.any((gc == cv2.GC_BGD) | (gc == cv2.GC_PR_BGD))
        if has_fg and has_bg:
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            try:
                cv2.grabCut(crop, gc, None, bgd, fgd, p.iterations, cv2.GC_INIT_WITH_MASK)
                seg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
            except cv2.error:
                seg = None
        if seg is not None:
            seg = self._keep_component(
                seg, [to_roi(x, y) for x, y in pos], [to_roi(x, y) for x, y in neg], ((bx0 + bx1) / 2, (by0 + by1) / 2)
            )
        box_area = max(1.0, (bx1 - bx0) * (by1 - by0))
        collapsed = seg is None or np.count_nonzero(seg) < p.collapse_min * box_area

        pos_roi = [to_roi(x, y) for x, y in pos]
        neg_roi = [to_roi(x, y) for x, y in neg]
        if collapsed:
            # the colour evidence is useless: fall back to the box prior (minus whatever negative points exclude)
            learned = self._learned_prior(in_box, (bx0, by0, bx1, by1)) if box_given else None
            if learned is not None:  # the category's learned prior, both diagonals averaged
                out = learned[0] >= learned[1]
            else:
                out = self._box_prior(in_box, (bx0, by0, bx1, by1)) if box_given else in_box.copy()
            out8 = out.astype(np.uint8)
            for x, y in neg_roi:
                _disc(out8, x, y, r, 0)
            out = out8.astype(bool)
            score = 0.1 if box_given else 0.05
        elif p.shape_prior and box_given:
            out, score = self._shape_prior(seg, in_box, (bx0, by0, bx1, by1), pos_roi, neg_roi)
        else:
            out = seg
            score = mask_iou(seg, in_box) if box_given else 0.5
        full = np.zeros((h, w), bool)
        if scale > 1.0:
            small = cv2.resize(out.astype(np.uint8) * 255, (rx1 - rx0, ry1 - ry0), interpolation=cv2.INTER_AREA) >= 128
        elif scale < 1.0:  # mapped back with a smooth (bilinear) outline, not blocky nearest-neighbour steps
            small = cv2.resize(out.astype(np.uint8) * 255, (rx1 - rx0, ry1 - ry0), interpolation=cv2.INTER_LINEAR) >= 128
        else:
            small = out
        full[ry0:ry1, rx0:rx1] = small
        return full, float(np.clip(score, 0.0, 1.0))

    def _flood(self, lab: np.ndarray, allowed: np.ndarray, x: float, y: float) -> Optional[np.ndarray]:
        """Pixels of ``allowed`` connected to (x, y) within ``flood_tol`` Lab units of its colour; None if too big."""
        h, w = allowed.shape
        xi, yi = int(np.clip(np.floor(x), 0, w - 1)), int(np.clip(np.floor(y), 0, h - 1))
        if self.params.flood_tol <= 0 or not allowed[yi, xi]:
            return None
        ff = np.zeros((h + 2, w + 2), np.uint8)
        ff[1:-1, 1:-1][~allowed] = 1  # floodFill does not cross non-zero mask pixels
        tol = (self.params.flood_tol,) * 3
        flags = 4 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (2 << 8)
        cv2.floodFill(np.ascontiguousarray(lab), ff, (xi, yi), 0, tol, tol, flags)
        region = ff[1:-1, 1:-1] == 2
        if np.count_nonzero(region) > self.params.flood_max * np.count_nonzero(allowed):
            return None
        return region

    @staticmethod
    def _keep_component(seg: np.ndarray, pos_roi, neg_roi, centre) -> np.ndarray:
        n, lab, stats, _ = cv2.connectedComponentsWithStats(seg.astype(np.uint8), connectivity=8)
        # a component holding a negative point is what the user said is not the object
        for x, y in neg_roi:
            yi, xi = int(np.clip(np.floor(y), 0, seg.shape[0] - 1)), int(np.clip(np.floor(x), 0, seg.shape[1] - 1))
            if lab[yi, xi] > 0:
                seg = seg & (lab != lab[yi, xi])
        if n <= 2:
            return seg
        keep = set()
        for x, y in pos_roi:
            yi, xi = int(np.clip(round(y), 0, seg.shape[0] - 1)), int(np.clip(round(x), 0, seg.shape[1] - 1))
            if lab[yi, xi] > 0:
                keep.add(int(lab[yi, xi]))
        if not keep:
            # the component nearest the box centre, weighted by size
            ys, xs = np.mgrid[0 : seg.shape[0], 0 : seg.shape[1]]
            best, best_v = 1, -np.inf
            for k in range(1, n):
                if not seg[lab == k].any():
                    continue
                area = stats[k, cv2.CC_STAT_AREA]
                cy, cx = ys[lab == k].mean(), xs[lab == k].mean()
                d = np.hypot(cx - centre[0], cy - centre[1]) / max(1.0, np.sqrt(seg.size))
                v = area * (1.0 - d)
                if v > best_v:
                    best, best_v = k, v
            keep.add(best)
        return np.isin(lab, list(keep))

    def _box_prior(self, in_box: np.ndarray, broi) -> np.ndarray:
        """Pixels covered by at least ``prior_level`` of the rectangles that fit the box (box + inscribed ones)."""
        bx0, by0, bx1, by1 = broi
        acc = in_box.astype(np.float32)
        count = 1
        for aspect in self.params.aspects:
            for diag in (1, -1):
                pts = _inscribed_rect(bx1 - bx0, by1 - by0, aspect, diag)
                if pts is not None:
                    acc += _fill_poly(in_box.shape, pts + np.array([bx0, by0]))
                    count += 1
        return acc / count >= self.params.prior_level

    def _shape_prior(self, seg, in_box, broi, pos_roi, neg_roi) -> tuple[np.ndarray, float]:
        """Regularise the colour segmentation with what a box prompt implies about the object's shape.

        When the minimum-area rectangle of the segmentation explains the box (its bounding box has IoU ≥
        ``trust_iou`` with the prompt box) the segmentation found the whole object: return that rectangle.
        Otherwise it found a part (a bright roof, a shadow) and the box prior wins: the pixels covered by at
        least ``prior_level`` of the rectangles that fit the box (the box itself and rotated rectangles
        inscribed along either diagonal) — a box with its corners cut, as a car seen at an unknown angle is.
        """
        p = self.params
        shape = seg.shape
        prior = self._box_prior(in_box, broi)
        rect, bb = None, 0.0
        cnts, _ = cv2.findContours(seg.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if cnts:
            allpts = np.concatenate(cnts).reshape(-1, 2).astype(np.float32) + 0.5
            corners = cv2.boxPoints(cv2.minAreaRect(allpts))
            # shapes are fitted to the outline; small holes (windscreens, roof details) are noise, large ones
            # (the middle of a roundabout) are part of the object and are cut out again afterwards
            filled8 = np.zeros(shape, np.uint8)
            cv2.drawContours(filled8, cnts, -1, 1, -1)
            filled = filled8.astype(bool)
            holes = filled & ~seg
            big_holes = np.zeros(shape, bool)
            if holes.any():
                n_h, lab_h, st_h, _ = cv2.connectedComponentsWithStats(holes.astype(np.uint8), connectivity=4)
                for k in range(1, n_h):
                    if st_h[k, cv2.CC_STAT_AREA] >= p.hole_min * np.count_nonzero(filled):
                        big_holes |= lab_h == k
            rect = _fill_poly(shape, corners)
            fit = mask_iou(rect, filled)
            ell = _moment_ellipse(cnts, shape)
            if ell is not None:
                # round objects (tanks): an ellipse explains them better than a rectangle
                efit = mask_iou(ell, filled)
                if efit > fit:
                    rect, fit = ell, efit
            if fit < p.shape_fit:
                rect = filled  # neither shape explains the outline (an L-shaped building): keep it
            rect = rect & ~big_holes
            # did the segmentation find the whole object? Then its shape spans the prompt box
            ys, xs = np.nonzero(rect)
            if len(xs):
                bb = box_iou((xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0), broi)

        def eligible(c: np.ndarray) -> bool:
            def at(x: float, y: float) -> bool:
                return bool(c[int(np.clip(np.floor(y), 0, shape[0] - 1)), int(np.clip(np.floor(x), 0, shape[1] - 1))])

            return all(at(x, y) for x, y in pos_roi) and not any(at(x, y) for x, y in neg_roi)

        # learned shape prior of the category (annotate.priors): replaces the hand-made box prior and trims /
        # completes the trusted shape; a candidate that would contradict a click is not used
        learned = self._learned_prior(seg, broi)
        if learned is not None:
            prob, level = learned
            if rect is not None:
                trimmed = (rect & (prob >= p.learned_keep * level)) | (prob >= max(level, p.learned_add))
                rect = trimmed if trimmed.any() and eligible(trimmed) else rect
            prior = prob >= level
        if rect is not None and bb >= p.trust_iou and eligible(rect):
            return rect, float(bb * mask_iou(rect, seg))
        if eligible(prior):
            return prior, float(0.5 * bb * mask_iou(prior, seg))
        return seg, float(0.5 * mask_iou(seg, in_box))

    def _learned_prior(self, seg: Optional[np.ndarray], broi) -> Optional[tuple[np.ndarray, float]]:
        """The category's learned prior over the ROI (0 outside the box) and its calibrated level; None without one.

        Rotation-aware: the template is flipped to the box diagonal the colour segmentation runs along (both
        orientations averaged when the segmentation has none).
        """
        prior = self.priors.get(self._category) if self.priors is not None else None
        if prior is None:
            return None
        shape = seg.shape if seg is not None else None
        assert shape is not None
        bx0, by0, bx1, by1 = broi
        ix0, iy0 = int(np.clip(round(bx0), 0, shape[1] - 1)), int(np.clip(round(by0), 0, shape[0] - 1))
        ix1, iy1 = int(np.clip(round(bx1), ix0 + 1, shape[1])), int(np.clip(round(by1), iy0 + 1, shape[0]))
        d = diagonal_of(seg[iy0:iy1, ix0:ix1])
        bw, bh = ix1 - ix0, iy1 - iy0
        prob = prior.probability(bw, bh, d) if d else (prior.probability(bw, bh, 1) + prior.probability(bw, bh, -1)) / 2
        full = np.zeros(shape, np.float32)
        full[iy0:iy1, ix0:ix1] = prob
        return full, prior.level
