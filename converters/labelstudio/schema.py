"""What the converters read from a Label Studio labeling config (through the SDK's ``LabelInterface``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

@dataclass
class LabelSchema:
    """What the converters need from a labeling config (read through ``LabelInterface``)."""

    image_name: str = "image"
    image_key: str = "image"
    brush_names: set[str] = field(default_factory=set)
    labels: Optional[list[str]] = None
    """Allowed labels in config order, or None when no config was given (labels are taken as found)."""
    expression_key: str = "expression"
    textarea_names: set[str] = field(default_factory=set)
    """Per-region TextArea controls (expressions written while annotating); empty = accept any textarea."""

    @classmethod
    def from_config(cls, xml: str) -> "LabelSchema":
        from label_studio_sdk.label_interface import LabelInterface

        li = LabelInterface(xml)
        images = [o for o in li.objects if o.tag.lower() == "image"]
        if not images:
            raise ValueError("the labeling config has no <Image> tag")
        brush = [c for c in li.controls if c.tag.lower() == "brushlabels"]
        if not brush:
            raise ValueError("the labeling config has no <BrushLabels> control")
        image = next((o for o in images if o.name in set().union(*(c.to_name for c in brush))), images[0])
        labels: list[str] = []
        for c in brush:
            labels += [lab for lab in c.labels if lab not in labels]
        texts = [o for o in li.objects if o.tag.lower() in ("text", "header") and str(o.value).startswith("$")]
        expr = next((o for o in texts if "expression" in o.name.lower() or "expression" in str(o.value)),
                    texts[0] if texts else None)
        areas = {c.name for c in li.controls if c.tag.lower() == "textarea"
                 and str(c.attr.get("perRegion", "")).lower() == "true"}
        return cls(image_name=image.name, image_key=str(image.value).lstrip("$"), brush_names={c.name for c in brush},
                   labels=labels, expression_key=str(expr.value).lstrip("$") if expr else "expression",
                   textarea_names=areas)
