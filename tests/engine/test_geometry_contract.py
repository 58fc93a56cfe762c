"""Edge values of the geometry helpers that decide what the pipeline sees: a float image whose brightest pixel is
exactly 1.0 is a [0, 1] image (scaled to 0…255, not read as almost black), and a box keeping less than one pixel
inside the image is refused with a message rather than segmented."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.geometry import BoxError, as_rgb, clip_box


def test_a_float_image_with_maximum_exactly_one_is_scaled() -> None:
    img = np.zeros((2, 3, 3), np.float32)
    img[0, 0] = 1.0
    img[1, 2] = (0.5, 0.25, 0.0)
    out = as_rgb(img)
    assert out.dtype == np.uint8
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[1, 2].tolist() == [127, 63, 0]
    # above 1.0 the floats are already 0…255 values
    assert as_rgb(np.full((1, 1, 3), 1.5, np.float64))[0, 0].tolist() == [1, 1, 1]


@pytest.mark.parametrize("box", [(10.0, 10.0, 10.5, 30.0), (10.0, 10.0, 30.0, 10.9), (-5.0, 0.0, 0.5, 20.0),
                                 (49.6, 0.0, 80.0, 20.0)])
def test_boxes_with_less_than_a_pixel_inside_the_image_are_refused(box) -> None:
    with pytest.raises(BoxError):
        clip_box(box, 50, 40)


def test_a_box_of_exactly_one_pixel_is_kept() -> None:
    assert clip_box((10.0, 10.0, 11.0, 11.0), 50, 40) == (10.0, 10.0, 11.0, 11.0)
    assert clip_box((-5.0, -5.0, 1.0, 1.0), 50, 40) == (0.0, 0.0, 1.0, 1.0)
