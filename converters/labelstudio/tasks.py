"""Reading prompts from Label Studio tasks: the task's own box and the annotator's interactive regions."""

from __future__ import annotations

from typing import Any, Optional

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
        x0, y0 = float(raw["x"]) * width / 100.0, float(raw["y"]) * height / 100.0
        return (x0, y0, x0 + float(raw["width"]) * width / 100.0, y0 + float(raw["height"]) * height / 100.0)
    if isinstance(raw, (list, tuple)) and len(raw) == 4:
        x, y, w, h = (float(v) for v in raw)
        return (x, y, x + w, y + h)
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
            points.append((float(value["x"]) * w / 100.0, float(value["y"]) * h / 100.0))
            labels.append(1 if positive in (True, 1, "true", "True") else 0)
            label = label or next(iter(value.get("keypointlabels") or []), None)
        elif rtype in ("rectanglelabels", "rectangle"):
            x0, y0 = float(value["x"]) * w / 100.0, float(value["y"]) * h / 100.0
            box = (x0, y0, x0 + float(value["width"]) * w / 100.0, y0 + float(value["height"]) * h / 100.0)
            label = next(iter(value.get("rectanglelabels") or []), None) or label
        elif rtype == "textarea":
            typed = value.get("text") or []
            if typed and str(typed[0]).strip():
                text = str(typed[0]).strip()
    return Prompt(box=box, points=points, point_labels=labels, text=text), label
