"""Geometry every stage shares: mask and box IoU, box validation and clipping, box spellings, RGB normalisation.

Why one module: the engine, the annotation-tool adapter and the backend all compare masks, convert
percent-of-image rectangles to pixels and back, and normalise images to RGB. Several copies of that arithmetic
drifted apart once (a float image in [0, 1] was scaled in one place and not in another); here each rule exists
once and is tested once.

Conventions (as in ``annotate.types``): boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates of the
full image, x to the right and y down; COCO boxes are ``(x, y, w, h)``; percent boxes and points
(``{x, y, width, height}`` / ``{x, y}``, the spelling of annotation tools such as Label Studio) are in **percent**
of the original image size.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from annotate.types import Box, Point


class BoxError(ValueError):
    """A box that is malformed (not four finite numbers), empty, or outside the image."""


# --------------------------------------------------------------------------------------------------------------
# IoU
# --------------------------------------------------------------------------------------------------------------


def as_bool_mask(mask: np.ndarray, what: str = "mask") -> np.ndarray:
    """``mask`` as a bool (H, W) array (any non-zero value is foreground); ``ValueError`` naming ``what`` if not 2-D."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (H, W) mask, got shape {arr.shape}")
    return arr if arr.dtype == bool else arr != 0


def mask_intersection_union(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Pixel counts ``(|a ∩ b|, |a ∪ b|)`` of two masks of the same shape; any non-zero value is foreground."""
    p = as_bool_mask(a, "prediction")
    g = as_bool_mask(b, "ground truth")
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground-truth shape {g.shape}")
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks of the same shape; **0.0 when both are empty** (the RRSIS evaluation convention)."""
    inter, union = mask_intersection_union(a, b)
    return inter / union if union else 0.0


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


# --------------------------------------------------------------------------------------------------------------
# Boxes: validation, clipping, spellings
# --------------------------------------------------------------------------------------------------------------


def clip_box(box: Sequence[float], width: int, height: int) -> Box:
    """Validate ``box`` and clip it to a ``width``×``height`` image.

    Raises ``BoxError`` (a ``ValueError``) when the box is not four finite numbers, is empty (x1 ≤ x0 or
    y1 ≤ y0), or keeps less than one pixel inside the image (nothing to segment there).
    """
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise BoxError(f"box {box!r} is not four numbers (x0, y0, x1, y1)") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise BoxError(f"box {box!r} is not four finite numbers (x0, y0, x1, y1)")
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise BoxError(f"box {tuple(values)} is empty (zero or negative width/height); expected x0 < x1 and y0 < y1")
    cx0, cy0 = min(max(x0, 0.0), float(width)), min(max(y0, 0.0), float(height))
    cx1, cy1 = min(max(x1, 0.0), float(width)), min(max(y1, 0.0), float(height))
    if cx1 - cx0 < 1.0 or cy1 - cy0 < 1.0:
        raise BoxError(f"box {tuple(values)} lies outside the {width}×{height} image")
    return (cx0, cy0, cx1, cy1)


def xywh_to_xyxy(box: Sequence[float]) -> Box:
    """COCO ``(x, y, w, h)`` → ``(x0, y0, x1, y1)``."""
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


def xyxy_to_xywh(box: Sequence[float]) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` → COCO ``(x, y, w, h)``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0, y0, x1 - x0, y1 - y0)


def mask_box(mask: np.ndarray) -> Box | None:
    """The tight ``(x0, y0, x1, y1)`` box of a mask's foreground on pixel edges (a pixel at (3, 4) gives
    ``(3, 4, 4, 5)``), or None for an empty mask."""
    m = as_bool_mask(mask, "mask")
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def percent_to_pixels_box(value: dict, width: float, height: float) -> Box:
    """A percent rectangle ``{x, y, width, height}`` (percent of the image) → pixel ``(x0, y0, x1, y1)``.

    Raises ``BoxError`` naming the value when a field is missing or not a finite number.
    """
    try:
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    except (KeyError, TypeError, ValueError):
        raise BoxError(f"rectangle {value!r} is not {{x, y, width, height}} in percent of the image") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise BoxError(f"rectangle {value!r} has a non-finite coordinate")
    x0, y0 = x * width / 100.0, y * height / 100.0
    return (x0, y0, x0 + w * width / 100.0, y0 + h * height / 100.0)


def pixels_to_percent_box(box: Sequence[float], width: float, height: float) -> dict[str, float]:
    """Pixel ``(x0, y0, x1, y1)`` → a percent rectangle ``{x, y, width, height}``.

    Raises ``BoxError`` for a non-finite box or a non-positive image size: annotation frontends draw a NaN
    coordinate as a broken shape, so none may ever be emitted.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (width > 0 and height > 0):
        raise BoxError(f"image size {width}×{height} is not positive")
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise BoxError(f"box {(x0, y0, x1, y1)} has a non-finite coordinate")
    return {"x": 100.0 * x0 / width, "y": 100.0 * y0 / height,
            "width": 100.0 * (x1 - x0) / width, "height": 100.0 * (y1 - y0) / height}


def percent_to_pixels_point(value: dict, width: float, height: float) -> Point:
    """A percent point ``{x, y}`` (percent of the image) → pixel ``(x, y)``."""
    try:
        x, y = float(value["x"]), float(value["y"])
    except (KeyError, TypeError, ValueError):
        raise BoxError(f"keypoint {value!r} is not {{x, y}} in percent of the image") from None
    return (x * width / 100.0, y * height / 100.0)


def pixels_to_percent_point(point: Sequence[float], width: float, height: float) -> dict[str, float]:
    """Pixel ``(x, y)`` → a percent point ``{x, y}``."""
    return {"x": 100.0 * float(point[0]) / width, "y": 100.0 * float(point[1]) / height}


# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a contiguous H×W×3 uint8 RGB array.

    Grayscale (H×W or H×W×1) is repeated to three channels, an alpha (or any extra) channel is dropped, floats
    in [0, 1] are scaled to [0, 255], other dtypes are clipped to [0, 255] (NaN → 0). Raises ``ValueError`` for
    anything that is not an image.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] >= 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"expected an H×W×3 RGB image, got an array of shape {np.asarray(image).shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr.astype(np.float64)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)
