"""Label Studio polygon regions → masks, so polygon projects export through the same path as brush masks.

A polygon value is ``{"points": [[x%, y%], ...], "closed": true, "polygonlabels": [label]}`` with points in
percent of the image on pixel edges (what ``regions.polygon_regions`` writes and the frontend draws). Percent
points do not depend on the image size Label Studio saw, so the mask is drawn on the size of the image file.
Rasterised with pycocotools (``annotate.polygons.outlines_to_mask``): a bridged hole ("keyhole" ring) stays
empty, and a polygon drawn by hand that crosses itself is filled by the even-odd rule, as COCO tools do.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from annotate.polygons import outlines_to_mask
from converters.labelstudio.schema import LabelSchema
from converters.model import Report


def polygon_mask(value: dict[str, Any], width: int, height: int) -> np.ndarray:
    """The bool ``(height, width)`` mask of a polygon value; ``ValueError`` says what is wrong with it."""
    points = value.get("points") if isinstance(value, dict) else None
    if not isinstance(points, list) or len(points) < 3:
        raise ValueError("polygon has fewer than 3 points")
    try:
        pts = [(float(p[0]), float(p[1])) for p in points]
    except (TypeError, ValueError, IndexError, KeyError):
        raise ValueError("polygon points are not [x, y] pairs of numbers") from None
    if not all(math.isfinite(v) for p in pts for v in p):
        raise ValueError("polygon has a non-finite point")
    ring = np.array(pts, dtype=np.float64) * np.array([width / 100.0, height / 100.0])
    return outlines_to_mask([ring], height, width)


def accepts_polygon(schema: LabelSchema, from_name: Any) -> bool:
    """Polygons of the config's PolygonLabels (any polygon when the config names none)."""
    return not schema.polygon_name or from_name == schema.polygon_name


def read_polygon_region(region: dict, data: dict, schema: LabelSchema, width: int, height: int, report: Report,
                        where: str) -> Optional[tuple[np.ndarray, str]]:
    """``(mask, label)`` of one ``polygonlabels`` result, or None after reporting the problem at ``where``."""
    value = region.get("value") or {}
    labels = value.get("polygonlabels") or []
    label = labels[0] if labels else data.get("category")
    if not label:
        report.error(where, "polygon region without a label")
        return None
    known = None if schema.labels is None else set(schema.labels) | set(schema.polygon_labels)
    if known is not None and label not in known:
        report.error(where, f"unknown label {label!r} (not in the labeling config)")
        return None
    try:
        mask = polygon_mask(value, width, height)
    except ValueError as exc:
        report.error(where, str(exc))
        return None
    if not mask.any():
        report.error(where, "polygon encloses no pixel")
        return None
    return mask, str(label)
