"""Value types shared by every stage of the engine.

Coordinates are always **pixels** of the full image, boxes are ``(x0, y0, x1, y1)`` with x to the right and
y down (the convention of ``segment_anything``); masks are ``bool`` arrays of shape ``(H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

Box = tuple[float, float, float, float]
"""A box ``(x0, y0, x1, y1)`` in pixels (x0 < x1, y0 < y1)."""

Point = tuple[float, float]
"""A point ``(x, y)`` in pixels."""


@dataclass
class Prompt:
    """What a user (or a dataset, or stage 1) tells stage 2 about one object.

    ``point_labels`` follows SAM: 1 = foreground, 0 = background; it has one entry per point.
    ``text`` is the referring expression; it is only used when a grounding model turns it into a box.
    """

    box: Optional[Box] = None
    points: list[Point] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)
    text: Optional[str] = None
    #: The object's class, when known (a task's label): picks the segmenter's learned shape prior.
    category: Optional[str] = None
    #: The mask being corrected (what the annotator sees: a pre-label or an earlier answer), ``bool`` (H, W).
    #: With points, the answer is that mask refined by the clicks, not a new mask from the clicks alone.
    mask: Optional[np.ndarray] = None


@dataclass
class SegmentationOutput:
    """One mask from a segmenter with its confidence in [0, 1].

    ``logits``: the segmenter's own low-resolution mask logits (SAM: 1×256×256), when it has them; passed back
    as ``mask_input`` with the next click of a session, SAM refines its previous answer instead of starting over.
    """

    mask: np.ndarray
    score: float
    logits: Optional[np.ndarray] = None


@dataclass
class PromptResult:
    """The engine's answer to one prompt.

    ``error`` is set (and ``mask`` is None) when this prompt failed; other prompts of the batch are unaffected.
    ``points`` / ``point_labels`` are the points actually sent to the segmenter (user points plus the CFPG
    point, when one was generated). ``timings_ms`` holds per-step wall times (``grounding``, ``cfpg``,
    ``segment``, ``mbo``, ``total``).
    """

    mask: Optional[np.ndarray]
    score: float
    box: Optional[Box]
    points: list[Point] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)
    grounding_score: Optional[float] = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None
    #: What the quality estimate (``annotate.quality``) reads: ``segmenter_score`` (SAM's IoU prediction or the
    #: classical segmenter's evidence), ``grounding_score`` / ``grounding_margin``, ``box_agreement``,
    #: ``box_fill``, ``mbo_change``, ``box_area_log``, ``box_aspect``.
    features: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.mask is not None
