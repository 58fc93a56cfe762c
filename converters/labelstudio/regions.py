"""Label Studio result regions built from masks and texts (for tasks, annotations and predictions)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

def brush_region(mask: Any, label: str, *, from_name: str = "tag", to_name: str = "image",
                 region_id: Optional[str] = None) -> dict:
    """A Label Studio brush result for a bool mask (``brushlabels`` always filled)."""
    from converters.labelstudio.brush import brush_rle_encode

    h, w = mask.shape
    region = {"type": "brushlabels", "from_name": from_name, "to_name": to_name, "original_width": int(w),
              "original_height": int(h), "image_rotation": 0,
              "value": {"format": "rle", "rle": [int(v) for v in brush_rle_encode(mask)], "brushlabels": [label]}}
    if region_id is not None:
        region["id"] = region_id
    return region


def textarea_region(texts: Sequence[str], region_id: str, *, from_name: str = "expression",
                    to_name: str = "image") -> dict:
    """A per-region TextArea result attached to the brush region with the same ``id``."""
    return {"id": region_id, "type": "textarea", "from_name": from_name, "to_name": to_name,
            "value": {"text": list(texts)}}
