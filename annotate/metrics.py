"""Referring-segmentation metrics as the RRSIS literature reports them (RRSIS-D, RMSIN, PSLG-SAM).

* ``iou``: intersection over union of two boolean masks, **0 when the union is empty** (the convention of the
  LAVT / RMSIN evaluation code: an empty prediction for an empty target scores 0, not 1).
* mIoU: the mean of per-sample IoUs; oIoU (overall IoU): cumulative intersection over cumulative union
  (``Σ∩ / Σ∪``), which weights large objects more; Pr@X: the fraction of samples whose IoU is **≥ X**, for
  X in 0.5, 0.6, 0.7, 0.8, 0.9.
* Two protocols: ``"native"`` compares the masks at the image's own resolution; ``"480"`` first resizes the
  prediction and the ground truth to 480×480 with nearest-neighbour sampling, as the RRSIS-D models do at test
  time (they evaluate at their 480×480 input size). Numbers are only comparable within one protocol.

Boxes are ``(x0, y0, x1, y1)`` in pixels (``annotate.types.Box``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

#: The thresholds of the Pr@X columns of RRSIS papers.
PRECISION_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
#: The evaluation size of the ``"480"`` protocol, ``(height, width)``.
PROTOCOL_480_SIZE: tuple[int, int] = (480, 480)


def _as_bool(mask: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D mask, got shape {arr.shape}")
    return arr if arr.dtype == bool else arr != 0


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Pixel counts ``(|pred ∩ gt|, |pred ∪ gt|)``; any non-zero value counts as foreground."""
    p = _as_bool(pred, "prediction")
    g = _as_bool(gt, "ground truth")
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground-truth shape {g.shape}")
    inter = int(np.count_nonzero(p & g))
    union = int(np.count_nonzero(p | g))
    return inter, union


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two masks of the same shape; 0.0 when both are empty (the RRSIS convention)."""
    inter, union = intersection_union(pred, gt)
    return inter / union if union else 0.0


def resize_mask(mask: np.ndarray, size: tuple[int, int] = PROTOCOL_480_SIZE) -> np.ndarray:
    """Nearest-neighbour resize of a mask to ``size = (height, width)``; returns bool.

    Each target pixel takes the source pixel under its centre, ``src = floor((dst + 0.5) · src_len / dst_len)``,
    which is what PIL's ``Image.NEAREST`` does (the torchvision transforms of the RRSIS-D models use it; the
    tests check equality with PIL). OpenCV's ``INTER_NEAREST`` is shifted by half a pixel and even
    ``INTER_NEAREST_EXACT`` differs from PIL on some odd sizes, so the index arithmetic is done here.
    """
    m = _as_bool(mask, "mask")
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"target size must be positive, got {size}")
    if m.shape == (h, w):
        return m.copy()
    if m.size == 0:
        raise ValueError("cannot resize an empty (0-pixel) mask")
    src_h, src_w = m.shape
    rows = np.minimum(((np.arange(h) + 0.5) * (src_h / h)).astype(np.intp), src_h - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * (src_w / w)).astype(np.intp), src_w - 1)
    return m[rows[:, None], cols[None, :]]


@dataclass
class RRSISScores:
    """mIoU, oIoU and Pr@X over ``n`` samples (all in [0, 1])."""

    miou: float
    oiou: float
    precision: dict[float, float] = field(default_factory=dict)
    n: int = 0

    def as_dict(self) -> dict[str, float | int]:
        """Flat dict with the usual column names (``mIoU``, ``oIoU``, ``Pr@0.5`` …, ``n``)."""
        out: dict[str, float | int] = {"mIoU": self.miou, "oIoU": self.oiou}
        for t, v in sorted(self.precision.items()):
            out[f"Pr@{t:g}"] = v
        out["n"] = self.n
        return out


def rrsis_scores(
    preds: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    protocol: Literal["native", "480"] = "native",
) -> RRSISScores:
    """mIoU, oIoU and Pr@0.5…0.9 of paired predictions and ground truths.

    ``protocol="480"`` resizes both masks of each pair to 480×480 (nearest) before counting, so oIoU then
    weights every sample by its area at 480×480 rather than at native size.
    """
    if protocol not in ("native", "480"):
        raise ValueError(f"protocol must be 'native' or '480', got {protocol!r}")
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground truths")
    if len(preds) == 0:
        raise ValueError("no samples to score")
    ious = np.empty(len(preds), dtype=np.float64)
    cum_inter = 0
    cum_union = 0
    for k, (p, g) in enumerate(zip(preds, gts)):
        if protocol == "480":
            p = resize_mask(p, PROTOCOL_480_SIZE)
            g = resize_mask(g, PROTOCOL_480_SIZE)
        inter, union = intersection_union(p, g)
        ious[k] = inter / union if union else 0.0
        cum_inter += inter
        cum_union += union
    precision = {t: float(np.mean(ious >= t)) for t in PRECISION_THRESHOLDS}
    return RRSISScores(
        miou=float(ious.mean()),
        oiou=cum_inter / cum_union if cum_union else 0.0,
        precision=precision,
        n=len(preds),
    )


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` boxes in continuous pixel coordinates; 0.0 when the union is empty."""
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    area_a = max(0.0, ax1 - ax0) * max(0.0, ay1 - ay0)
    area_b = max(0.0, bx1 - bx0) * max(0.0, by1 - by0)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0
