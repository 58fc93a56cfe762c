"""Expression normalisation, spatial-cue re-ranking and the given-box grounder (no models)."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.grounding import GivenBoxGrounder, GroundingCandidate, GroundingError
from annotate.grounding.spatial import parse_cues, rerank, spatial_fit
from annotate.grounding.text import grounding_dino_prompt, normalise_expression, owlv2_query


def test_grounding_dino_prompt_is_one_lower_case_phrase_ending_with_a_period() -> None:
    assert grounding_dino_prompt("  The Storage Tank. At the TOP left? ") == "the storage tank at the top left."
    assert grounding_dino_prompt("a car") == "a car."
    assert owlv2_query("The Car on the right.") == "the car on the right"


@pytest.mark.parametrize("bad", ["", "   ", ".", " ? . ", None, 3])
def test_empty_or_missing_expression_is_a_grounding_error(bad: object) -> None:
    with pytest.raises(GroundingError):
        normalise_expression(bad)


def test_parse_cues() -> None:
    c = parse_cues("the storage tank at the top left")
    assert (c.vertical, c.horizontal, c.center, c.size) == ("top", "left", False, None)
    c = parse_cues("the largest building on the right")
    assert (c.horizontal, c.size) == ("right", "largest")
    assert parse_cues("the vehicle in the center").center
    assert not parse_cues("the middle left car").center  # "middle" only qualifies "left"
    assert parse_cues("the northern ship").vertical == "top"
    assert parse_cues("a tennis court").empty


def _cands() -> list[GroundingCandidate]:
    # left-small, right-large, bottom-medium; equal detector scores
    return [
        GroundingCandidate((10, 40, 30, 60), 0.8),
        GroundingCandidate((150, 30, 190, 90), 0.8),
        GroundingCandidate((90, 160, 120, 190), 0.8),
    ]


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("the tank on the left", (10, 40, 30, 60)),
        ("the tank on the right", (150, 30, 190, 90)),
        ("the tank at the bottom", (90, 160, 120, 190)),
        ("the largest tank", (150, 30, 190, 90)),
        ("the smallest tank", (10, 40, 30, 60)),
    ],
)
def test_rerank_follows_spatial_cues(expression: str, expected: tuple) -> None:
    ranked = rerank(expression, _cands(), 200, 200)
    assert ranked[0].box == expected
    assert all(0.0 <= c.score <= 1.0 for c in ranked)
    assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)


def test_rerank_without_cues_keeps_detector_order_and_scores() -> None:
    cands = [GroundingCandidate((0, 0, 10, 10), 0.2), GroundingCandidate((50, 50, 60, 60), 0.9)]
    ranked = rerank("a storage tank", cands, 100, 100)
    assert [c.score for c in ranked] == [0.9, 0.2]


def test_position_alone_never_promotes_a_detection_the_model_does_not_believe() -> None:
    confident_wrong_place = GroundingCandidate((150, 150, 190, 190), 0.9)
    unlikely_right_place = GroundingCandidate((5, 5, 20, 20), 0.05)
    ranked = rerank("the car at the top left", [confident_wrong_place, unlikely_right_place], 200, 200)
    assert ranked[0].box == confident_wrong_place.box


def test_spatial_fit_is_one_without_cues() -> None:
    assert spatial_fit(parse_cues("a ship"), _cands(), 200, 200) == [1.0, 1.0, 1.0]


def test_given_box_grounder() -> None:
    image = np.zeros((100, 120, 3), np.uint8)
    g = GivenBoxGrounder({"The tank on the left": (5, 5, 40, 50)}, default=None)
    [c] = g.ground(image, "the tank on the left ")
    assert c.box == (5.0, 5.0, 40.0, 50.0) and c.score == 1.0
    with pytest.raises(GroundingError, match="no box"):
        g.ground(image, "another object")
    clipped = GivenBoxGrounder(default=(100, 90, 200, 200)).ground(image, "x")[0].box
    assert clipped == (100.0, 90.0, 120.0, 100.0)
    with pytest.raises(GroundingError, match="outside"):
        GivenBoxGrounder(default=(300, 300, 400, 400)).ground(image, "x")
    with pytest.raises(GroundingError, match="empty"):
        GivenBoxGrounder(default=(10, 10, 5, 20))


@pytest.mark.parametrize("expression", ["large vehicle", "Large_Vehicle", "small-vehicle", "small vehicle"])
def test_category_names_made_into_expressions_are_not_size_cues(expression: str) -> None:
    # `pslg export --missing-expression label` turns the label into the expression; the class name must not make
    # the grounder prefer the largest (or smallest) candidate over the detector's choice.
    assert parse_cues(expression).empty
    ranked = rerank(expression, _cands()[::-1], 200, 200)
    assert [c.score for c in ranked] == [0.8, 0.8, 0.8]
    assert ranked[0].box == (90, 160, 120, 190)  # the detector's (stable) order, not the size rule


def test_superlatives_and_extra_category_names() -> None:
    assert parse_cues("the largest large vehicle").size == "largest"
    assert parse_cues("the big tank").size == "largest"
    assert parse_cues("the big tank", categories=["Big Tank"]).empty


def test_weight_zero_turns_spatial_reranking_off() -> None:
    cands = [GroundingCandidate((0, 0, 10, 10), 0.9), GroundingCandidate((150, 150, 190, 190), 0.8)]
    assert rerank("the car on the right", cands, 200, 200)[0].box == (150, 150, 190, 190)
    ranked = rerank("the car on the right", cands, 200, 200, weight=0.0)
    assert [(c.box, c.score) for c in ranked] == [((0, 0, 10, 10), 0.9), ((150, 150, 190, 190), 0.8)]
