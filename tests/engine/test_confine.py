"""A box prompt's mask stays in its box: whatever a segmenter or a learned prior paints, the pipeline confines it."""

from __future__ import annotations

from typing import Optional

import numpy as np

from annotate.confine import allowed_region
from annotate.pipeline import Pipeline
from annotate.segmenters.base import Segmenter
from annotate.types import Prompt, SegmentationOutput


class FloodingSegmenter(Segmenter):
    """Paints the whole image: the worst leak a segmenter (or a learned prior) can produce."""

    name = "flooding"

    def set_image(self, image: np.ndarray, image_key: Optional[str] = None) -> None:
        self.shape = image.shape[:2]

    def predict(self, box=None, point_coords=None, point_labels=None) -> SegmentationOutput:
        return SegmentationOutput(mask=np.ones(self.shape, bool), score=0.9)


def test_every_stage_output_is_confined_to_the_box_and_its_margin():
    rgb = np.full((120, 160, 3), 90, np.uint8)
    box = (40.0, 30.0, 100.0, 80.0)
    [result] = Pipeline(FloodingSegmenter(), use_cfpg=False, use_mbo=True).run(rgb, [Prompt(box=box)])
    x0, y0, x1, y1 = allowed_region(box, (120, 160))
    assert (x0, y0, x1, y1) == (34, 25, 106, 85)  # 10 % of the box's width and height on each side
    inside = np.zeros((120, 160), bool)
    inside[y0:y1, x0:x1] = True
    assert result.mask[inside].all() and not result.mask[~inside].any()


def test_a_positive_click_beyond_the_box_keeps_the_part_it_lies_in():
    rgb = np.full((120, 160, 3), 90, np.uint8)
    box = (40.0, 30.0, 100.0, 80.0)
    prompt = Prompt(box=box, points=[(140.5, 100.5)], point_labels=[1])
    [result] = Pipeline(FloodingSegmenter(), use_cfpg=False, use_mbo=False).run(rgb, [prompt])
    assert result.mask[100, 140] and result.mask[5, 5]  # the flooded part the click lies in is connected to it
