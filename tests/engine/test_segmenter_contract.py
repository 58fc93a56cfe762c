"""The weights-free segmenter's safeguards as a user sees them: a same-coloured thing beside the object (a kerb,
a neighbour's roof edge) is not glued to its mask, and a colour segmentation that found only a thin line falls
back to the box prior with a low score, so a reviewer sorting by score checks it first.

Not pinned here: k-means++ seeding of the colour clusters (``annotate.cfpg.kmeans_foreground``). Replacing it by
random centres (both seeded) changes nothing measurable: on 100 objects of 25 synthetic scenes the classical
segmenter's mIoU is 0.956 with k-means++ and 0.957 with random centres (1 object differs by more than 0.05), and
the CFPG point lands on the object 160/160 vs 159/160 times; on small objects over colour gradients either
seeding wins on some crops. A test that failed on it would pin one seed's outcome, not a behaviour.
"""

from __future__ import annotations

import cv2
import numpy as np

from annotate.geometry import mask_iou
from annotate.segmenters.classical import ClassicalSegmenter


def _ground(seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.full((160, 160, 3), (90, 110, 80), np.float32) + rng.normal(0, 6, (160, 160, 3)), 0, 255)


def test_a_same_coloured_neighbour_inside_the_box_is_not_part_of_the_mask() -> None:
    img = _ground()
    obj = np.zeros((160, 160), bool)
    obj[60:100, 55:105] = True
    kerb = np.zeros((160, 160), bool)
    kerb[56:59, 50:110] = True  # a red line one pixel above the red roof, inside the box
    img[obj | kerb] = (200, 60, 50)
    seg = ClassicalSegmenter()
    seg.set_image(img.astype(np.uint8))
    out = seg.predict(box=np.array([52.0, 54.0, 108.0, 103.0]))
    assert mask_iou(out.mask, obj) > 0.9
    assert np.count_nonzero(out.mask & kerb) < 0.1 * np.count_nonzero(kerb)


def test_a_collapsed_colour_segmentation_gives_the_box_prior_and_a_low_score() -> None:
    # plain ground with a thin bright line across the box (a road marking): the colour clusters find the line
    box = np.array([50.0, 50.0, 111.0, 101.0])
    box_area = 61 * 51
    for width in (1, 2):
        img = _ground(0).astype(np.uint8)
        cv2.line(img, (50, 50), (110, 100), (235, 235, 235), width)
        seg = ClassicalSegmenter()
        seg.set_image(img)
        out = seg.predict(box=box)
        assert np.count_nonzero(out.mask) > 0.5 * box_area  # the box prior, not a one-pixel line
        assert out.score <= 0.1
    # the same box over a real object scores well above it
    img = _ground(0)
    img[60:92, 58:104] = (200, 60, 50)
    seg = ClassicalSegmenter()
    seg.set_image(img.astype(np.uint8))
    assert seg.predict(box=np.array([55.0, 57.0, 107.0, 95.0])).score > 0.3
