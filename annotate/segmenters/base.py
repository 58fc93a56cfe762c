"""The segmenter interface shared by SAM and the weights-free classical segmenter.

It mirrors ``segment_anything.SamPredictor``: ``set_image`` does the expensive per-image work once (SAM's
image encoder), then ``predict`` answers many prompts on that image cheaply.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

import numpy as np

from annotate.types import SegmentationOutput


class Segmenter(ABC):
    """Turns box / point prompts on one image into a binary mask."""

    #: A short identifier of the model and its weights, used in model versions and cache keys.
    name: str = "segmenter"

    @abstractmethod
    def set_image(self, image: np.ndarray, image_key: Optional[str] = None) -> None:
        """Prepare ``image`` (H×W×3 RGB uint8) for prompting.

        ``image_key`` identifies the image content (for example a hash) so an implementation may reuse cached
        work; when None the implementation computes its own key or does not cache.
        """

    @abstractmethod
    def predict(
        self,
        box: Optional[np.ndarray] = None,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
    ) -> SegmentationOutput:
        """Segment the object given by ``box`` (4,) ``x0,y0,x1,y1`` and/or points (N, 2) with labels (N,).

        Raises ``ValueError`` for prompts that cannot be answered (no prompt at all, a box outside the image,
        an empty box) and ``RuntimeError`` when called before ``set_image``.
        """
