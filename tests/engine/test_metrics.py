"""Metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from annotate.metrics import (
    PRECISION_THRESHOLDS,
    box_iou,
    intersection_union,
    iou,
    resize_mask,
    rrsis_scores,
)


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_iou_hand_values() -> None:
    a = _rect(10, 10, 0, 4, 0, 4)  # 16 px
    b = _rect(10, 10, 2, 6, 2, 6)  # 16 px, overlap 2x2 = 4
    assert intersection_union(a, b) == (4, 28)
    assert iou(a, b) == pytest.approx(4 / 28)
    assert iou(a, a) == 1.0
    assert iou(a, ~a) == 0.0


def test_iou_empty_union_is_zero_and_nonbool_inputs() -> None:
    z = np.zeros((5, 7), dtype=bool)
    assert iou(z, z) == 0.0
    # uint8 0/255 masks count any non-zero value as foreground
    assert iou(_rect(5, 7, 0, 2, 0, 2).astype(np.uint8) * 255, _rect(5, 7, 0, 2, 0, 2)) == 1.0


def test_iou_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        iou(np.zeros((3, 3), bool), np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="2-D"):
        iou(np.zeros((3, 3, 1), bool), np.zeros((3, 3, 1), bool))


def test_rrsis_scores_native_hand_values() -> None:
    gt1 = _rect(10, 10, 0, 10, 0, 10)  # 100 px
    pred1 = _rect(10, 10, 0, 10, 0, 9)  # 90 px inside -> IoU 0.9
    gt2 = _rect(10, 10, 0, 2, 0, 5)  # 10 px
    pred2 = _rect(10, 10, 0, 2, 0, 3)  # 6 px inside -> IoU 0.6
    gt3 = _rect(10, 10, 0, 1, 0, 4)  # 4 px
    pred3 = np.zeros((10, 10), bool)  # IoU 0
    s = rrsis_scores([pred1, pred2, pred3], [gt1, gt2, gt3])
    assert s.n == 3
    assert s.miou == pytest.approx((0.9 + 0.6 + 0.0) / 3)
    assert s.oiou == pytest.approx((90 + 6 + 0) / (100 + 10 + 4))
    # IoU >= threshold (0.9 counts at Pr@0.9; 0.6 counts at Pr@0.6)
    assert s.precision == pytest.approx({0.5: 2 / 3, 0.6: 2 / 3, 0.7: 1 / 3, 0.8: 1 / 3, 0.9: 1 / 3})
    assert tuple(sorted(s.precision)) == PRECISION_THRESHOLDS
    d = s.as_dict()
    assert d["Pr@0.5"] == pytest.approx(2 / 3) and d["n"] == 3


def test_rrsis_scores_480_protocol_changes_oiou_weighting() -> None:
    # sample A: 960x960 image, pred covers half of gt; sample B: 48x48, perfect.
    gt_a = _rect(960, 960, 0, 960, 0, 960)
    pred_a = _rect(960, 960, 0, 960, 0, 480)
    gt_b = _rect(48, 48, 0, 48, 0, 48)
    pred_b = gt_b.copy()
    native = rrsis_scores([pred_a, pred_b], [gt_a, gt_b], protocol="native")
    p480 = rrsis_scores([pred_a, pred_b], [gt_a, gt_b], protocol="480")
    assert native.miou == pytest.approx(0.75) and p480.miou == pytest.approx(0.75)
    assert native.oiou == pytest.approx((960 * 480 + 48 * 48) / (960 * 960 + 48 * 48))
    # at 480x480 both samples have 480*480 union px: (0.5 + 1) / 2
    assert p480.oiou == pytest.approx((480 * 240 + 480 * 480) / (2 * 480 * 480))


def test_rrsis_scores_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no samples"):
        rrsis_scores([], [])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        rrsis_scores([np.zeros((2, 2), bool)] * 2, [np.zeros((2, 2), bool)])
    with pytest.raises(ValueError, match="protocol"):
        rrsis_scores([np.zeros((2, 2), bool)], [np.zeros((2, 2), bool)], protocol="512")  # type: ignore[arg-type]


def test_resize_mask_nearest_matches_pil_nearest() -> None:
    rng = np.random.default_rng(0)
    for shape in [(37, 53), (480, 480), (1000, 700), (5, 3)]:
        m = rng.random(shape) > 0.5
        ours = resize_mask(m, (480, 480))
        pil = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((480, 480), Image.NEAREST)) > 0
        assert ours.dtype == bool and ours.shape == (480, 480)
        np.testing.assert_array_equal(ours, pil)


def test_resize_mask_exact_upsample_and_size_order() -> None:
    m = np.array([[1, 0], [0, 1]], dtype=bool)
    up = resize_mask(m, (4, 6))  # (height, width)
    expected = np.zeros((4, 6), bool)
    expected[:2, :3] = True
    expected[2:, 3:] = True
    np.testing.assert_array_equal(up, expected)


def test_box_iou_hand_values() -> None:
    assert box_iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert box_iou((0, 0, 4, 2), (1, 0, 3, 2)) == pytest.approx(4 / 8)


@pytest.mark.parametrize("side", [512, 768, 1024])
def test_resize_mask_matches_pil_on_multiples_of_64(side: int) -> None:
    # PIL accumulates its nearest-neighbour step in floating point: a closed-form index formula differs from
    # it on 28 of 480 rows/columns at these sizes, which shifts the 480-protocol Pr@0.9.
    rng = np.random.default_rng(side)
    for shape in [(side, side), (side, side + 64)]:
        m = rng.random(shape) > 0.5
        pil = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((480, 480), Image.NEAREST)) > 0
        np.testing.assert_array_equal(resize_mask(m, (480, 480)), pil)
