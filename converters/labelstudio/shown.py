"""The mask an annotator is correcting, read from what Label Studio sends with an interactive request.

Why: when the annotator clicks with the smart keypoint, Label Studio's ``context.result`` holds only the
keypoints of that session: no rectangle, no pre-label. But the task itself travels with the request, with the
requesting user's ``drafts``, the task's ``annotations`` and its ``predictions``. The newest of these that holds
a mask is what the annotator sees, so the clicks refine that mask instead of segmenting from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from annotate.geometry import percent_to_pixels_box
from annotate.types import Box, Point
from converters.labelstudio.schema import LabelSchema


@dataclass
class ShownRegion:
    """One mask of a task as Label Studio shows it, with the region id that names it in the annotation."""

    mask: np.ndarray
    #: The brush/polygon region's id: an answer carrying this id replaces the region when the annotator accepts it.
    region_id: Optional[str]
    label: Optional[str]
    #: The rectangle that belongs to the mask (nested under it, or the only one of that result), if any.
    box: Optional[Box]
    #: ``draft``, ``annotation`` or ``prediction``: where the mask was read.
    source: str


def _when(item: dict) -> str:
    return str(item.get("updated_at") or item.get("created_at") or "")


def _results_newest_first(task: dict, model_version: Optional[str]) -> Iterator[tuple[str, list]]:
    """(source, result list) of the requesting user's drafts, then annotations, then predictions, newest first.

    Predictions of ``model_version`` (the one the backend serves) come before other versions' predictions.
    """
    for source in ("drafts", "annotations"):
        items = [i for i in (task.get(source) or []) if isinstance(i, dict) and not i.get("was_cancelled")]
        for item in sorted(items, key=_when, reverse=True):
            if isinstance(item.get("result"), list):
                yield source[:-1], item["result"]
    preds = [p for p in (task.get("predictions") or []) if isinstance(p, dict) and isinstance(p.get("result"), list)]
    preds.sort(key=lambda p: (p.get("model_version") == model_version, _when(p), str(p.get("id") or "")), reverse=True)
    for pred in preds:
        yield "prediction", pred["result"]


def _region_mask(region: dict, schema: LabelSchema, width: int, height: int) -> Optional[tuple[np.ndarray, Optional[str]]]:
    """(mask, label) of a brush or polygon region drawn on an image of this size; None for anything else."""
    from converters.labelstudio.brush import brush_rle_decode
    from converters.labelstudio.polygons import polygon_mask

    rtype = str(region.get("type", "")).lower()
    value = region.get("value") if isinstance(region.get("value"), dict) else {}
    ow, oh = region.get("original_width"), region.get("original_height")
    if (ow is not None and int(ow) != width) or (oh is not None and int(oh) != height):
        return None  # drawn on another rendition of the image: its pixels do not line up with ours
    if rtype == "brushlabels" and schema.accepts_brush(region.get("from_name")):
        if value.get("format", "rle") != "rle" or not value.get("rle"):
            return None
        labels = value.get("brushlabels") or []
        return brush_rle_decode(value["rle"], height, width), (labels[0] if labels else None)
    if rtype == "polygonlabels":
        labels = value.get("polygonlabels") or []
        return polygon_mask(value, width, height), (labels[0] if labels else None)
    return None


def _nearest(masks: Sequence[np.ndarray], points: Sequence[Point]) -> int:
    """Index of the mask the clicks are about: the one under the first click, else the one nearest to it."""
    if not points or len(masks) == 1:
        return 0
    x, y = points[0]
    h, w = masks[0].shape
    xi, yi = int(np.clip(np.floor(x), 0, w - 1)), int(np.clip(np.floor(y), 0, h - 1))
    for i, m in enumerate(masks):
        if m[yi, xi]:
            return i

    def distance(m: np.ndarray) -> float:
        ys, xs = np.nonzero(m)
        return float(np.min(np.hypot(xs + 0.5 - x, ys + 0.5 - y))) if xs.size else float("inf")

    return int(np.argmin([distance(m) for m in masks]))


def shown_region(task: dict, schema: LabelSchema, width: int, height: int, points: Sequence[Point] = (),
                 model_version: Optional[str] = None) -> Optional[ShownRegion]:
    """The mask the annotator sees for ``task`` (the one the clicks at ``points`` are about), or None.

    Regions that cannot be read (a malformed RLE, a polygon of another image size) are skipped: the request is
    still answered, from the next source or from the box alone.
    """
    for source, result in _results_newest_first(task, model_version):
        found: list[tuple[dict, np.ndarray, Optional[str]]] = []
        rects: list[dict] = []
        for region in result:
            if not isinstance(region, dict):
                continue
            if str(region.get("type", "")).lower() == "rectanglelabels":
                rects.append(region)
                continue
            try:
                read = _region_mask(region, schema, width, height)
            except (ValueError, TypeError, KeyError):
                continue
            if read is not None and read[0].any():
                found.append((region, read[0], read[1]))
        if not found:
            continue
        region, mask, label = found[_nearest([m for _, m, _ in found], points)]
        rid = region.get("id")
        box = None
        owned = [r for r in rects if rid is not None and r.get("parentID") == rid] or (rects if len(found) == 1 else [])
        if len(owned) == 1:
            try:
                box = percent_to_pixels_box(owned[0].get("value") or {}, width, height)
            except (ValueError, TypeError):
                box = None
        return ShownRegion(mask=mask, region_id=str(rid) if rid is not None else None, label=label, box=box,
                           source=source)
    return None


def requesting_user(task: dict) -> Optional[Any]:
    """The user an interactive request comes from, when Label Studio's payload says (its drafts are that user's)."""
    for draft in task.get("drafts") or []:
        if isinstance(draft, dict) and draft.get("user") is not None:
            return draft["user"]
    return None
