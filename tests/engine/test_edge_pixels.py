"""The classical segmenter's box masks include the pixels the object's edge crosses, as human outlines do."""

from __future__ import annotations

import cv2
import numpy as np

from annotate.masks import include_edge_pixels
from annotate.pipeline import Pipeline
from annotate.segmenters.classical import ClassicalSegmenter
from annotate.synthetic import make_scene
from annotate.types import Prompt


def test_include_edge_pixels_adds_exactly_the_4_neighbours_outside() -> None:
    mask = np.zeros((9, 9), bool)
    mask[3:6, 3:6] = True
    out = include_edge_pixels(mask)
    expected = mask.copy()
    expected[2, 3:6] = expected[6, 3:6] = expected[3:6, 2] = expected[3:6, 6] = True  # no diagonal corners
    assert np.array_equal(out, expected)
    assert not include_edge_pixels(np.zeros((4, 4), bool)).any()
    edge = np.zeros((4, 4), bool)
    edge[0, 0] = True
    assert np.array_equal(include_edge_pixels(edge), np.array(
        [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool))  # clipped at the image border


class _NoEdgePixels(ClassicalSegmenter):
    splits_edge_pixels = False


def test_the_pipeline_grows_the_classical_box_mask_by_its_edge_pixels_and_nothing_else() -> None:
    scene = make_scene(seed=3)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    for obj in scene.objects[:3]:
        prompt = Prompt(box=obj.box)
        grown = Pipeline(ClassicalSegmenter()).run(scene.image, [prompt])[0].mask
        cut = Pipeline(_NoEdgePixels()).run(scene.image, [prompt])[0].mask
        assert cut.any() and np.any(grown & ~cut)
        # the difference is the one-pixel ring around the cut (then confined to the box like every mask)
        assert not np.any(cut & ~grown)
        assert not np.any(grown & ~(cv2.dilate(cut.astype(np.uint8), cross) > 0))
