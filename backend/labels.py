"""What a labeling config tells the backend: which tags to read prompts from and write regions to.

Parsed with ``label_studio_sdk.label_interface.LabelInterface`` (the SDK's own parser), never by hand.
Supported shape (the configs in ``converters/configs``): one ``<Image>``, a ``<Text>`` (or a task data key
named ``expression``) holding the referring expression, a ``<BrushLabels>`` for the mask, and optionally a
``<RectangleLabels>`` (box), ``<KeyPointLabels>`` (clicks) and a ``<TextArea>`` (typed prompt / echo).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from label_studio_sdk.label_interface import LabelInterface

EXPRESSION_KEYS = ("expression", "sentence", "text", "caption", "ref", "referring_expression")
LABEL_KEYS = ("label", "category", "class")


class LabelConfigError(ValueError):
    """The labeling config lacks what the backend needs (an Image and a BrushLabels on it)."""


@dataclass
class LabelSchema:
    """The names the backend needs from one labeling config."""

    image_name: str
    image_key: str
    brush_name: str
    brush_labels: list[str]
    rect_name: Optional[str] = None
    rect_labels: list[str] = field(default_factory=list)
    textarea_name: Optional[str] = None
    textarea_per_region: bool = False
    expression_key: Optional[str] = None
    expression_name: Optional[str] = None

    @classmethod
    def parse(cls, config: str) -> "LabelSchema":
        """Read ``config`` (label config XML); raise ``LabelConfigError`` naming what is missing."""
        if not config or not str(config).strip():
            raise LabelConfigError("the labeling config is empty")
        try:
            li = LabelInterface(config)
        except Exception as exc:
            raise LabelConfigError(f"the labeling config could not be parsed: {exc}") from None
        images = [o for o in li.objects if o.tag == "Image"]
        if not images:
            raise LabelConfigError("the labeling config has no <Image> tag")
        image = images[0]
        brush = next((c for c in li.controls if c.tag == "BrushLabels" and image.name in c.to_name), None)
        if brush is None:
            raise LabelConfigError(f"the labeling config has no <BrushLabels> on the image {image.name!r}")
        rect = next((c for c in li.controls if c.tag == "RectangleLabels" and image.name in c.to_name), None)
        textarea = next((c for c in li.controls if c.tag == "TextArea"), None)
        texts = [o for o in li.objects if o.tag in ("Text", "HyperText", "Header")]
        expression = next((t for t in texts if str(getattr(t, "value", "")).startswith("$")), None)
        per_region = False
        if textarea is not None:
            per_region = str(textarea.attr.get("perRegion", "false")).lower() == "true"
        return cls(
            image_name=image.name,
            image_key=str(image.value).lstrip("$"),
            brush_name=brush.name,
            brush_labels=list(brush.labels or []),
            rect_name=rect.name if rect is not None else None,
            rect_labels=list(rect.labels or []) if rect is not None else [],
            textarea_name=textarea.name if textarea is not None else None,
            textarea_per_region=per_region,
            expression_key=str(expression.value).lstrip("$") if expression is not None else None,
            expression_name=expression.name if expression is not None else None,
        )

    # --- reading task data --------------------------------------------------------------------------------
    def expression(self, data: dict[str, Any]) -> Optional[str]:
        """The referring expression of a task (from the config's Text tag, else a conventional key)."""
        keys = ([self.expression_key] if self.expression_key else []) + list(EXPRESSION_KEYS)
        for key in keys:
            value = data.get(key)
            if isinstance(value, list) and value:
                value = value[0]
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    def image_url(self, data: dict[str, Any]) -> Optional[str]:
        value = data.get(self.image_key)
        return value if isinstance(value, str) and value.strip() else None

    def choose_label(self, expression: Optional[str], data: dict[str, Any], hint: Optional[str] = None) -> Optional[str]:
        """The BrushLabels label for a region: an explicit hint or task field, a label named in the expression, else the first.

        Labels are matched case-insensitively with ``_``/``-`` read as spaces, so ``storage_tank`` matches
        "the storage tank at the top"; the longest label found in the expression wins.
        """
        labels = self.brush_labels
        if not labels:
            return None
        norm = {_norm(lab): lab for lab in labels}
        for candidate in [hint] + [data.get(k) for k in LABEL_KEYS]:
            if isinstance(candidate, str) and _norm(candidate) in norm:
                return norm[_norm(candidate)]
        if expression:
            text = f" {_norm(expression)} "
            found = [lab for key, lab in norm.items() if key and re.search(rf"(?<![a-z0-9]){re.escape(key)}s?(?![a-z0-9])", text)]
            if found:
                return max(found, key=len)
        return labels[0]


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(text).strip().lower())
