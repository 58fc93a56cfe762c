"""Promotion by validation (annotate.promotion): a class's learned prior is served only when it wins on held-out
corrections of that class; otherwise the class keeps what it is served, so a candidate is never worse."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.factory import build_pipeline
from annotate.geometry import mask_box, mask_iou
from annotate.promotion import HAND, LEARNED, SERVED, Pair, fold_ids, pipeline_segment, validate_priors


def _cross(h: int, w: int, x0: int, y0: int, size: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    a, b = size * 35 // 100, size * 65 // 100
    m[y0:y0 + size, x0 + a:x0 + b] = True
    m[y0 + a:y0 + b, x0:x0 + size] = True
    return m


def _scenes(n_images: int = 3, per_image: int = 4, seed: int = 0):
    """Images holding squares corrected to crosses ("airplane": no hand-made prior makes a cross) and small dark
    squares ("tank")."""
    rng = np.random.default_rng(seed)
    images, objects = {}, []
    for i in range(n_images):
        h, w = 220, 240
        img = rng.normal(90, 6, (h, w, 3)).clip(0, 255).astype(np.uint8)
        for j in range(per_image):
            x0, y0 = 12 + (j % 2) * 115, 12 + (j // 2) * 105
            colour = rng.uniform(170, 250, 3)
            size = 70 + int(rng.integers(0, 10))
            # the image shows a filled square; the annotators draw a cross in it (no rectangle explains it)
            img[y0:y0 + size, x0:x0 + size] = colour
            cross = _cross(h, w, x0, y0, size)
            objects.append((f"img{i}", "airplane", cross))
            sq = np.zeros((h, w), bool)
            sx, sy = x0 + 78, y0 + 60
            sq[sy:sy + 22, sx:sx + 22] = True
            img[sq] = rng.uniform(0, 40, 3)
            objects.append((f"img{i}", "tank", sq))
        images[f"img{i}"] = img
    return images, objects


def _pairs(objects, jitter: float = 0.06, seed: int = 1):
    rng = np.random.default_rng(seed)
    out = []
    for group, cat, mask in objects:
        x0, y0, x1, y1 = mask_box(mask)
        bw, bh = x1 - x0, y1 - y0
        d = rng.uniform(-jitter, jitter, 4) * np.array([bw, bh, bw, bh])
        out.append(Pair(group, (x0 + d[0], y0 + d[1], x1 + d[2], y1 + d[3]), cat, mask))
    return out


@pytest.fixture(scope="module")
def scenes():
    return _scenes()


def test_folds_never_split_an_image_and_fall_back_to_pairs_on_one_image():
    groups = ["a", "a", "b", "c", "c", "c", "d"]
    folds = fold_ids(groups, folds=3)
    for g in set(groups):
        assert len({folds[i] for i, x in enumerate(groups) if x == g}) == 1
    assert set(folds) == {0, 1, 2}
    single = fold_ids(["a"] * 7, folds=5)
    assert sorted(np.bincount(single)) == [1, 1, 1, 2, 2]


def test_a_class_adopts_its_prior_only_where_it_wins_on_held_out_corrections(scenes):
    images, objects = scenes
    segment = pipeline_segment(build_pipeline(), images.__getitem__)
    pairs = _pairs(objects)
    # the tanks' corrections are the hand-made pre-labels accepted unchanged: nothing to learn there
    tanks = [i for i, p in enumerate(pairs) if p.category == "tank"]
    accepted = segment(None, [pairs[i] for i in tanks])
    for i, m in zip(tanks, accepted):
        pairs[i] = Pair(pairs[i].group, pairs[i].box, "tank", np.asarray(m, bool))
    v = validate_priors(pairs, segment, served=None, min_samples=5)
    plane, tank = v.classes["airplane"], v.classes["tank"]
    assert v.folds == 3 and v.pairs == len(pairs) == 24
    assert plane.choice == LEARNED and plane.learned > plane.hand + 0.05, plane
    assert tank.choice == HAND and not tank.changed and tank.hand > 0.99, tank
    assert v.priors is not None and set(v.priors.categories) == {"airplane"}  # no pooled prior is served
    assert v.changed and v.no_worse and v.after > v.before
    assert v.class_summary() == "airplane prior adopted, tank kept"
    # served: airplanes now get crosses, tanks are segmented exactly as before
    after = segment(v.priors, pairs)
    before = segment(None, pairs)
    for p, a, b in zip(pairs, after, before):
        if p.category == "tank":
            assert np.array_equal(a, b)
    assert np.mean([mask_iou(a, p.truth) for p, a in zip(pairs, after) if p.category == "airplane"]) > \
        np.mean([mask_iou(b, p.truth) for p, b in zip(pairs, before) if p.category == "airplane"]) + 0.05

    # a second candidate on the same corrections changes nothing: the served prior stays, nothing to promote
    again = validate_priors(pairs, segment, served=v.priors, min_samples=5)
    assert again.classes["airplane"].choice in (SERVED, LEARNED)
    assert again.no_worse
    assert again.priors is not None and "airplane" in again.priors.categories


def test_too_few_corrections_of_a_class_keep_the_served_choice(scenes):
    images, objects = scenes
    segment = pipeline_segment(build_pipeline(), images.__getitem__)
    pairs = [p for p in _pairs(objects) if p.category == "airplane"][:4]
    v = validate_priors(pairs, segment, served=None, min_samples=5, prior_min_samples=1)
    plane = v.classes["airplane"]
    assert plane.choice == HAND and plane.n == 4 and "4 held-out pairs < 5" in plane.reason
    assert v.priors is None and not v.changed and v.after == v.before
    assert v.class_summary() == "airplane kept (4 < 5 held-out)"


def test_a_served_prior_that_loses_goes_back_to_the_hand_made_one(scenes):
    images, objects = scenes
    segment = pipeline_segment(build_pipeline(), images.__getitem__)
    pairs = _pairs(objects)
    crosses = validate_priors(pairs, segment, served=None, min_samples=5)
    assert crosses.priors is not None and "airplane" in crosses.priors.categories
    # the annotators now accept the hand-made airplane masks: the served cross prior is worse on them
    planes = [i for i, p in enumerate(pairs) if p.category == "airplane"]
    accepted = segment(None, [pairs[i] for i in planes])
    for i, m in zip(planes, accepted):
        pairs[i] = Pair(pairs[i].group, pairs[i].box, "airplane", np.asarray(m, bool))
    v = validate_priors(pairs, segment, served=crosses.priors, min_samples=5)
    plane = v.classes["airplane"]
    assert plane.was == LEARNED and plane.choice == HAND and plane.changed, plane
    assert v.no_worse and v.after > v.before
    assert v.priors is None or "airplane" not in v.priors.categories
    assert "airplane back to the hand-made prior" in v.class_summary()
