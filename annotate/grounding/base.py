"""The grounder interface: (image, referring expression) → ranked candidate boxes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import numpy as np

from annotate.types import Box


class GroundingError(ValueError):
    """A referring expression could not be grounded (empty expression, no model for text, ...)."""


@dataclass
class GroundingCandidate:
    """One candidate box for a referring expression, with the model's score in [0, 1]."""

    box: Box
    score: float
    label: Optional[str] = None


class Grounder(ABC):
    """Finds the object a referring expression names."""

    #: Identifies the model and its weights; changes whenever the weights change (retraining).
    model_version: str = "grounder"

    @abstractmethod
    def ground(self, image: np.ndarray, expression: str, top_k: int = 5) -> list[GroundingCandidate]:
        """Return up to ``top_k`` candidates for ``expression`` in ``image`` (H×W×3 RGB uint8), best first.

        An image without the object yields low scores, not an exception. An empty expression raises
        ``GroundingError``.
        """
