"""CFPG — the clustering-based foreground point generator of PSLG-SAM.

A box alone leaves SAM unsure *which* thing in the box is meant (a car or the car park around it); one positive
point inside the object fixes that. The point must land on the object, never in a hole or on background, so:
k-means (k=2) in Lab colour on the box crop; the foreground cluster is the one under-represented on the crop's
border (background surrounds the object); touching blobs are split by a distance transform + watershed; among
regions above an area threshold the most convex one (area / convex-hull area) wins — objects are compact,
clutter is not; its centroid is returned, or, when the centroid falls outside the region (a ring, a bent
shape), the region's innermost pixel (the maximum of its distance transform).
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from annotate.types import Box, Point


def kmeans_foreground(lab: np.ndarray, valid: np.ndarray, attempts: int = 2, seed: int = 0) -> Optional[np.ndarray]:
    """Split the ``valid`` pixels of ``lab`` (H×W×C) into two colour clusters; return the foreground one as a mask.

    K-means++ initialisation, ``attempts`` restarts. Foreground = the cluster under-represented on the border of
    ``valid``'s bounding box, relative to its overall share. None when the region is too small or uniform.
    """
    ys, xs = np.nonzero(valid)
    if len(ys) < 8:
        return None
    data = lab[ys, xs].reshape(len(ys), -1).astype(np.float32)
    if float(data.std(axis=0).max()) < 1e-3:
        return None
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(seed)
    _, labels, _ = cv2.kmeans(data, 2, None, criteria, attempts, cv2.KMEANS_PP_CENTERS)
    labels = labels.ravel()
    lab_img = np.full(valid.shape, -1, np.int8)
    lab_img[ys, xs] = labels
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    border = np.concatenate(
        [lab_img[y0, x0 : x1 + 1], lab_img[y1, x0 : x1 + 1], lab_img[y0 : y1 + 1, x0], lab_img[y0 : y1 + 1, x1]]
    )
    border = border[border >= 0]
    share = np.array([(labels == k).mean() for k in (0, 1)])
    if share.min() == 0:
        return None
    bshare = np.array([(border == k).mean() if len(border) else share[k] for k in (0, 1)])
    fg = int(np.argmin(bshare / share))
    return lab_img == fg


def _regions(fg: np.ndarray, crop: np.ndarray, split_ratio: float) -> np.ndarray:
    """Label image of ``fg`` with touching blobs split by distance transform + watershed (0 = not foreground)."""
    fg8 = fg.astype(np.uint8)
    dist = cv2.distanceTransform(fg8, cv2.DIST_L2, 3)
    n_cc, cc = cv2.connectedComponents(fg8, connectivity=8)
    if n_cc <= 1:
        return cc
    # markers: the cores of each blob (distance above a share of that component's own maximum)
    sure = np.zeros_like(fg8)
    for k in range(1, n_cc):
        comp = cc == k
        dmax = float(dist[comp].max())
        sure[comp & (dist >= split_ratio * dmax)] = 1
    n_m, markers = cv2.connectedComponents(sure, connectivity=8)
    if n_m - 1 <= n_cc - 1:
        return cc  # nothing to split
    markers = markers + 1  # background = 1, cores = 2..n
    markers[(fg8 == 1) & (sure == 0)] = 0  # unknown: let watershed decide
    markers = cv2.watershed(np.ascontiguousarray(crop), markers.astype(np.int32))
    out = np.where(markers > 1, markers - 1, 0)
    out[~fg] = 0
    return out


def foreground_point(
    image: np.ndarray,
    box: Box,
    *,
    min_area: float = 0.2,
    split_ratio: float = 0.5,
    max_side: int = 96,
    attempts: int = 2,
    seed: int = 0,
) -> Optional[Point]:
    """A positive point ``(x, y)`` (image pixels) on the object in ``box``, or None when the box has no clear one.

    ``min_area``: regions below this share of the box area are ignored (noise, specks). ``split_ratio``: a blob
    core is where the distance to the blob's edge exceeds this share of the blob's maximum (watershed markers).
    ``max_side``: larger crops are downscaled first (the point needs no sub-pixel precision; time stays flat).
    """
    h, w = image.shape[:2]
    x0, y0 = int(np.floor(max(0.0, box[0]))), int(np.floor(max(0.0, box[1])))
    x1, y1 = int(np.ceil(min(float(w), box[2]))), int(np.ceil(min(float(h), box[3])))
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None
    crop = np.ascontiguousarray(image[y0:y1, x0:x1, :3])
    if crop.ndim != 3:
        return None
    scale = min(1.0, max_side / max(crop.shape[:2]))
    if scale < 1.0:
        crop = cv2.resize(crop, (max(3, round(crop.shape[1] * scale)), max(3, round(crop.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    ch, cw = crop.shape[:2]
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB)
    fg = kmeans_foreground(lab, np.ones((ch, cw), bool), attempts=attempts, seed=seed)
    if fg is None or not fg.any():
        return None
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8)).astype(bool) if fg.sum() > 16 else fg
    if not fg.any():
        return None
    labels = _regions(fg, crop, split_ratio)
    best: Optional[tuple[float, int, int]] = None
    min_px = min_area * ch * cw
    ids = [int(k) for k in np.unique(labels) if k > 0]
    areas = {k: int(np.count_nonzero(labels == k)) for k in ids}
    big = [k for k in ids if areas[k] >= min_px] or ([max(ids, key=areas.get)] if ids else [])
    for k in big:
        region = (labels == k).astype(np.uint8)
        cnts, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        hull_area = cv2.contourArea(cv2.convexHull(np.concatenate(cnts))) if cnts else 0.0
        convexity = areas[k] / max(hull_area, float(areas[k]), 1.0)
        cand = (convexity, areas[k], k)
        if best is None or cand[:2] > best[:2]:
            best = cand
    if best is None:
        return None
    region = labels == best[2]
    ys, xs = np.nonzero(region)
    cx, cy = float(xs.mean()), float(ys.mean())
    ix, iy = int(round(cx)), int(round(cy))
    dist = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    inside = 0 <= iy < ch and 0 <= ix < cw and region[iy, ix] and dist[iy, ix] >= min(2.0, float(dist.max()) * 0.5)
    if not inside:
        # concave region (ring, bent shape): its innermost pixel, nearest the centroid among equals
        peak = dist >= dist.max() * 0.9
        pys, pxs = np.nonzero(peak & region)
        j = int(np.argmin((pxs - cx) ** 2 + (pys - cy) ** 2))
        cx, cy = float(pxs[j]), float(pys[j])
    # back to image pixels (pixel centres)
    return (x0 + (cx + 0.5) / scale, y0 + (cy + 0.5) / scale)
