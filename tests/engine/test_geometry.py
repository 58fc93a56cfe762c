"""annotate.geometry: the one place for IoU, box validation/clipping, box spellings and RGB normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from annotate.geometry import (BoxError, as_rgb, box_iou, clip_box, mask_box, mask_intersection_union, mask_iou,
                               percent_to_pixels_box, percent_to_pixels_point, pixels_to_percent_box,
                               pixels_to_percent_point, xywh_to_xyxy, xyxy_to_xywh)


def test_mask_iou_hand_values_and_empty_union() -> None:
    a = np.zeros((4, 5), bool)
    b = np.zeros((4, 5), bool)
    a[0:2, 0:2] = True  # 4 px
    b[1:3, 1:3] = True  # 4 px, 1 shared
    assert mask_intersection_union(a, b) == (1, 7)
    assert mask_iou(a, b) == pytest.approx(1 / 7)
    assert mask_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 0.0  # RRSIS convention: empty vs empty is 0
    assert mask_iou(a.astype(np.uint8) * 255, a) == 1.0  # any non-zero value is foreground


def test_mask_iou_rejects_mismatched_or_non_2d_masks() -> None:
    with pytest.raises(ValueError, match="differs"):
        mask_iou(np.zeros((3, 3), bool), np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="2-D"):
        mask_iou(np.zeros((3, 3, 1), bool), np.zeros((3, 3), bool))


def test_box_iou_hand_values() -> None:
    assert box_iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert box_iou((0, 0, 4, 2), (1, 0, 3, 2)) == pytest.approx(0.5)


def test_clip_box_clips_validates_and_names_the_box() -> None:
    assert clip_box((-5, -5, 20, 8), 10, 10) == (0.0, 0.0, 10.0, 8.0)
    with pytest.raises(BoxError, match="empty"):
        clip_box((5, 5, 5, 9), 10, 10)
    with pytest.raises(BoxError, match="outside the 10×10 image"):
        clip_box((20, 20, 30, 30), 10, 10)
    with pytest.raises(BoxError, match="finite"):
        clip_box((0, 0, math.nan, 5), 10, 10)
    with pytest.raises(BoxError, match="four numbers"):
        clip_box(("a", 0, 1, 1), 10, 10)
    assert issubclass(BoxError, ValueError)  # the pipeline reports ValueErrors as the prompt's own error


def test_box_spellings_round_trip() -> None:
    assert xywh_to_xyxy((3, 4, 10, 20)) == (3.0, 4.0, 13.0, 24.0)
    assert xyxy_to_xywh((3, 4, 13, 24)) == (3.0, 4.0, 10.0, 20.0)
    box = (12.5, 30.0, 112.5, 90.0)
    pct = pixels_to_percent_box(box, 250, 120)
    assert pct == pytest.approx({"x": 5.0, "y": 25.0, "width": 40.0, "height": 50.0})
    assert percent_to_pixels_box(pct, 250, 120) == pytest.approx(box)
    assert percent_to_pixels_point({"x": 10, "y": 50}, 200, 80) == pytest.approx((20.0, 40.0))
    assert pixels_to_percent_point((20, 40), 200, 80) == pytest.approx({"x": 10.0, "y": 50.0})


def test_percent_conversions_refuse_what_label_studio_would_draw_as_nan() -> None:
    with pytest.raises(BoxError, match="non-finite"):
        pixels_to_percent_box((0, 0, math.inf, 5), 10, 10)
    with pytest.raises(BoxError, match="not positive"):
        pixels_to_percent_box((0, 0, 5, 5), 0, 10)
    with pytest.raises(BoxError, match="percent"):
        percent_to_pixels_box({"x": 1, "y": 2, "width": 3}, 10, 10)
    with pytest.raises(BoxError, match="non-finite"):
        percent_to_pixels_box({"x": "nan", "y": 2, "width": 3, "height": 4}, 10, 10)


def test_mask_box_is_on_pixel_edges() -> None:
    m = np.zeros((10, 12), bool)
    assert mask_box(m) is None
    m[4, 3] = True
    assert mask_box(m) == (3.0, 4.0, 4.0, 5.0)
    m[7, 9] = True
    assert mask_box(m) == (3.0, 4.0, 10.0, 8.0)


def test_as_rgb_normalises_every_image_spelling() -> None:
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = as_rgb(gray)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8 and (out[..., 2] == gray).all()
    rgba = np.full((2, 2, 4), 7, np.uint8)
    assert as_rgb(rgba).shape == (2, 2, 3)
    unit = np.full((2, 2, 3), 0.5, np.float32)
    assert (as_rgb(unit) == 127).all()  # floats in [0, 1] are scaled
    wide = np.array([[[-3.0, 300.0, np.nan]]])
    assert as_rgb(wide).tolist() == [[[0, 255, 0]]]  # clipped, NaN → 0
    assert as_rgb(np.zeros((2, 2, 1), np.uint8)).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="H×W×3"):
        as_rgb(np.zeros((0, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="H×W×3"):
        as_rgb(np.zeros((4,), np.uint8))
