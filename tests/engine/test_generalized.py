"""Generalized referring expressions in the engine: gIoU / cIoU / N-acc / T-acc on masks with known answers, how
many objects an expression names, and stage 1 → stage 2 answering one expression with several objects or none."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.factory import build_pipeline
from annotate.grounding.base import Grounder, GroundingCandidate
from annotate.grounding.spatial import parse_cardinality, rerank, select_targets
from annotate.metrics import generalized_metrics, rrsis_scores


def _square(y0: int, x0: int, size: int = 10, shape: tuple[int, int] = (40, 40)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


EMPTY = np.zeros((40, 40), bool)


def test_generalized_metrics_on_known_answers():
    a, b = _square(0, 0), _square(20, 20)
    half = _square(0, 0) & (np.arange(40)[None, :] < 5)  # 50 of a's 100 pixels
    preds = [a | b, half, EMPTY, _square(30, 30, 4), EMPTY]
    gts = [a | b, a, EMPTY, EMPTY, b]
    s = generalized_metrics(preds, gts)
    # per expression: 1 (multi-object, exact), 0.5, 1 (no target, answered empty), 0 (no target, 16 px), 0 (missed)
    assert s.giou == pytest.approx((1 + 0.5 + 1 + 0 + 0) / 5)
    # cumulative: ∩ = 200 + 50 + 0 + 0 + 0; ∪ = 200 + 100 + 0 + 16 + 100
    assert s.ciou == pytest.approx(250 / 416)
    assert (s.n_acc, s.t_acc, s.n, s.n_no_target) == (0.5, 2 / 3, 5, 2)
    assert s.as_dict()["N-acc"] == 0.5
    # the RRSIS convention scores the right empty answer 0: why the generalized metrics exist
    assert rrsis_scores([EMPTY], [EMPTY]).miou == 0.0 and generalized_metrics([EMPTY], [EMPTY]).giou == 1.0


def test_generalized_metrics_without_one_kind_and_bad_input():
    only_targets = generalized_metrics([_square(0, 0)], [_square(0, 0)])
    assert only_targets.n_acc is None and only_targets.t_acc == 1.0 and only_targets.giou == 1.0
    only_none = generalized_metrics([EMPTY, _square(0, 0)], [EMPTY, EMPTY])
    assert only_none.t_acc is None and only_none.n_acc == 0.5 and only_none.ciou == 0.0
    with pytest.raises(ValueError, match="2 predictions but 1"):
        generalized_metrics([EMPTY, EMPTY], [EMPTY])
    with pytest.raises(ValueError, match="no samples"):
        generalized_metrics([], [])


@pytest.mark.parametrize("expression, many, count", [
    ("the storage tank at the top left", False, None),
    ("all storage tanks", True, None),
    ("the tanks on the left", True, None),
    ("two ships near the dock", True, 2),
    ("3 vehicles", True, 3),
    ("the largest of the tanks", False, None),
    ("one of the buildings", False, None),
    ("every car", True, None),
    ("the bus on the road", False, None),
    ("the glass building", False, None),
])
def test_cardinality(expression, many, count):
    c = parse_cardinality(expression)
    assert (c.many, c.count) == (many, count)


def _cands() -> list[GroundingCandidate]:
    return [GroundingCandidate((0, 0, 10, 10), 0.9), GroundingCandidate((30, 0, 40, 10), 0.8),
            GroundingCandidate((0, 30, 10, 40), 0.5), GroundingCandidate((30, 30, 40, 40), 0.2)]


def test_select_targets_one_many_numeral_none():
    assert [c.score for c in select_targets("the tank", _cands(), 0.3)] == [0.9]
    assert [c.score for c in select_targets("all tanks", _cands(), 0.3)] == [0.9, 0.8, 0.5]
    assert [c.score for c in select_targets("two tanks", _cands(), 0.3)] == [0.9, 0.8]
    assert select_targets("the tank", _cands(), 0.95) == []  # nothing passes: no target
    # equal detector scores: after spatial re-ranking only the tanks at the bottom pass
    same = [GroundingCandidate(c.box, 0.6) for c in _cands()]
    ranked = rerank("the tanks at the bottom", same, 40, 40)
    assert sorted(c.box for c in select_targets("the tanks at the bottom", ranked, 0.4)) == [
        (0, 30, 10, 40), (30, 30, 40, 40)]


class SceneGrounder(Grounder):
    """A detector of bright squares: each square is a candidate scored by its brightness, re-ranked by spatial
    cues (the same contract as the transformers grounders: candidates in [0, 1], best first)."""

    model_version = "scene"

    def __init__(self, squares: list[tuple[tuple[float, float, float, float], float]]) -> None:
        self.squares = squares

    def ground(self, image, expression, top_k=5):
        h, w = image.shape[:2]
        cands = [GroundingCandidate(box, float(image[int(box[1]) + 1, int(box[0]) + 1, 0]) / 255.0 * score)
                 for box, score in self.squares]
        return rerank(expression, cands, w, h)[:top_k]


def test_pipeline_answers_one_expression_with_several_objects_or_none():
    rgb = np.zeros((64, 64, 3), np.uint8)
    truth = [_square(4, 4, 14, (64, 64)), _square(4, 44, 14, (64, 64)), _square(44, 24, 14, (64, 64))]
    for m in truth:
        rgb[m] = 255
    boxes = [(4.0, 4.0, 18.0, 18.0), (44.0, 4.0, 58.0, 18.0), (24.0, 44.0, 38.0, 58.0)]
    pipeline = build_pipeline(grounding=SceneGrounder([(b, 0.9) for b in boxes]), device="cpu")
    many = pipeline.run_targets(rgb, "all the white squares", threshold=0.3)
    assert len(many) == 3 and all(r.ok for r in many)
    one = pipeline.run_targets(rgb, "the white square at the top left", threshold=0.3)
    assert len(one) == 1 and one[0].box == boxes[0]
    none = pipeline.run_targets(rgb, "the white square", threshold=0.95)
    assert none == []
    union = np.zeros((64, 64), bool)
    for r in many:
        union |= r.mask
    s = generalized_metrics([union, one[0].mask, np.zeros((64, 64), bool)], [truth[0] | truth[1] | truth[2], truth[0],
                                                          np.zeros((64, 64), bool)])
    # the classical segmenter's box masks include the one-pixel edge ring a human outline of a blurred aerial edge
    # has (annotate.masks.include_edge_pixels): on these crisp, unblurred 14-px squares that costs ~0.2 IoU each
    assert s.n_acc == 1.0 and s.t_acc == 1.0 and s.giou > 0.8
