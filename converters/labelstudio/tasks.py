"""Reading prompts from Label Studio tasks: the task's own box and the annotator's interactive regions."""

from __future__ import annotations

import math
from typing import Any, Optional

from annotate.geometry import percent_to_pixels_box, percent_to_pixels_point, xywh_to_xyxy
from annotate.types import Box, Prompt


def task_box(data: dict[str, Any], width: int, height: int) -> Optional[Box]:
    """The task's own box, as ``(x0, y0, x1, y1)`` pixels.

    Accepted task fields (the converters' importer writes the first): ``bbox`` = ``[x, y, w, h]`` in pixels (COCO
    order), ``bbox_xyxy`` = ``[x0, y0, x1, y1]`` in pixels, or ``bbox`` as a Label Studio rectangle value
    ``{x, y, width, height}`` in percent of the image.
    """
    xyxy = data.get("bbox_xyxy")
    if xyxy is not None:
        if not (isinstance(xyxy, (list, tuple)) and len(xyxy) == 4):
            raise ValueError(f"task bbox_xyxy {_short(xyxy)} is not [x0, y0, x1, y1] in pixels")
        return tuple(_finite(v, "bbox_xyxy") for v in xyxy)  # type: ignore[return-value]
    raw = data.get("bbox")
    if raw is None:
        return None
    if isinstance(raw, dict) and {"x", "y", "width", "height"} <= raw.keys():
        return percent_to_pixels_box({k: _finite(raw[k], "bbox") for k in ("x", "y", "width", "height")}, width, height)
    if isinstance(raw, (list, tuple)) and len(raw) == 4:
        return xywh_to_xyxy([_finite(v, "bbox") for v in raw])
    raise ValueError(f"task bbox {_short(raw)} is neither [x, y, w, h] in pixels nor {{x, y, width, height}} in percent")


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters (a task field may be megabytes, or nested too deep to print)."""
    try:
        text = repr(value)
    except RecursionError:
        return f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _finite(value: Any, what: str) -> float:
    """A box coordinate: an int or float (not a bool, string or container) that is finite as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"task {what} holds {_short(value)}, not a number")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"task {what} holds a number too large for a coordinate") from None
    if not math.isfinite(number) or abs(number) > 1e12:
        raise ValueError(f"task {what} holds {_short(value)}, not a coordinate")
    return number


def context_prompt(context: dict[str, Any], width: int, height: int) -> tuple[Prompt, Optional[str]]:
    """The prompt an annotator's interactive regions describe, and the label they carry (if any)."""
    points: list[tuple[float, float]] = []
    labels: list[int] = []
    box: Optional[Box] = None
    text: Optional[str] = None
    label: Optional[str] = None
    for region in context.get("result") or []:
        rtype = str(region.get("type", "")).lower()
        value = region.get("value") or {}
        w = float(region.get("original_width") or width)
        h = float(region.get("original_height") or height)
        if rtype in ("keypointlabels", "keypoint"):
            positive = region.get("is_positive", value.get("is_positive", True))
            points.append(percent_to_pixels_point(value, w, h))
            labels.append(1 if positive in (True, 1, "true", "True") else 0)
            label = label or next(iter(value.get("keypointlabels") or []), None)
        elif rtype in ("rectanglelabels", "rectangle"):
            box = percent_to_pixels_box(value, w, h)
            label = next(iter(value.get("rectanglelabels") or []), None) or label
        elif rtype == "textarea":
            typed = value.get("text") or []
            if typed and str(typed[0]).strip():
                text = str(typed[0]).strip()
    return Prompt(box=box, points=points, point_labels=labels, text=text), label
