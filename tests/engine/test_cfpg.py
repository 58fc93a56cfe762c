"""CFPG: the generated point must lie on the object — never in a hole, never on the background."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.cfpg import foreground_point, kmeans_foreground
from annotate.synthetic import make_scene


def _inside(mask: np.ndarray, point) -> bool:
    x, y = point
    return bool(mask[int(np.floor(y)), int(np.floor(x))])


@pytest.mark.parametrize("kind", ["vehicle", "building", "storage_tank"])
def test_point_inside_convex_objects(kind: str) -> None:
    for seed in range(6):
        scene = make_scene(seed, kinds=(kind,), n_objects=2)
        for obj in scene.objects:
            p = foreground_point(scene.image, obj.box)
            assert p is not None
            assert _inside(obj.mask, p), f"seed {seed}: {p} is off the {kind}"


def test_point_on_ring_not_in_hole() -> None:
    for seed in range(6):
        scene = make_scene(seed, kinds=("roundabout",), n_objects=1)
        obj = scene.objects[0]
        p = foreground_point(scene.image, obj.box)
        assert p is not None
        assert _inside(obj.mask, p), f"seed {seed}: {p} is in the hole or outside the ring"
        ys, xs = np.nonzero(obj.mask)
        # and not right at its edge: at least 2 px from the background
        x, y = int(np.floor(p[0])), int(np.floor(p[1]))
        assert obj.mask[y - 1 : y + 2, x - 1 : x + 2].all()


def test_point_with_loose_box() -> None:
    # a box 20 % larger than the object on every side still yields a point on it
    for seed in range(4):
        scene = make_scene(seed, kinds=("storage_tank", "building"), n_objects=2)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            w, h = x1 - x0, y1 - y0
            box = (max(0, x0 - 0.2 * w), max(0, y0 - 0.2 * h), min(256, x1 + 0.2 * w), min(256, y1 + 0.2 * h))
            p = foreground_point(scene.image, box)
            assert p is not None and _inside(obj.mask, p)


def test_touching_blobs_point_lands_in_one_of_them() -> None:
    img = np.full((100, 100, 3), (60, 120, 60), np.uint8)
    yy, xx = np.mgrid[0:100, 0:100]
    a = (xx - 38) ** 2 + (yy - 50) ** 2 <= 15**2
    b = (xx - 64) ** 2 + (yy - 50) ** 2 <= 13**2
    img[a | b] = (220, 220, 230)
    p = foreground_point(img, (18.0, 30.0, 82.0, 70.0))
    assert p is not None
    x, y = int(p[0]), int(p[1])
    # inside one disc and away from the neck where they touch
    assert (a[y, x] or b[y, x]) and abs(x - 52) > 4


def test_degenerate_boxes_give_none() -> None:
    img = np.full((50, 50, 3), 128, np.uint8)
    assert foreground_point(img, (10.0, 10.0, 40.0, 40.0)) is None  # uniform: no foreground
    assert foreground_point(img, (10.0, 10.0, 11.5, 11.5)) is None  # too small to cluster


def test_kmeans_foreground_is_the_object_cluster() -> None:
    lab = np.zeros((20, 20, 3), np.uint8)
    lab[5:15, 5:15] = 200
    fg = kmeans_foreground(lab, np.ones((20, 20), bool))
    assert fg is not None and fg[5:15, 5:15].all() and fg.sum() == 100
