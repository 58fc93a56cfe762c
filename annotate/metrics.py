"""Referring-segmentation metrics as the RRSIS literature reports them (RRSIS-D, RMSIN, PSLG-SAM).

* ``iou``: intersection over union of two boolean masks, **0 when the union is empty** (the convention of the
  LAVT / RMSIN evaluation code: an empty prediction for an empty target scores 0, not 1).
* mIoU: the mean of per-sample IoUs; oIoU (overall IoU): cumulative intersection over cumulative union
  (``Σ∩ / Σ∪``), which weights large objects more; Pr@X: the fraction of samples whose IoU is **≥ X**, for
  X in 0.5, 0.6, 0.7, 0.8, 0.9.
* Two protocols: ``"native"`` compares the masks at the image's own resolution; ``"480"`` first resizes the
  prediction and the ground truth to 480×480 with nearest-neighbour sampling, as the RRSIS-D models do at test
  time (they evaluate at their 480×480 input size). Numbers are only comparable within one protocol.

Generalized expressions (gRefCOCO, NWPU-Refer: one expression naming several objects or none) are scored by
``generalized_metrics``: gIoU, cIoU, N-acc and T-acc, where an empty answer to a no-target expression is right.

Boxes are ``(x0, y0, x1, y1)`` in pixels (``annotate.types.Box``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from annotate.geometry import as_bool_mask
# ``iou`` and ``box_iou`` are the metric names users import from here; the arithmetic lives in annotate.geometry
from annotate.geometry import box_iou, mask_intersection_union as intersection_union, mask_iou as iou  # noqa: F401

#: The thresholds of the Pr@X columns of RRSIS papers.
PRECISION_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
#: The evaluation size of the ``"480"`` protocol, ``(height, width)``.
PROTOCOL_480_SIZE: tuple[int, int] = (480, 480)


def resize_mask(mask: np.ndarray, size: tuple[int, int] = PROTOCOL_480_SIZE) -> np.ndarray:
    """Nearest-neighbour resize of a mask to ``size = (height, width)``; returns bool.

    PIL's ``Image.NEAREST`` does the sampling because it *is* the reference: the RRSIS-D models (LAVT, RMSIN)
    resize their targets with it. PIL accumulates the source step in floating point, so a closed formula such as
    ``floor((dst + 0.5) · src / dst)`` picks a different row or column for 28 of 480 indices when the side is
    512 or 1024, enough to move Pr@0.9 by 1.5 points. OpenCV's ``INTER_NEAREST`` differs as well.
    """
    from PIL import Image

    m = as_bool_mask(mask, "mask")
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"target size must be positive, got {size}")
    if m.shape == (h, w):
        return m.copy()
    if m.size == 0:
        raise ValueError("cannot resize an empty (0-pixel) mask")
    resized = Image.fromarray(m.astype(np.uint8)).resize((w, h), Image.NEAREST)
    return np.asarray(resized) != 0


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


# ---------------------------------------------------------------------------------------- generalized (gRefCOCO)
@dataclass
class GeneralizedScores:
    """The generalized referring-segmentation scores of gRefCOCO (GRES), all in [0, 1].

    * ``giou``: the mean per-expression IoU, where a no-target expression answered with an empty mask scores
      **1** (right) and one answered with any pixel scores 0; a target expression scores its IoU.
    * ``ciou``: cumulative intersection over cumulative union over every expression (no-target ones add only
      their false-positive pixels to the union; 1 when nothing was predicted and nothing was there).
    * ``n_acc``: of the no-target expressions, the share answered with an empty mask (None when there is none).
    * ``t_acc``: of the target expressions, the share answered with a non-empty mask (None when there is none).
    """

    giou: float
    ciou: float
    n_acc: float | None
    t_acc: float | None
    n: int
    n_no_target: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {"gIoU": self.giou, "cIoU": self.ciou, "N-acc": self.n_acc, "T-acc": self.t_acc, "n": self.n,
                "no_target": self.n_no_target}


def generalized_metrics(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> GeneralizedScores:
    """gIoU, cIoU, N-acc and T-acc of paired predictions and ground truths (native resolution).

    A ground truth without any pixel is a no-target expression (why the RRSIS ``iou`` cannot be reused: it
    scores an empty answer to an empty truth 0, which is exactly the right answer here). A multi-object truth
    is the union of its objects' masks, as gRefCOCO evaluates it.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground truths")
    if len(preds) == 0:
        raise ValueError("no samples to score")
    ious = np.empty(len(preds), dtype=np.float64)
    cum_inter = cum_union = 0
    true_negative = no_target = true_positive = target = 0
    for k, (p, g) in enumerate(zip(preds, gts)):
        p = as_bool_mask(p, "prediction")
        g = as_bool_mask(g, "ground truth")
        inter, union = intersection_union(p, g)
        cum_inter += inter
        cum_union += union
        if not g.any():
            no_target += 1
            empty = not p.any()
            true_negative += int(empty)
            ious[k] = 1.0 if empty else 0.0
        else:
            target += 1
            true_positive += int(bool(p.any()))
            ious[k] = inter / union
    return GeneralizedScores(
        giou=float(ious.mean()),
        ciou=cum_inter / cum_union if cum_union else 1.0,
        n_acc=true_negative / no_target if no_target else None,
        t_acc=true_positive / target if target else None,
        n=len(preds),
        n_no_target=no_target,
    )
