"""What a Label Studio labeling config names, for everyone who reads or writes its regions.

One class for the backend (which tags prompts come from and predictions go to) and the converters (which
brush controls hold masks, which labels exist, which TextAreas hold per-region expressions). The config is
parsed with the SDK's ``label_studio_sdk.label_interface.LabelInterface``, never by hand.

Supported shape (the configs in ``converters/configs``): one ``<Image>`` with a ``<BrushLabels>`` on it (or,
for polygon projects, a ``<PolygonLabels>``; for box-only projects a ``<RectangleLabels>``: see ``shape``), and
optionally a ``<Text>`` holding the task's referring expression, ``<RectangleLabels>`` (boxes),
``<KeyPointLabels>`` (clicks), ``<PolygonLabels>`` and a ``<TextArea>`` (typed prompt, or per-region
expressions). A generalized config (one expression, several objects or none) adds a ``<Choices>`` with a
"no target" choice, or (per-region expressions) a task-level ``<TextArea name="no_target">``. Supporting
another control means one more ``_control`` lookup in :meth:`LabelSchema.parse`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from converters.labelstudio.label_matcher import LabelMatcher

#: The task data key of the referring expression when the config names none (the converters' importer writes it).
DEFAULT_EXPRESSION_KEY = "expression"
#: Task data keys read for the expression after the config's own (datasets spell it many ways).
EXPRESSION_KEYS = ("expression", "sentence", "text", "caption", "ref", "referring_expression")
#: Spellings (normalised) of the choice, and of a task-level TextArea's name, that say "this names nothing here".
NO_TARGET_CHOICES = frozenset({"no target", "notarget", "no object", "no target expression",
                               "no target expressions"})
#: Task data keys that may name the object's category.
LABEL_KEYS = ("label", "category", "class")


#: Prediction shapes in order of preference, with the control tag that asks for each (brush is lossless).
SHAPES = (("brush", "brushlabels"), ("polygon", "polygonlabels"), ("rectangle", "rectanglelabels"))


def on_image_tag(shape: str) -> str:
    """The config tag name (``BrushLabels`` ...) of a prediction shape, for messages."""
    return {"brush": "BrushLabels", "polygon": "PolygonLabels", "rectangle": "RectangleLabels"}[shape]


class LabelConfigError(ValueError):
    """The labeling config cannot be parsed or lacks what is needed (an Image with a Brush/Polygon/RectangleLabels on it)."""


@dataclass
class LabelSchema:
    """The names one labeling config gives to images, controls and task data keys.

    ``LabelSchema()`` (no config) describes the conventional layout the converters' importer writes: image under
    ``data.image``, expression under ``data.expression``, any brush control, labels taken as found and any
    TextArea read as per-region expressions.
    """

    image_name: str = "image"
    image_key: str = "image"
    shape: str = "brush"
    """What predictions are written as: ``brush`` (a BrushLabels is on the image), else ``polygon`` (a
    PolygonLabels), else ``rectangle`` (a RectangleLabels-only config); ``labels`` are that control's."""
    brush_name: str = "tag"
    """The BrushLabels predictions are written to (the first one on the image)."""
    brush_names: set[str] = field(default_factory=set)
    """Every BrushLabels on the image (read when exporting); empty = accept any brush region."""
    labels: Optional[list[str]] = None
    """Brush labels in config order (union of all brush controls), or None when no config was given."""
    rect_name: Optional[str] = None
    rect_labels: list[str] = field(default_factory=list)
    keypoint_name: Optional[str] = None
    keypoint_labels: list[str] = field(default_factory=list)
    polygon_name: Optional[str] = None
    polygon_labels: list[str] = field(default_factory=list)
    textarea_name: Optional[str] = None
    """The first TextArea (typed prompts are read from it, expressions echoed into it)."""
    textarea_per_region: bool = False
    textarea_names: set[str] = field(default_factory=set)
    """Per-region TextAreas (expressions written while annotating); empty = accept any TextArea."""
    expression_key: Optional[str] = DEFAULT_EXPRESSION_KEY
    """Task data key of the config's ``<Text>`` expression; None when the config shows none."""
    expression_name: Optional[str] = None
    no_target_name: Optional[str] = None
    """The ``<Choices>`` holding the explicit "no target" answer of a generalized config (its choice value is
    ``no_target_value``); None in a one-object config."""
    no_target_value: str = "no target"
    no_target_area: Optional[str] = None
    """A task-level ``<TextArea>`` (named ``no_target...``) of a per-region generalized config: expressions
    that name nothing in the image."""

    @property
    def generalized(self) -> bool:
        """One expression may name several regions (each region one object, never merged) or none."""
        return self.no_target_name is not None or self.no_target_area is not None

    @classmethod
    def parse(cls, config: str) -> "LabelSchema":
        """Read ``config`` (label config XML); raise ``LabelConfigError`` naming what is missing."""
        from label_studio_sdk.label_interface import LabelInterface

        if not config or not str(config).strip():
            raise LabelConfigError("the labeling config is empty")
        try:
            li = LabelInterface(config)
        except Exception as exc:
            raise LabelConfigError(f"the labeling config could not be parsed: {exc}") from None
        images = [o for o in li.objects if o.tag.lower() == "image"]
        if not images:
            raise LabelConfigError("the labeling config has no <Image> tag")
        # what predictions are written as: brush masks, else polygons, else (a RectangleLabels-only config) boxes
        for shape, tag in SHAPES:
            outputs = [c for c in li.controls if c.tag.lower() == tag]
            if outputs:
                break
        else:
            raise LabelConfigError("the labeling config has no <BrushLabels>, <PolygonLabels> or <RectangleLabels> control")
        targets = set().union(*(c.to_name for c in outputs))
        image = next((o for o in images if o.name in targets), images[0])
        on_image = [c for c in outputs if image.name in c.to_name]
        if not on_image:
            raise LabelConfigError(f"the labeling config has no <{on_image_tag(shape)}> on the image {image.name!r}")
        labels: list[str] = []
        for c in on_image:
            labels += [lab for lab in c.labels or [] if lab not in labels]
        rect = _control(li, "rectanglelabels", image.name)
        keypoint = _control(li, "keypointlabels", image.name)
        polygon = _control(li, "polygonlabels", image.name)
        areas = [c for c in li.controls if c.tag.lower() == "textarea"]
        per_region = [c for c in areas if str(c.attr.get("perRegion", "")).lower() == "true"]
        texts = [o for o in li.objects if o.tag.lower() in ("text", "hypertext", "header")
                 and str(getattr(o, "value", "")).startswith("$")]
        expression = next((o for o in texts if "expression" in o.name.lower() or "expression" in str(o.value)),
                          texts[0] if texts else None)
        no_target = next(((c, v) for c in li.controls if c.tag.lower() == "choices"
                          for v in c.labels or [] if _norm(v) in NO_TARGET_CHOICES), None)
        no_target_area = next((c for c in areas if c not in per_region and _norm(c.name) in NO_TARGET_CHOICES),
                              None)
        areas = [c for c in areas if c is not no_target_area]
        return cls(
            image_name=image.name,
            image_key=str(image.value).lstrip("$"),
            shape=shape,
            brush_name=on_image[0].name if shape == "brush" else cls.brush_name,
            brush_names={c.name for c in on_image} if shape == "brush" else set(),
            labels=labels,
            rect_name=rect.name if rect is not None else None,
            rect_labels=list(rect.labels or []) if rect is not None else [],
            keypoint_name=keypoint.name if keypoint is not None else None,
            keypoint_labels=list(keypoint.labels or []) if keypoint is not None else [],
            polygon_name=polygon.name if polygon is not None else None,
            polygon_labels=list(polygon.labels or []) if polygon is not None else [],
            textarea_name=areas[0].name if areas else None,
            textarea_per_region=bool(areas) and areas[0] in per_region,
            textarea_names={c.name for c in per_region},
            expression_key=str(expression.value).lstrip("$") if expression is not None else None,
            expression_name=expression.name if expression is not None else None,
            no_target_name=no_target[0].name if no_target is not None else None,
            no_target_value=no_target[1] if no_target is not None else cls.no_target_value,
            no_target_area=no_target_area.name if no_target_area is not None else None,
        )

    # --- reading task data --------------------------------------------------------------------------------
    @property
    def task_expression_key(self) -> str:
        """The data key a one-expression-per-task task keeps its expression(s) under."""
        return self.expression_key or DEFAULT_EXPRESSION_KEY

    def task_expressions(self, data: dict[str, Any]) -> Optional[list[str]]:
        """The task's own expressions (a string or a list of variants), or None when the task has none.

        None means "not a one-expression task": expressions then come from per-region TextAreas.
        """
        if self.task_expression_key not in data:
            return None
        return expressions_of(data[self.task_expression_key])

    def expression(self, data: dict[str, Any]) -> Optional[str]:
        """The one referring expression to prompt with (the config's Text key, else a conventional key)."""
        keys = ([self.expression_key] if self.expression_key else []) + list(EXPRESSION_KEYS)
        for key in keys:
            value = data.get(key)
            if isinstance(value, list) and value:
                value = value[0]
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    def image_url(self, data: dict[str, Any]) -> Optional[str]:
        """The task's image reference, or None when the task has none under the config's key."""
        value = data.get(self.image_key)
        return value if isinstance(value, str) and value.strip() else None

    def accepts_brush(self, from_name: Any) -> bool:
        return not self.brush_names or from_name in self.brush_names

    def accepts_expression_area(self, from_name: Any) -> bool:
        if self.no_target_area is not None and from_name == self.no_target_area:
            return False
        return not self.textarea_names or from_name in self.textarea_names

    def choose_label(self, expression: Optional[str], data: dict[str, Any], hint: Optional[str] = None) -> Optional[str]:
        """The BrushLabels label for a region: an explicit hint or task field, a label named in the expression, else the first.

        Labels are matched case-insensitively with ``_``/``-`` read as spaces, so ``storage_tank`` matches
        "the storage tank at the top"; the longest label found in the expression wins.
        """
        labels = self.labels or []
        if not labels:
            return None
        norm = {_norm(lab): lab for lab in labels}
        for candidate in [hint] + [data.get(k) for k in LABEL_KEYS]:
            if isinstance(candidate, str) and _norm(candidate) in norm:
                return norm[_norm(candidate)]
        found = self._label_matcher().find(expression)
        return found if found is not None else labels[0]

    def _label_matcher(self) -> LabelMatcher:
        """The one matcher of this config's labels (built on first use: a config may hold 20,000 labels)."""
        labels = tuple(self.labels or ())
        cached = self.__dict__.get("_matcher")
        if cached is None or cached[0] != labels:
            cached = (labels, LabelMatcher(labels))
            self.__dict__["_matcher"] = cached
        return cached[1]

    def rect_label(self, label: Optional[str]) -> Optional[str]:
        """The RectangleLabels label for a box around a region labelled ``label`` (same label, else the first)."""
        if label in self.rect_labels:
            return label
        return self.rect_labels[0] if self.rect_labels else None


def expressions_of(value: Any) -> list[str]:
    """The non-blank expressions of a task field or TextArea value (a string or a list of strings), as written."""
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if isinstance(v, str) and v.strip()]
    return []


def _control(li: Any, tag: str, image_name: str) -> Any:
    return next((c for c in li.controls if c.tag.lower() == tag and image_name in c.to_name), None)


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(text).strip().lower())
