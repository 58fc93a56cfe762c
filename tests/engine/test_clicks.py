"""Every click is a hard constraint for every stage: click edits, the classical segmenter (shape prior and box-prior
fallback included), MBO, and the pipeline around any segmenter — on synthetic scenes with exact masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from annotate.clicks import ClickParams, apply_click, apply_clicks, honour_clicks
from annotate.geometry import mask_iou
from annotate.mbo import refine_mask
from annotate.pipeline import Pipeline
from annotate.segmenters.classical import ClassicalSegmenter
from annotate.types import Prompt


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright 40×24 rotated-free slab (the object) on noisy green ground with a dark patch beside it."""
    rng = np.random.default_rng(seed)
    img = np.empty((120, 140, 3), np.float32)
    img[:] = (90, 120, 80)
    img += rng.normal(0, 5, img.shape)
    obj = np.zeros((120, 140), bool)
    obj[40:80, 40:64] = True
    img[obj] = (210, 205, 200)
    img[40:80, 70:90] = (40, 40, 45)  # a shadow-like patch a loose box swallows
    return np.clip(img, 0, 255).astype(np.uint8), obj


def _leaky(obj: np.ndarray) -> np.ndarray:
    """The object plus a leak over the dark patch (what a segmenter returns on a loose box)."""
    m = obj.copy()
    m[40:80, 64:90] = True
    return m


def _missing(obj: np.ndarray) -> np.ndarray:
    """The object with its lower third missed."""
    m = obj.copy()
    m[67:80, :] = False
    return m


def test_negative_click_inside_a_leak_removes_it() -> None:
    img, obj = _scene()
    leaky = _leaky(obj)
    cut = apply_click(img, leaky, (80.5, 60.5), 0, params=ClickParams(keep_edge=False))
    assert not cut[60, 80]
    assert np.count_nonzero(cut[40:80, 70:90]) < 0.05 * 800  # the clicked part of the leak goes, not just a disc
    out = apply_click(img, leaky, (80.5, 60.5), 0)
    assert not out[60, 80]
    # by default the removed pixels 4-adjacent to what remains stay (the edge pixels a human outline includes),
    # and nothing else
    rim = cv2.dilate(cut.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))) > 0
    expected = leaky & ~cut & rim
    expected[60, 80] = False  # the clicked pixel keeps its label
    assert expected.any() and np.array_equal(out & ~cut, expected)
    assert not np.any(cut & ~out)
    assert np.count_nonzero(cut & ~obj) < 0.3 * np.count_nonzero(leaky & ~obj)
    assert np.count_nonzero(out & obj) >= 0.97 * obj.sum()  # the object stays
    assert mask_iou(out, obj) > mask_iou(leaky, obj) + 0.25


def test_positive_click_on_a_missed_part_adds_it() -> None:
    img, obj = _scene()
    missing = _missing(obj)
    out = apply_click(img, missing, (52.5, 74.5), 1)
    assert out[74, 52]
    assert np.count_nonzero(out & obj & ~missing) > 0.8 * np.count_nonzero(obj & ~missing)
    assert np.count_nonzero(out & ~obj) < 0.05 * obj.sum()  # no spill onto the ground


def test_a_click_the_mask_agrees_with_changes_nothing_and_a_repeated_click_is_never_ignored() -> None:
    img, obj = _scene()
    leaky = _leaky(obj)
    assert np.array_equal(apply_click(img, obj, (50.5, 50.5), 1), obj)
    once = apply_click(img, leaky, (80.5, 60.5), 0)
    twice = apply_clicks(img, leaky, [(80.5, 60.5), (80.5, 60.5)], [0, 0])
    assert not once[60, 80] and not twice[60, 80]
    assert np.array_equal(once, twice)


def test_later_clicks_keep_earlier_ones() -> None:
    img, obj = _scene()
    clicks = [(52.5, 74.5), (80.5, 60.5), (66.5, 45.5)]
    labels = [1, 0, 0]
    out = apply_clicks(img, _leaky(_missing(obj)), clicks, labels)
    for (x, y), lab in zip(clicks, labels):
        assert bool(out[int(y), int(x)]) == bool(lab)


def test_mbo_never_undoes_a_click() -> None:
    img, obj = _scene()
    # the mask agrees with the click (the leak was removed around it); an unconstrained MBO is free to regrow it
    edited = apply_click(img, _leaky(obj), (80.5, 60.5), 0)
    refined = refine_mask(img, edited, (36.0, 36.0, 94.0, 84.0), points=[(80.5, 60.5)], point_labels=[0])
    assert not refined[60, 80]
    kept = refine_mask(img, obj, (36.0, 36.0, 94.0, 84.0), points=[(50.5, 78.5)], point_labels=[1])
    assert kept[78, 50]


def test_classical_segmenter_honours_clicks_after_its_shape_prior() -> None:
    img, obj = _scene()
    seg = ClassicalSegmenter()
    seg.set_image(img, image_key="scene")
    box = np.array([36.0, 36.0, 94.0, 84.0])  # a loose box over the object and the dark patch
    base = seg.predict(box=box).mask
    neg = seg.predict(box=box, point_coords=np.array([[80.5, 60.5]]), point_labels=np.array([0])).mask
    assert not neg[60, 80]
    assert np.count_nonzero(neg & obj) >= 0.9 * np.count_nonzero(base & obj)
    assert mask_iou(neg, obj) >= mask_iou(base, obj)
    # the same clicks from a fresh segmenter (no cache) give the same mask: the cache only saves time
    fresh = ClassicalSegmenter()
    fresh.set_image(img)
    assert np.array_equal(fresh.predict(box=box, point_coords=np.array([[80.5, 60.5]]), point_labels=np.array([0])).mask, neg)


def test_box_prior_fallback_honours_clicks() -> None:
    # a uniform image collapses the colour segmentation: the box prior is returned; clicks still hold on it
    img = np.full((80, 80, 3), 120, np.uint8)
    seg = ClassicalSegmenter()
    seg.set_image(img)
    box = np.array([20.0, 20.0, 60.0, 60.0])
    prior = seg.predict(box=box).mask
    assert prior[40, 40] and not prior[20, 20]
    out = seg.predict(box=box, point_coords=np.array([[40.5, 40.5], [21.5, 21.5]]), point_labels=np.array([0, 1])).mask
    assert not out[40, 40] and out[21, 21]


def test_point_only_prompt_grows_its_region_from_the_image() -> None:
    # a 100-px bus: one click must give the bus, not a fixed-size box around the click
    rng = np.random.default_rng(3)
    img = np.clip(np.full((200, 220, 3), (95, 110, 85), np.float32) + rng.normal(0, 5, (200, 220, 3)), 0, 255)
    bus = np.zeros((200, 220), bool)
    bus[80:112, 60:160] = True
    img[bus] = (220, 200, 60)
    img = img.astype(np.uint8)
    seg = ClassicalSegmenter()
    seg.set_image(img)
    out = seg.predict(point_coords=np.array([[110.5, 96.5]]), point_labels=np.array([1])).mask
    assert mask_iou(out, bus) > 0.85


@pytest.mark.parametrize("use_mbo", [True, False])
def test_pipeline_honours_clicks_whatever_the_segmenter_does(use_mbo: bool) -> None:
    # a real SAM with random weights ignores what clicks mean; the pipeline still makes every click hold
    from tests.support.tiny_models import build_tiny_sam  # first: skips where torch is not installed
    from annotate.segmenters.sam import SamSegmenter

    img, obj = _scene()
    pipe = Pipeline(SamSegmenter(None, model=build_tiny_sam(0), device="cpu"), use_cfpg=False, use_mbo=use_mbo)
    points = [(50.5, 50.5), (80.5, 60.5), (10.5, 10.5), (52.5, 74.5)]
    labels = [1, 0, 0, 1]
    res = pipe.run(img, [Prompt(box=(36.0, 36.0, 94.0, 84.0), points=points, point_labels=labels)])[0]
    assert res.ok, res.error
    for (x, y), lab in zip(points, labels):
        assert bool(res.mask[int(y), int(x)]) == bool(lab)
    assert "clicks" in res.timings_ms


def test_honour_clicks_leaves_an_agreeing_mask_alone() -> None:
    img, obj = _scene()
    assert honour_clicks(img, obj, [(50.5, 50.5), (10.5, 10.5)], [1, 0]) is not None
    assert np.array_equal(honour_clicks(img, obj, [(50.5, 50.5), (10.5, 10.5)], [1, 0]), obj)


def test_pipeline_click_session_edits_the_refined_box_mask_and_the_cache_only_saves_time() -> None:
    img, obj = _scene()
    box = (36.0, 36.0, 94.0, 84.0)
    session = Pipeline(ClassicalSegmenter())  # MBO on (the classical default)
    assert session.use_mbo
    clicks = [((80.5, 60.5), 0), ((66.5, 45.5), 0), ((52.5, 79.5), 1)]
    before = session.run(img, [Prompt(box=box)], image_key="scene")[0].mask
    for k in range(1, len(clicks) + 1):
        pts, labs = [c[0] for c in clicks[:k]], [c[1] for c in clicks[:k]]
        res = session.run(img, [Prompt(box=box, points=pts, point_labels=labs)], image_key="scene")[0]
        assert res.ok, res.error
        for (x, y), lab in clicks[:k]:
            assert bool(res.mask[int(y), int(x)]) == bool(lab)
        # the click changed the mask only around itself: pixels far from every click keep their label
        far = np.ones_like(obj)
        for (x, y), _ in clicks[:k]:
            yy, xx = np.mgrid[0 : obj.shape[0], 0 : obj.shape[1]]
            far &= np.hypot(xx - x, yy - y) > 40
        assert np.array_equal(res.mask[far], before[far])
        # a fresh pipeline without an image key (no cache) gives the same answer
        fresh = Pipeline(ClassicalSegmenter()).run(img, [Prompt(box=box, points=pts, point_labels=labs)])[0]
        assert np.array_equal(fresh.mask, res.mask)
    assert mask_iou(res.mask, obj) > mask_iou(before, obj)


def _plane(seed: int = 0, scale: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright fuselage with a long thin wing on textured ground, and a long dark shadow strip under it:
    (image, object, shadow). ``scale`` multiplies every size (a large object is processed at reduced resolution)."""
    rng = np.random.default_rng(seed)
    s = scale
    img = np.empty((160 * s, 200 * s, 3), np.float32)
    img[:] = (95, 115, 85)
    img += rng.normal(0, 5, img.shape)
    obj = np.zeros(img.shape[:2], bool)
    obj[40 * s : 120 * s, 90 * s : 110 * s] = True  # fuselage
    obj[70 * s : 78 * s, 30 * s : 170 * s] = True  # wing: 8 px wide, 140 px long
    img[obj] = (215, 210, 205)
    shadow = np.zeros_like(obj)
    shadow[120 * s : 128 * s, 40 * s : 160 * s] = True  # a thin shadow strip under the fuselage
    img[shadow] = (45, 45, 50)
    return np.clip(img, 0, 255).astype(np.uint8), obj, shadow


@pytest.mark.parametrize("scale", [1, 3])
def test_a_positive_click_adds_the_whole_connected_part_it_lies_in(scale: int) -> None:
    # the mask misses a strip along the fuselage's side, 6 px wide and 80 px long: one click in its middle adds
    # all of it, not a disc of the strip's width around the click
    img, obj, _ = _plane(scale=scale)
    box = (28.0 * scale, 38.0 * scale, 172.0 * scale, 130.0 * scale)
    missing = obj.copy()
    missing[:, 104 * scale : 110 * scale] = False
    click = (107.5 * scale, 100.5 * scale)
    out = apply_click(img, missing, click, 1, box=box)
    strip = obj & ~missing
    assert out[int(click[1]), int(click[0])]
    assert np.count_nonzero(out & strip) > 0.9 * np.count_nonzero(strip)
    # no spill onto the ground (a region processed at reduced resolution is exact to one processed pixel, here
    # ≈ 2 px along the strip's edges)
    assert np.count_nonzero(out & ~obj) < (0.1 if scale == 1 else 0.25) * np.count_nonzero(strip)
    assert np.array_equal(out & missing, missing)  # a positive click only adds


@pytest.mark.parametrize("scale", [1, 3])
def test_a_negative_click_removes_the_whole_leak_it_lies_in(scale: int) -> None:
    img, obj, shadow = _plane(scale=scale)
    box = (28.0 * scale, 38.0 * scale, 172.0 * scale, 130.0 * scale)
    leaky = obj | shadow
    click = (70.5 * scale, 124.5 * scale)
    out = apply_click(img, leaky, click, 0, box=box)
    assert not out[int(click[1]), int(click[0])]
    assert np.count_nonzero(out & shadow) < 0.1 * np.count_nonzero(shadow)
    assert np.count_nonzero(out & obj) > 0.99 * np.count_nonzero(obj)  # the object stays
    assert not np.any(out & ~leaky)  # a negative click only removes


def test_clicks_keep_their_labels_and_a_branched_or_shortened_session_equals_one_computed_from_scratch() -> None:
    from annotate.clicks import EditCache, edit_session

    img, obj, shadow = _plane()
    box = (28.0, 38.0, 172.0, 130.0)
    base = obj.copy()
    base[:, :90] = False
    base |= shadow
    clicks = [((60.5, 74.5), 1), ((70.5, 124.5), 0), ((140.5, 124.5), 0), ((100.5, 60.5), 1)]
    cache = EditCache(16)
    calls = []

    def compute() -> tuple[np.ndarray, float]:
        calls.append(1)
        return base.copy(), 0.5

    sessions = [clicks, clicks[:2], clicks[:1] + [((150.5, 126.5), 0)], clicks[:3]]
    for session in sessions:
        got, _ = edit_session(img, "k", compute, session, cache, box=box)
        fresh, _ = edit_session(img, "k", lambda: (base.copy(), 0.5), session, None, box=box)
        assert np.array_equal(got, fresh)
        for (x, y), lab in session:
            assert bool(got[int(y), int(x)]) == bool(lab)
    assert len(calls) == 1  # the base mask was computed once; every later session replayed from a cached prefix
    assert mask_iou(got, obj) > 0.9 > mask_iou(base, obj)


def _textured_slab(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 60×20 rectangular object of strongly textured colour on darker textured ground: (image, object).

    The texture keeps a colour flood near the click, so what a positive click adds beyond its neighbourhood
    comes from the convex completion, not from a uniform-colour part."""
    rng = np.random.default_rng(seed)
    img = np.empty((100, 120, 3), np.float32)
    img[:] = (80, 95, 75)
    img += rng.normal(0, 12, img.shape)
    obj = np.zeros((100, 120), bool)
    obj[20:80, 50:70] = True
    img[obj] = (190, 185, 180)
    img[obj] += rng.normal(0, 25, (np.count_nonzero(obj), 3))
    return np.clip(img, 0, 255).astype(np.uint8), obj


def test_a_positive_click_on_a_convex_mask_carries_along_the_side_it_lies_on() -> None:
    img, obj = _textured_slab()
    box = (46.0, 16.0, 74.0, 84.0)
    missing = obj.copy()
    missing[:, 67:70] = False  # a 3-px strip along the whole right side
    strip = obj & ~missing
    click = (68.5, 50.5)
    local = apply_click(img, missing, click, 1, box=box, params=ClickParams(convex_min=0))
    out = apply_click(img, missing, click, 1, box=box)
    assert out[50, 68] and np.array_equal(out & missing, missing)  # a positive click only adds
    # the hull of the corrected mask fills the strip towards both ends of the side: more than the local edit
    assert np.count_nonzero(out & strip) > np.count_nonzero(local & strip) + 0.25 * np.count_nonzero(strip)
    # and nothing that the local edit and the object's own hull do not hold
    assert not np.any(out & ~obj & ~local)


def test_convex_completion_leaves_concave_objects_and_earlier_negative_clicks_alone() -> None:
    img, obj, _ = _plane()
    box = (28.0, 38.0, 172.0, 130.0)
    missing = obj.copy()
    missing[70:78, 140:170] = False  # the wing tip: the plane is far from convex
    click = (150.5, 74.5)
    plain = apply_click(img, missing, click, 1, box=box, params=ClickParams(convex_min=0))
    assert np.array_equal(apply_click(img, missing, click, 1, box=box), plain)

    slab, rect = _textured_slab()
    sbox = (46.0, 16.0, 74.0, 84.0)
    missing = rect.copy()
    missing[:, 67:70] = False
    # an earlier negative click the hull would cover: the completion is not applied
    neg = ((67.5, 40.5), 0)
    local = apply_click(slab, missing, (68.5, 50.5), 1, [neg], box=sbox, params=ClickParams(convex_min=0))
    out = apply_click(slab, missing, (68.5, 50.5), 1, [neg], box=sbox)
    assert not out[40, 67]
    assert np.array_equal(out, local)


def test_a_negative_click_on_a_thin_leak_along_a_convex_side_moves_the_whole_side() -> None:
    img, obj = _textured_slab()
    box = (46.0, 16.0, 74.0, 84.0)
    leaky = obj.copy()
    leaky[20:80, 70:73] = True  # a 3-px strip of ground (a shadow, a paint line) along the whole right side
    strip = leaky & ~obj
    click = (71.5, 50.5)
    local = apply_click(img, leaky, click, 0, box=box, params=ClickParams(side_min=0))
    out = apply_click(img, leaky, click, 0, box=box)
    assert not out[50, 71] and np.array_equal(out | leaky, leaky)  # a negative click only removes
    assert np.array_equal(out & obj, obj)  # the band is the strip's width: the object keeps every pixel
    # the side moves along its whole length: most of the strip goes, far more than the edit around the click
    assert np.count_nonzero(strip & ~out) >= 0.6 * np.count_nonzero(strip)
    assert np.count_nonzero(strip & ~out) > np.count_nonzero(strip & ~local) + 0.3 * np.count_nonzero(strip)
    assert mask_iou(out, obj) > mask_iou(local, obj) + 0.03


def test_a_side_move_leaves_concave_masks_and_earlier_positive_clicks_alone() -> None:
    img, obj, _ = _plane()
    box = (28.0, 38.0, 172.0, 130.0)
    leaky = obj.copy()
    ys, xs = np.nonzero(obj)
    top = ys.min()
    leaky[top - 3:top, xs[ys == top].min():xs[ys == top].max() + 1] = True  # a strip along the top edge
    click = (float(xs[ys == top].mean()) + 0.5, top - 1.5)
    plain = apply_click(img, leaky, click, 0, box=box, params=ClickParams(side_min=0))
    assert np.array_equal(apply_click(img, leaky, click, 0, box=box), plain)  # a plane is far from convex

    slab, rect = _textured_slab()
    sbox = (46.0, 16.0, 74.0, 84.0)
    leaky = rect.copy()
    leaky[20:80, 70:73] = True
    earlier = ((71.5, 30.5), 1)  # the annotator said this strip pixel is object: the side stays
    local = apply_click(slab, leaky, (71.5, 60.5), 0, [earlier], box=sbox, params=ClickParams(side_min=0))
    out = apply_click(slab, leaky, (71.5, 60.5), 0, [earlier], box=sbox)
    assert out[30, 71]
    assert np.array_equal(out, local)


def test_convex_completion_fills_only_the_pockets_next_to_what_the_click_added() -> None:
    img, obj = _textured_slab()
    rng = np.random.default_rng(1)
    obj[45:55, 50:54] = False  # a real notch in the object's left side (ground shows through)
    img[45:55, 50:54] = np.clip(rng.normal((80, 95, 75), 12, (10, 4, 3)), 0, 255).astype(np.uint8)
    box = (46.0, 16.0, 74.0, 84.0)
    missing = obj.copy()
    missing[:, 67:70] = False  # a 3-px strip along the whole right side
    strip = obj & ~missing
    out = apply_click(img, missing, (68.5, 50.5), 1, box=box)
    local = apply_click(img, missing, (68.5, 50.5), 1, box=box, params=ClickParams(convex_min=0))
    # the click's side is carried along: more of the strip than the local edit
    assert np.count_nonzero(out & strip) > np.count_nonzero(local & strip) + 0.25 * np.count_nonzero(strip)
    # the notch on the far side is a pocket of the hull too, but the click says nothing about it
    assert not out[45:55, 50:54].any()
    whole_hull = missing.copy()
    cv2.fillPoly(whole_hull.view(np.uint8), [cv2.convexHull(cv2.findNonZero(out.astype(np.uint8)))], 1)
    assert whole_hull[45:55, 50:54].all()  # filling the whole hull would have closed it


def test_a_negative_click_on_a_one_pixel_rim_along_a_straight_side_removes_that_rim() -> None:
    img, obj = _textured_slab()
    box = (46.0, 16.0, 74.0, 84.0)
    leaky = obj.copy()
    leaky[20:80, 70] = True  # a one-pixel rim of ground along the whole right side (a blurred edge, a shadow line)
    rim = leaky & ~obj
    click = (70.5, 50.5)
    local = apply_click(img, leaky, click, 0, box=box, params=ClickParams(rim_side=0))
    out = apply_click(img, leaky, click, 0, box=box)
    assert not out[50, 70] and np.array_equal(out | leaky, leaky)
    assert np.array_equal(out & obj, obj)  # one pixel wide: the object keeps every pixel
    assert np.count_nonzero(rim & ~out) >= 0.8 * np.count_nonzero(rim)
    assert np.count_nonzero(rim & ~out) > np.count_nonzero(rim & ~local) + 0.3 * np.count_nonzero(rim)


def _bridge_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A deck whose lower end has the colour of the road leaving it; the mask misses that end."""
    rng = np.random.default_rng(3)
    img = np.empty((140, 120, 3), np.float32)
    img[:] = (60, 90, 130)  # water
    img[20:70, 40:80] = (200, 200, 190)  # the deck's upper part
    img[70:85, 40:80] = (120, 110, 100)  # its lower end ...
    img[85:130, 55:65] = (120, 110, 100)  # ... and the road leaving it, of the same colour
    img += rng.normal(0, 3, img.shape)
    obj = np.zeros((140, 120), bool)
    obj[20:85, 40:80] = True
    shown = np.zeros_like(obj)
    shown[20:70, 40:80] = True
    return np.clip(img, 0, 255).astype(np.uint8), obj, shown


def test_a_part_holding_an_earlier_opposite_click_is_not_resegmented_whole() -> None:
    img, obj, shown = _bridge_scene()
    box = (38.0, 18.0, 82.0, 87.0)
    earlier = [((60.5, 100.5), 0)]  # the annotator said the road is not the bridge
    click = (60.5, 77.5)
    whole = apply_click(img, shown, click, 1, earlier, box=box, params=ClickParams(contested=False, contested_area=1))
    out = apply_click(img, shown, click, 1, earlier, box=box, params=ClickParams(contested_area=1))
    assert out[77, 60] and not out[100, 60]
    assert np.array_equal(out & shown, shown)  # a positive click only adds
    missed = obj & ~shown
    assert np.count_nonzero(out & missed) >= 0.4 * np.count_nonzero(missed)
    # the part of the click's colour runs down the road the earlier click excluded: re-segmenting it whole
    # gives road to the bridge; without it the click adds the deck's end and keeps off the road
    road = np.zeros_like(obj)
    road[87:, :] = True
    assert np.count_nonzero(whole & road) > 100
    assert np.count_nonzero(out & road) == 0
