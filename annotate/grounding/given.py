"""The box given by the task or the annotator, as a grounder (no model).

Why a grounder at all: code that asks "which box does this expression name?" (the pipeline, the evaluation's
``--oracle-box`` mode, a Label Studio task that already carries a box) can then treat a known box and a model's
answer the same way. The answer is certain, so its score is 1.0.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from annotate.grounding.base import Grounder, GroundingCandidate, GroundingError
from annotate.grounding.text import normalise_expression
from annotate.types import Box


def _check_box(box: Box, where: str) -> Box:
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise GroundingError(f"{where}: box {box!r} is not four numbers (x0, y0, x1, y1)") from None
    if not (x1 > x0 and y1 > y0):
        raise GroundingError(f"{where}: box {box!r} is empty (expected x0 < x1 and y0 < y1)")
    return (x0, y0, x1, y1)


class GivenBoxGrounder(Grounder):
    """Answers each expression with the box known for it (``boxes``, by expression), else with ``default``."""

    model_version = "given-box"

    def __init__(self, boxes: Optional[Mapping[str, Box]] = None, default: Optional[Box] = None) -> None:
        self._boxes = {normalise_expression(k): _check_box(v, f"box for {k!r}") for k, v in (boxes or {}).items()}
        self._default = _check_box(default, "default box") if default is not None else None

    def ground(self, image: np.ndarray, expression: str, top_k: int = 5) -> list[GroundingCandidate]:
        key = normalise_expression(expression)
        box = self._boxes.get(key, self._default)
        if box is None:
            raise GroundingError(f"no box was given for the expression {expression!r}")
        h, w = np.asarray(image).shape[:2]
        x0, y0, x1, y1 = box
        clipped = (min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h))
        if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
            raise GroundingError(f"the box {box} given for {expression!r} lies outside the {w}×{h} image")
        return [GroundingCandidate(box=clipped, score=1.0, label=expression)]
