"""The click contract a user relies on, pinned where it is easy to break: every clicked pixel ends with its
label (also when the edit runs at a reduced resolution), earlier clicks keep theirs through later edits, the
later of two opposite clicks on one pixel wins, removing or branching clicks gives the mask computed from
scratch for that click list, and MBO never flips a clicked pixel yet still refines the rest of the mask.

Fast: synthetic scenes with exact masks, no server.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import pytest

from annotate.clicks import EditCache, apply_click, apply_clicks, edit_session, honour_clicks
from annotate.geometry import mask_iou
from annotate.mbo import refine_mask
from annotate.pipeline import Pipeline
from annotate.segmenters.classical import ClassicalSegmenter
from annotate.types import Point, Prompt


def _label(mask: np.ndarray, point: Point) -> int:
    return int(mask[int(np.floor(point[1])), int(np.floor(point[0]))])


def _wrong(mask: np.ndarray, clicks: Sequence[tuple[Point, int]]) -> list[tuple[Point, int]]:
    return [(p, lab) for p, lab in clicks if _label(mask, p) != lab]


def _big_bright_object(size: int = 300, noise: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """A large bright ellipse on noisy green ground: a click inside it says "not object" against the colours."""
    rng = np.random.default_rng(0)
    img = np.empty((size, size, 3), np.float32)
    img[:] = (60, 90, 50)
    obj = np.zeros((size, size), np.uint8)
    cv2.ellipse(obj, (size // 2, size // 2), (size * 2 // 5, size * 3 // 10), 0, 0, 360, 1, -1)
    obj = obj.astype(bool)
    img[obj] = (210, 200, 180)
    return np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8), obj


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The bright 40×24 slab on green ground with a dark patch beside it (as in test_clicks)."""
    rng = np.random.default_rng(seed)
    img = np.empty((120, 140, 3), np.float32)
    img[:] = (90, 120, 80)
    img += rng.normal(0, 5, img.shape)
    obj = np.zeros((120, 140), bool)
    obj[40:80, 40:64] = True
    img[obj] = (210, 205, 200)
    img[40:80, 70:90] = (40, 40, 45)
    return np.clip(img, 0, 255).astype(np.uint8), obj


def _leaky_and_missing(obj: np.ndarray) -> np.ndarray:
    """A leak over the dark patch and the object's lower part missed: errors side by side."""
    m = obj.copy()
    m[40:80, 64:90] = True
    m[67:80, :64] = False
    return m


# --- every click ends with its label -------------------------------------------------------------------------
def test_every_clicked_pixel_has_its_label_also_when_the_window_is_processed_downscaled() -> None:
    # clicks deep inside a large object (windows far above the downscaled size), at sub-pixel positions near a
    # pixel's far corner: the colours say "object", only the click says otherwise, so the edit is little more
    # than the seed; the clicked pixel itself must still get the clicked label
    img, obj = _big_bright_object()
    negative = [(x + 0.93, y + 0.93) for y in range(100, 200, 25) for x in range(80, 230, 40)]
    positive = [(20.93, 20.93), (280.93, 30.93), (25.93, 270.93), (275.93, 275.93), (150.93, 10.93)]
    for point in negative:
        assert _label(apply_click(img, obj, point, 0), point) == 0, point
    for point in positive:
        assert _label(apply_click(img, obj, point, 1), point) == 1, point


# --- earlier clicks keep their label ----------------------------------------------------------------------------
#: click sequences of the error simulator (fix the missed part, then remove the leak next to it) in which an
#: edit that ignores the earlier clicks flips one of them
SEQUENCES = [
    [((61.5, 70.5), 1), ((68.5, 68.5), 0)],
    [((62.5, 69.5), 1), ((71.5, 63.5), 0)],
    [((60.5, 78.5), 1), ((63.5, 70.5), 1), ((66.5, 63.5), 0)],
]


@pytest.mark.parametrize("clicks", SEQUENCES)
def test_later_edits_keep_every_earlier_click(clicks: list[tuple[Point, int]]) -> None:
    img, obj = _scene()
    start = _leaky_and_missing(obj)
    pts, labs = [c[0] for c in clicks], [c[1] for c in clicks]
    assert _wrong(apply_clicks(img, start, pts, labs), clicks) == []
    # the session path (what the segmenters and the pipeline use), with and without its cache
    for cache in (None, EditCache(8)):
        mask, score = edit_session(img, "scene", lambda: (start.copy(), 0.5), clicks, cache)
        assert _wrong(mask, clicks) == [] and score == 0.5


# --- two clicks on one pixel ------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels", [(0, 1), (1, 0)])
def test_honour_clicks_the_later_of_two_opposite_clicks_on_one_pixel_wins(labels: tuple[int, int]) -> None:
    # an annotator who clicks a pixel, then clicks it again with the other label, changed their mind
    img, obj = _scene()
    for mask in (obj, ~obj):
        for point in ((50.5, 60.5), (50.2, 60.7), (80.5, 20.5)):
            out = honour_clicks(img, mask, [point, point], list(labels))
            assert _label(out, point) == labels[1], (point, labels)
    # the same with the two clicks at different positions of one pixel, among other clicks that must hold too
    clicks = [((50.2, 60.2), labels[0]), ((10.5, 10.5), 0), ((50.8, 60.9), labels[1]), ((45.5, 45.5), 1)]
    out = honour_clicks(img, obj, [c[0] for c in clicks], [c[1] for c in clicks])
    assert _wrong(out, clicks[1:]) == []


def test_honour_clicks_makes_every_click_hold_on_a_mask_that_contradicts_them() -> None:
    img, obj = _scene()
    start = _leaky_and_missing(obj)
    clicks = [((80.5, 60.5), 0), ((52.5, 74.5), 1), ((66.5, 45.5), 0), ((45.5, 78.5), 1), ((50.5, 50.5), 1)]
    out = honour_clicks(img, start, [c[0] for c in clicks], [c[1] for c in clicks])
    assert _wrong(out, clicks) == []


# --- removing and branching clicks ------------------------------------------------------------------------------
C1, C2, C3, C4 = ((80.5, 60.5), 0), ((52.5, 76.5), 1), ((66.5, 45.5), 0), ((45.5, 78.5), 1)
#: what a session sends, request after request: clicks added, the second removed, an undo, all removed, a branch
SESSION = [[C1], [C1, C2], [C1, C2, C3], [C1, C3], [C1], [], [C1, C4], [C1, C2, C3]]


def test_pipeline_click_session_with_removed_and_branched_clicks_equals_computing_from_scratch() -> None:
    img, obj = _scene()
    box = (36.0, 36.0, 94.0, 84.0)
    session = Pipeline(ClassicalSegmenter())
    for clicks in SESSION:
        prompt = Prompt(box=box, points=[c[0] for c in clicks], point_labels=[c[1] for c in clicks])
        got = session.run(img, [prompt], image_key="scene")[0]
        fresh = Pipeline(ClassicalSegmenter()).run(img, [prompt])[0]  # no image key: nothing cached
        assert got.ok and fresh.ok
        assert np.count_nonzero(got.mask != fresh.mask) == 0, clicks
        assert _wrong(got.mask, clicks) == []


def test_edit_session_cache_with_removed_and_branched_clicks_equals_computing_from_scratch() -> None:
    img, obj = _scene()
    start = _leaky_and_missing(obj)
    cache = EditCache(32)
    for clicks in SESSION:
        cached, _ = edit_session(img, "scene", lambda: (start.copy(), 0.5), clicks, cache)
        scratch, _ = edit_session(img, "scene", lambda: (start.copy(), 0.5), clicks, None)
        assert np.count_nonzero(cached != scratch) == 0, clicks
        if not clicks:
            assert np.array_equal(cached, start)  # every click removed: the click-free mask again


def test_classical_segmenter_session_with_removed_clicks_equals_a_fresh_segmenter() -> None:
    img, obj = _scene()
    box = np.array([36.0, 36.0, 94.0, 84.0])
    seg = ClassicalSegmenter()
    seg.set_image(img, image_key="scene")
    for clicks in SESSION:
        kwargs = {}
        if clicks:
            kwargs = {"point_coords": np.array([c[0] for c in clicks]), "point_labels": np.array([c[1] for c in clicks])}
        got = seg.predict(box=box, **kwargs).mask
        fresh = ClassicalSegmenter()
        fresh.set_image(img)
        assert np.count_nonzero(got != fresh.predict(box=box, **kwargs).mask) == 0, clicks


# --- MBO --------------------------------------------------------------------------------------------------------
def _loose_rim_scene(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright ellipse and a mask 3 px too wide all round (what MBO tightens)."""
    rng = np.random.default_rng(0)
    img = np.empty((size, size, 3), np.float32)
    img[:] = (90, 120, 80)
    obj = np.zeros((size, size), np.uint8)
    cv2.ellipse(obj, (size // 2, size // 2), (size * 3 // 8, size // 4), 20, 0, 360, 1, -1)
    obj = obj.astype(bool)
    img[obj] = (210, 200, 180)
    img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    mask = cv2.dilate(obj.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    return img, obj, mask


def test_mbo_never_flips_a_clicked_pixel_when_it_refines_downscaled() -> None:
    # a 320-px image: the refinement runs on a reduced crop; clicks on the rim say "this is object"
    img, obj, mask = _loose_rim_scene(320)
    assert np.count_nonzero(refine_mask(img, mask) & mask & ~obj) < 0.2 * np.count_nonzero(mask & ~obj)
    rim = np.argwhere(mask & ~obj)
    rng = np.random.default_rng(0)
    points = [(x + 0.5, y + 0.5) for y, x in rim[rng.choice(len(rim), 20, replace=False)]]
    for point in points:
        out = refine_mask(img, mask, points=[point], point_labels=[1])
        assert _label(out, point) == 1, point
    together = refine_mask(img, mask, points=points, point_labels=[1] * len(points))
    assert _wrong(together, [(p, 1) for p in points]) == []


def test_mbo_with_a_click_still_refines_the_rest_of_the_mask() -> None:
    # a click vouches for the pixels around it, not for the whole mask: the rest of the loose rim still goes
    img, obj, mask = _loose_rim_scene(160)
    rim = np.argwhere(mask & ~obj)
    rng = np.random.default_rng(1)
    points = [(x + 0.5, y + 0.5) for y, x in rim[rng.choice(len(rim), 5, replace=False)]]
    free = refine_mask(img, mask)
    assert mask_iou(free, obj) > mask_iou(mask, obj) + 0.05
    for point in points:
        out = refine_mask(img, mask, points=[point], point_labels=[1])
        assert _label(out, point) == 1
        assert mask_iou(out, obj) > mask_iou(mask, obj) + 0.05, point
