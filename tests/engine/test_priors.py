"""Learned shape priors (annotate.priors) and their use by the classical segmenter."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from annotate.geometry import mask_iou
from annotate.priors import ANY, PriorSample, ShapePriors, box_normalised, diagonal_of
from annotate.segmenters.classical import ClassicalSegmenter


def _cross(w: int, h: int, arm: float = 0.3) -> np.ndarray:
    """A plus-shaped object filling a w×h box (an airplane seen from above, roughly)."""
    m = np.zeros((h, w), bool)
    cx0, cx1 = int(round(w * (0.5 - arm / 2))), int(round(w * (0.5 + arm / 2)))
    cy0, cy1 = int(round(h * (0.5 - arm / 2))), int(round(h * (0.5 + arm / 2)))
    m[:, cx0:cx1] = True
    m[cy0:cy1, :] = True
    return m


def _bar(w: int, h: int, diagonal: int) -> np.ndarray:
    """A thick bar along one diagonal of a w×h box (a bridge or a ship at an angle)."""
    m = np.zeros((h, w), np.uint8)
    p0, p1 = ((0, 0), (w - 1, h - 1)) if diagonal > 0 else ((w - 1, 0), (0, h - 1))
    cv2.line(m, p0, p1, 1, max(2, int(min(w, h) * 0.25)))
    return m.astype(bool)


def _samples(make, sizes, category: str, offset=(10, 10), image=(200, 200)):
    out = []
    for w, h in sizes:
        img = np.zeros(image, bool)
        x, y = offset
        img[y:y + h, x:x + w] = make(w, h)
        out.append(PriorSample(img, (x, y, x + w, y + h), category))
    return out


def test_prior_recovers_a_synthetic_shape():
    sizes = [(40, 40), (60, 50), (36, 44), (80, 70), (50, 64)]
    priors = ShapePriors.fit(_samples(_cross, sizes, "airplane"))
    prior = priors.get("airplane")
    assert prior is not None and prior.samples == len(sizes)
    truth = _cross(64, 64)
    learned = prior.mask(64, 64)
    assert mask_iou(learned, truth) > 0.9
    # the box itself (what filling the box would give) is far from it
    assert mask_iou(np.ones_like(truth), truth) < 0.6
    assert prior.fit_iou > 0.9


def test_prior_is_rotation_aware():
    """Bars along either diagonal train one canonical template; applied, it follows the instance's diagonal."""
    sizes = [(60, 30), (80, 40), (50, 28), (70, 36)]
    samples = _samples(lambda w, h: _bar(w, h, 1), sizes, "bridge") + _samples(lambda w, h: _bar(w, h, -1), sizes, "bridge")
    prior = ShapePriors.fit(samples).get("bridge")
    assert prior is not None
    down, up = _bar(70, 35, 1), _bar(70, 35, -1)
    assert mask_iou(prior.mask(70, 35, diagonal=1), down) > 0.6
    assert mask_iou(prior.mask(70, 35, diagonal=-1), up) > 0.6
    assert mask_iou(prior.mask(70, 35, diagonal=1), up) < 0.4
    assert diagonal_of(box_normalised(down, (0, 0, 70, 35), 32)) == 1
    assert diagonal_of(box_normalised(up, (0, 0, 70, 35), 32)) == -1


def test_categories_need_enough_samples_and_fall_back_to_the_pooled_prior():
    priors = ShapePriors.fit(_samples(_cross, [(40, 40)] * 4, "airplane") + _samples(_cross, [(40, 40)] * 2, "ship"))
    assert set(priors.categories) == {"airplane", ANY}
    assert priors.get("ship") is priors.categories[ANY]
    assert ShapePriors.fit([]).get("anything") is None


def test_save_load_roundtrip(tmp_path):
    priors = ShapePriors.fit(_samples(_cross, [(40, 40), (50, 60), (30, 30)], "airplane"))
    priors.save(tmp_path / "p")
    loaded = ShapePriors.load(tmp_path / "p")
    assert loaded.digest == priors.digest
    assert np.array_equal(loaded.get("airplane").mask(50, 50), priors.get("airplane").mask(50, 50))
    (tmp_path / "bad").mkdir()
    with pytest.raises(ValueError, match="not a shape-prior directory"):
        ShapePriors.load(tmp_path / "bad")


def _camouflaged_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """A cross-shaped object with the background's own texture: colour says nothing, only a shape prior can."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(90, 160, size=(160, 160, 3)).astype(np.uint8)
    rgb = cv2.GaussianBlur(rgb, (3, 3), 0)
    truth = np.zeros((160, 160), bool)
    truth[40:120, 40:120] = _cross(80, 80)
    return rgb, truth, (40.0, 40.0, 120.0, 120.0)


def test_classical_segmenter_uses_the_learned_prior_of_the_category():
    rgb, truth, box = _camouflaged_scene()
    priors = ShapePriors.fit(_samples(_cross, [(40, 40), (60, 50), (36, 44), (80, 70)], "airplane"))
    plain = ClassicalSegmenter()
    learned = ClassicalSegmenter(priors=priors)
    assert learned.name != plain.name and learned.name.startswith("classical")
    ious = {}
    for name, seg, category in (("plain", plain, None), ("airplane", learned, "airplane")):
        seg.set_image(rgb, image_key="scene")
        ious[name] = mask_iou(seg.predict(box=np.array(box), category=category).mask, truth)
    assert ious["airplane"] > 0.8
    assert ious["airplane"] > ious["plain"] + 0.1


def test_learned_prior_keeps_clicks_as_hard_constraints():
    rgb, truth, box = _camouflaged_scene(1)
    priors = ShapePriors.fit(_samples(_cross, [(40, 40), (60, 50), (36, 44)], "airplane"))
    seg = ClassicalSegmenter(priors=priors)
    seg.set_image(rgb, image_key="scene")
    # a corner of the box: outside the cross, so the prior alone would leave it out
    out = seg.predict(box=np.array(box), point_coords=np.array([[45.0, 45.0], [80.0, 80.0]]),
                      point_labels=np.array([1, 0]), category="airplane")
    assert out.mask[45, 45] and not out.mask[80, 80]
