"""Reading prompts from Label Studio tasks: the task's own box and the annotator's interactive regions."""

from __future__ import annotations

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
            raise ValueError(f"task bbox_xyxy {xyxy!r} is not [x0, y0, x1, y1] in pixels")
        return tuple(float(v) for v in xyxy)  # type: ignore[return-value]
    raw = data.get("bbox")
    if raw is None:
        return None
    if isinstance(raw, dict) and {"x", "y", "width", "height"} <= raw.keys():
        return percent_to_pixels_box(raw, width, height)
    if isinstance(raw, (list, tuple)) and len(raw) == 4:
        return xywh_to_xyxy(raw)
    raise ValueError(f"task bbox {raw!r} is neither [x, y, w, h] in pixels nor {{x, y, width, height}} in percent")


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
