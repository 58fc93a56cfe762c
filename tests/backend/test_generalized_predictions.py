"""Pre-labels of a generalized config (converters/configs/generalized_expression_per_task.xml) through /predict:
stage 1 keeps one box, every box above the threshold, or none ("no target" choice); stage 2 segments each box.

A tiny random Grounding DINO (real architecture) answers: its scores are arbitrary, so the threshold is set to
pass every candidate (0) or none (above 1), which makes the expected shape of each answer certain."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.labelstudio.schema import LabelSchema

CONFIG = (Path(__file__).resolve().parents[2] / "converters" / "configs" / "generalized_expression_per_task.xml").read_text()


@pytest.fixture(scope="module")
def tiny_grounder(tmp_path_factory) -> Path:
    from tests.support.tiny_grounders import save_tiny_grounding_dino

    return save_tiny_grounding_dino(tmp_path_factory.mktemp("tiny-gdino") / "model")


def _predict(client, expressions: list[str]) -> list[dict]:
    tasks = [{"id": k + 1, "data": {"image": "/data/local-files/?d=scenes/a.png", "expression": e}}
             for k, e in enumerate(expressions)]
    answer = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG, "project": "1"})
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["results"]


def _kinds(prediction: dict) -> list[str]:
    return [r["type"] for r in prediction["result"]]


def test_one_many_and_no_target_prelabels(make_client, tiny_grounder):
    schema = LabelSchema.parse(CONFIG)
    everything = make_client(grounding_model=str(tiny_grounder), device="cpu", target_threshold=0.0)
    one, many = _predict(everything, ["the vehicle", "all vehicles"])
    assert _kinds(one).count("brushlabels") == 1 and "choices" not in _kinds(one)
    masks = [r for r in many["result"] if r["type"] == "brushlabels"]
    boxes = [r for r in many["result"] if r["type"] == "rectanglelabels"]
    assert len(masks) >= 2 and len(boxes) == len(masks)  # one region (with its box) per object
    assert {b["parentID"] for b in boxes} == {m["id"] for m in masks}
    assert 0.0 <= many["score"] <= 1.0

    nothing = make_client(grounding_model=str(tiny_grounder), device="cpu", target_threshold=1.01)
    [none] = _predict(nothing, ["all vehicles"])
    assert none["result"] == [{"id": none["result"][0]["id"], "type": "choices", "from_name": schema.no_target_name,
                               "to_name": "image", "value": {"choices": ["no target"]}, "score": none["score"]}]
    assert 0.0 <= none["score"] <= 1.0
