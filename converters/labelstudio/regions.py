"""Label Studio result regions (brush, rectangle, relation, TextArea, the "no target" choice) built from masks,
boxes and texts.

One builder per region kind, used by every producer of regions: the backend's predictions, the importer's
pre-annotated tasks and the synthetic export. Label Studio reads rectangles in percent of the original image
size; the conversion is ``annotate.geometry.pixels_to_percent_box``, which refuses non-finite numbers (the
frontend draws a NaN coordinate as a broken shape).
"""

from __future__ import annotations

import uuid
from typing import Any, Optional, Sequence

from annotate.geometry import mask_box, pixels_to_percent_box
from annotate.polygons import DEFAULT_POLYGON_TOLERANCE, Tolerance
from annotate.types import Box
from converters.labelstudio.schema import LabelSchema


def new_region_id() -> str:
    """A fresh region id, short like the ones Label Studio's frontend makes."""
    return uuid.uuid4().hex[:10]


def _region(kind: str, value: dict, width: int, height: int, *, from_name: str, to_name: str,
            region_id: Optional[str], score: Optional[float]) -> dict:
    """The envelope every image region shares: control names, original size, optional id and score."""
    region: dict[str, Any] = {"type": kind, "from_name": from_name, "to_name": to_name, "original_width": int(width),
                              "original_height": int(height), "image_rotation": 0, "value": value}
    if region_id is not None:
        region["id"] = region_id
    if score is not None:
        region["score"] = float(score)
    return region


def brush_region(mask: Any, label: Optional[str], *, from_name: str = "tag", to_name: str = "image",
                 region_id: Optional[str] = None, score: Optional[float] = None) -> dict:
    """A Label Studio brush result for a bool mask; ``brushlabels`` holds ``label`` (empty when it is None)."""
    from converters.labelstudio.brush import brush_rle_encode

    h, w = mask.shape
    value = {"format": "rle", "rle": [int(v) for v in brush_rle_encode(mask)], "brushlabels": [label] if label else []}
    return _region("brushlabels", value, w, h, from_name=from_name, to_name=to_name, region_id=region_id, score=score)


def rectangle_region(box: Box, width: int, height: int, label: Optional[str], *, from_name: str,
                     to_name: str = "image", region_id: Optional[str] = None, score: Optional[float] = None) -> dict:
    """A Label Studio rectangle result for a pixel ``(x0, y0, x1, y1)`` box on a ``width``×``height`` image."""
    value = {**pixels_to_percent_box(box, width, height), "rotation": 0, "rectanglelabels": [label] if label else []}
    return _region("rectanglelabels", value, width, height, from_name=from_name, to_name=to_name,
                   region_id=region_id, score=score)


def polygon_regions(mask: Any, label: Optional[str], *, from_name: str, to_name: str = "image",
                    tolerance: "float | str | Tolerance" = DEFAULT_POLYGON_TOLERANCE,
                    score: Optional[float] = None) -> list[dict]:
    """Label Studio polygon results outlining a bool mask: one per connected piece, largest first.

    Label Studio polygons have no holes: large holes are bridged into the ring, small ones filled, specks
    dropped (``annotate.polygons.mask_outlines``, which also documents the ``tolerance`` of the simplification).
    Points are ``[x, y]`` in percent of the image on pixel edges, as Label Studio stores them.
    """
    from annotate.polygons import mask_outlines

    h, w = mask.shape
    regions: list[dict] = []
    for ring in mask_outlines(mask, tolerance):
        points = [[100.0 * float(x) / w, 100.0 * float(y) / h] for x, y in ring]
        value = {"points": points, "closed": True, "polygonlabels": [label] if label else []}
        regions.append(_region("polygonlabels", value, w, h, from_name=from_name, to_name=to_name,
                               region_id=new_region_id(), score=score))
    return regions


def relation_region(from_id: str, to_id: str) -> dict:
    """A relation between two regions of the same result (shown as an arrow ``from → to``)."""
    return {"type": "relation", "from_id": from_id, "to_id": to_id, "direction": "right"}


def no_target_region(schema: LabelSchema, score: Optional[float] = None) -> dict:
    """The generalized config's "no target" choice: the expression names nothing in the image."""
    region = {"id": new_region_id(), "type": "choices", "from_name": schema.no_target_name or "target",
              "to_name": schema.image_name, "value": {"choices": [schema.no_target_value]}}
    if score is not None:
        region["score"] = float(score)
    return region


def textarea_region(texts: Sequence[str], region_id: str, *, from_name: str = "expression",
                    to_name: str = "image") -> dict:
    """A TextArea result; with a per-region TextArea, ``region_id`` is the id of the region it belongs to."""
    return {"id": region_id, "type": "textarea", "from_name": from_name, "to_name": to_name,
            "value": {"text": list(texts)}}


def prediction_regions(schema: LabelSchema, mask: Any, label: Optional[str], score: float, *,
                       box: Optional[Box] = None, box_score: Optional[float] = None,
                       expression: Optional[str] = None,
                       tolerance: "float | str | Tolerance" = DEFAULT_POLYGON_TOLERANCE) -> list[dict]:
    """The regions of one predicted object, named as ``schema`` says.

    The mask as ``schema.shape`` asks: a brush region, simplified polygons (``tolerance``, one per piece), or
    (a RectangleLabels-only config) the mask's tight box. With ``box`` and a RectangleLabels in a brush/polygon
    config, the box as a rectangle linked to the mask (nested under a brush mask with ``parentID``, related to
    polygons); with ``expression`` and a per-region TextArea, the
    expression echoed on the mask itself (Label Studio shows it with that region).
    """
    h, w = mask.shape
    if schema.shape == "polygon":
        regions = polygon_regions(mask, label, from_name=schema.polygon_name or "polygon",
                                  to_name=schema.image_name, tolerance=tolerance, score=score)
    elif schema.shape == "rectangle":
        tight = mask_box(mask)
        regions = [] if tight is None else [
            rectangle_region(tight, w, h, schema.rect_label(label), from_name=schema.rect_name or "box",
                             to_name=schema.image_name, region_id=new_region_id(), score=score)]
        box = None  # the rectangle control holds the answer itself
    else:
        regions = [brush_region(mask, label, from_name=schema.brush_name, to_name=schema.image_name,
                                region_id=new_region_id(), score=score)]
    if not regions:
        return []
    main_id = regions[0]["id"]
    if box is not None and schema.rect_name:
        rect_id = new_region_id()
        rect = rectangle_region(box, w, h, schema.rect_label(label), from_name=schema.rect_name,
                                to_name=schema.image_name, region_id=rect_id,
                                score=box_score if box_score is not None else score)
        if regions[0]["type"] == "brushlabels":
            # Label Studio's relation overlay measures a brush region before its RLE is painted (an empty
            # stroke list gives ±Infinity, then NaN: `<rect> attribute x: Expected length, "NaN"`), so a
            # box that belongs to a brush mask is nested under it (``parentID``) instead of related to it.
            rect["parentID"] = main_id
            regions.append(rect)
        else:
            regions += [rect, relation_region(rect_id, main_id)]
    if expression and schema.textarea_name and schema.textarea_per_region:
        # Only a per-region TextArea is echoed into: a task-level one is the annotator's typed-prompt box,
        # and an echo there would fill it (``maxSubmissions``) and be re-sent as the prompt.
        regions.append(textarea_region([expression], main_id, from_name=schema.textarea_name,
                                       to_name=schema.image_name))
    return regions
