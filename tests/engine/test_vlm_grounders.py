"""Florence-2 and Qwen2.5-VL grounders: strict answer parsers, and tiny random models through the real loading,
generation and pipeline paths (a model made to answer a known box, and one answering noise)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from annotate.grounding.base import GroundingError
from annotate.grounding.vlm import (florence_loc_bins, florence_target, parse_florence_answer, parse_qwen_answer,
                                    qwen_answer)

# ------------------------------------------------------------------------------------------ parsers (no model)


def test_florence_location_tokens_become_bin_centres_of_the_original_image() -> None:
    boxes = parse_florence_answer("</s><s>the tank<loc_100><loc_200><loc_500><loc_900></s>", width=700, height=500)
    assert boxes == [pytest.approx((100.5 * 0.7, 200.5 * 0.5, 500.5 * 0.7, 900.5 * 0.5))]
    # several phrases: every box, in answer order
    two = parse_florence_answer("a<loc_0><loc_0><loc_9><loc_9>b<loc_10><loc_10><loc_999><loc_999>", 1000, 1000)
    assert two == [pytest.approx((0.5, 0.5, 9.5, 9.5)), pytest.approx((10.5, 10.5, 999.5, 999.5))]


@pytest.mark.parametrize("answer", [
    "the tank", "the tank<loc_1><loc_2><loc_3>", "<loc_1><loc_2><loc_3><loc_4><loc_5>",
    "x<loc_500><loc_10><loc_100><loc_20>", "x<loc_1><loc_2><loc_1000><loc_4>", "",
])
def test_florence_answers_without_a_well_formed_box_fail_quoting_the_answer(answer: str) -> None:
    with pytest.raises(GroundingError, match="Florence-2 answer has no box"):
        parse_florence_answer(answer, 100, 100)


def test_florence_target_round_trips_through_the_parser() -> None:
    box = (32.0, 40.0, 96.0, 88.0)
    target = florence_target("The building  in the CENTER", box, 128, 128)
    assert target.startswith("the building in the center<loc_")
    assert florence_loc_bins(box, 128, 128) == [250, 312, 750, 687]
    (parsed,) = parse_florence_answer(target, 128, 128)
    assert np.allclose(parsed, box, atol=128 / 1000)


def test_qwen_boxes_are_mapped_from_the_resized_input_to_the_image() -> None:
    answer = '```json\n[\n  {"bbox_2d": [28, 14, 56, 42], "label": "the ship"}\n]\n```'
    (box,) = parse_qwen_answer(answer, input_size=(56, 56), image_size=(112, 84))
    assert box == pytest.approx((56.0, 21.0, 112.0, 63.0))
    # a bare object without a fence is the same answer
    assert parse_qwen_answer('{"bbox_2d": [1, 2, 3, 4]}', (10, 10), (10, 10)) == [(1.0, 2.0, 3.0, 4.0)]
    two = parse_qwen_answer('[{"bbox_2d": [0, 0, 5, 5]}, {"bbox_2d": [5, 5, 9, 9]}]', (10, 10), (20, 20))
    assert two == [(0.0, 0.0, 10.0, 10.0), (10.0, 10.0, 18.0, 18.0)]


@pytest.mark.parametrize("answer, message", [
    ("The ship is at the top left.", "no box"),
    ('```json\n[{"bbox_2d": [1, 2, 3]}]\n```', 'no valid "bbox_2d"'),
    ('[{"box": [1, 2, 3, 4]}]', 'no valid "bbox_2d"'),
    ('[{"bbox_2d": [1, 2, true, 4]}]', 'no valid "bbox_2d"'),
    ('[{"bbox_2d": ["1", 2, 3, 4]}]', 'no valid "bbox_2d"'),
    ('[{"bbox_2d": [5, 2, 3, 4]}]', "is empty"),
    ("[]", "lists no box"),
    ('[{"bbox_2d": [1, 2, 3, 4]', "no box"),
])
def test_qwen_answers_without_a_valid_box_fail_with_a_clear_message(answer: str, message: str) -> None:
    with pytest.raises(GroundingError, match="Qwen2.5-VL answer") as err:
        parse_qwen_answer(answer, (56, 56), (100, 100))
    assert message in str(err.value)
    assert "\n" not in str(err.value)  # one line, whatever the answer held


def test_qwen_target_round_trips_through_the_parser() -> None:
    answer = qwen_answer("The Ship", (10.4, 20.6, 30.0, 40.0))
    assert '"bbox_2d": [10, 21, 30, 40]' in answer and '"label": "the ship"' in answer
    assert parse_qwen_answer(answer, (56, 56), (56, 56)) == [(10.0, 21.0, 30.0, 40.0)]


# ------------------------------------------------------------------------------------------ tiny models

IMAGE = np.zeros((50, 70, 3), np.uint8)


@pytest.fixture(scope="module")
def florence_dir(tmp_path_factory) -> Path:
    from tests.support.tiny_vlms import save_tiny_florence2

    return save_tiny_florence2(tmp_path_factory.mktemp("florence") / "florence-tiny")


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    from tests.support.tiny_vlms import save_tiny_qwen25_vl

    return save_tiny_qwen25_vl(tmp_path_factory.mktemp("qwen") / "qwen-tiny")


def _answering(source: Path, tmp_path: Path, answer: str) -> Path:
    from tests.support.tiny_vlms import force_answer

    target = tmp_path / f"{source.name}-answering"
    shutil.copytree(source, target)
    force_answer(target, answer)
    return target


def test_florence_answer_becomes_the_box_through_loading_and_generation(florence_dir, tmp_path) -> None:
    from annotate.grounding import choose_box, load_grounder
    from annotate.grounding.vlm import Florence2Grounder

    model = _answering(florence_dir, tmp_path, "the building<loc_100><loc_200><loc_500><loc_900>")
    grounder = load_grounder(model, device="cpu")
    assert isinstance(grounder, Florence2Grounder)
    best = choose_box(grounder, IMAGE, "The building")
    assert best.box == pytest.approx((100.5 * 0.07, 200.5 * 0.05, 500.5 * 0.07, 900.5 * 0.05))
    assert 0.9 < best.score <= 1.0  # the forced tokens are (almost) certain


def test_qwen_answer_is_mapped_back_through_loading_and_generation(qwen_dir, tmp_path) -> None:
    from annotate.grounding import load_grounder
    from annotate.grounding.vlm import Qwen25VLGrounder

    model = _answering(qwen_dir, tmp_path, '```json\n[{"bbox_2d": [10, 20, 50, 40], "label": "x"}]\n```')
    grounder = load_grounder(model, device="cpu")
    assert isinstance(grounder, Qwen25VLGrounder)
    (candidate,) = grounder.ground(IMAGE, "the building at the top")
    # the processor resized 70×50 to a 56×56 input (4×4 patches of 14 px)
    assert candidate.box == pytest.approx((10 * 70 / 56, 20 * 50 / 56, 50 * 70 / 56, 40 * 50 / 56))


def test_model_version_follows_the_directory_and_its_weights(florence_dir, tmp_path) -> None:
    from annotate.grounding import load_grounder
    from annotate.modelstore import ModelCard, ModelStore

    first = load_grounder(florence_dir, device="cpu").model_version
    assert first.startswith("florence2-florence-tiny-")
    assert load_grounder(florence_dir, device="cpu").model_version == first
    copy = tmp_path / "florence-tiny"
    shutil.copytree(florence_dir, copy)
    from tests.support.tiny_vlms import save_tiny_florence2

    save_tiny_florence2(copy, seed=1)  # other weights, same name
    assert load_grounder(copy, device="cpu").model_version != first
    store = ModelStore(tmp_path / "store")
    staging = store.staging("grounding-a")
    shutil.copytree(florence_dir, staging, dirs_exist_ok=True)
    version = store.commit(staging, ModelCard(kind="grounding", base=str(florence_dir)))
    assert load_grounder(store.root, device="cpu").model_version == version.card.label


def test_an_answer_without_a_box_fails_that_prompt_alone(qwen_dir, florence_dir) -> None:
    """Random weights answer noise: the strict parser's message reaches the prompt's result; the others run."""
    from annotate.factory import build_pipeline
    from annotate.segmenters.classical import ClassicalSegmenter
    from annotate.types import Prompt

    for model, family in ((qwen_dir, "Qwen2.5-VL"), (florence_dir, "Florence-2")):
        pipeline = build_pipeline(grounding=str(model), segmenter=ClassicalSegmenter(), device="cpu")
        image = np.full((64, 80, 3), 90, np.uint8)
        image[20:40, 30:60] = 200
        results = pipeline.run(image, [Prompt(text="the building"), Prompt(box=(30, 20, 60, 40), text="the building"),
                                       Prompt(text="   ")])
        assert not results[0].ok and f"the {family} answer" in results[0].error and "no box" in results[0].error
        assert results[1].ok and results[1].mask[30, 45]
        assert not results[2].ok


def test_an_empty_expression_fails_before_generation(florence_dir) -> None:
    from annotate.grounding import load_grounder

    with pytest.raises(GroundingError, match="empty"):
        load_grounder(florence_dir, device="cpu").ground(IMAGE, "  ")


def test_a_non_grounding_vlm_type_is_refused(tmp_path) -> None:
    pytest.importorskip("transformers")
    from transformers import BartConfig

    from annotate.grounding import load_grounder

    BartConfig(vocab_size=10, d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=1,
               decoder_attention_heads=1, encoder_ffn_dim=8, decoder_ffn_dim=8).save_pretrained(tmp_path / "bart")
    with pytest.raises(GroundingError, match="Florence-2 and Qwen2.5-VL"):
        load_grounder(tmp_path / "bart", device="cpu")
