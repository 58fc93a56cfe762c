"""Tiny random Grounding DINO / OWLv2 directories through the real loading and inference paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from annotate.grounding import GroundingError, choose_box, load_grounder
from annotate.grounding.hf import GroundingDinoGrounder, Owlv2Grounder
from annotate.synthetic import make_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene(seed=3, height=160, width=224, n_objects=3)


@pytest.mark.parametrize("which, cls", [("gdino_dir", GroundingDinoGrounder), ("owlv2_dir", Owlv2Grounder)])
def test_load_and_ground(request: pytest.FixtureRequest, which: str, cls: type, scene) -> None:
    path: Path = request.getfixturevalue(which)
    grounder = load_grounder(path, device="cpu")
    assert isinstance(grounder, cls)
    assert path.name in grounder.model_version
    h, w = scene.image.shape[:2]
    candidates = grounder.ground(scene.image, scene.objects[0].expression, top_k=4)
    assert 1 <= len(candidates) <= 4
    scores = [c.score for c in candidates]
    assert scores == sorted(scores, reverse=True)
    for c in candidates:
        assert 0.0 <= c.score <= 1.0
        x0, y0, x1, y1 = c.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    best = choose_box(grounder, scene.image, scene.objects[0].expression)
    assert best.box == candidates[0].box
    # deterministic: the same input gives the same answer
    again = grounder.ground(scene.image, scene.objects[0].expression, top_k=4)
    assert [c.box for c in again] == [c.box for c in candidates]


@pytest.mark.parametrize("which", ["gdino_dir", "owlv2_dir"])
def test_bad_inputs(request: pytest.FixtureRequest, which: str) -> None:
    grounder = load_grounder(request.getfixturevalue(which), device="cpu")
    image = np.full((96, 128, 3), 90, np.uint8)  # nothing in it
    for empty in ("", "  ", "."):
        with pytest.raises(GroundingError):
            grounder.ground(image, empty)
    # an image without the object gives candidates with scores in [0, 1], not an exception
    candidates = grounder.ground(image, "the storage tank at the top left")
    assert all(0.0 <= c.score <= 1.0 for c in candidates)
    # grayscale and a long expression (longer than OWLv2's 16 tokens) are accepted
    long_text = "the small white vehicle parked next to the long grey building near the road at the bottom right corner"
    assert grounder.ground(image[:, :, 0], long_text)
    with pytest.raises(GroundingError):
        grounder.ground(np.zeros((0, 5, 3), np.uint8), "a car")


def test_version_changes_when_weights_change(gdino_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tiny-gdino"
    shutil.copytree(gdino_dir, copy)
    v1 = load_grounder(copy, device="cpu").model_version
    assert load_grounder(copy, device="cpu").model_version == v1
    from transformers import GroundingDinoForObjectDetection
    import torch

    model = GroundingDinoForObjectDetection.from_pretrained(copy)
    with torch.no_grad():
        model.bbox_embed[0].layers[-1].bias.add_(0.5)
    model.save_pretrained(copy)
    assert load_grounder(copy, device="cpu").model_version != v1


def test_load_errors_name_the_spec(tmp_path: Path, gdino_dir: Path) -> None:
    with pytest.raises(GroundingError, match="does not exist"):
        load_grounder(tmp_path / "missing", device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GroundingError, match="no config.json"):
        load_grounder(empty, device="cpu")
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(GroundingError, match="is a file"):
        load_grounder(a_file, device="cpu")
    other = tmp_path / "bert"
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(other)
    shutil.copy(gdino_dir / "tokenizer.json", other)
    shutil.copy(gdino_dir / "tokenizer_config.json", other)
    with pytest.raises(GroundingError, match="'bert'"):
        load_grounder(other, device="cpu")
    broken = tmp_path / "broken"
    shutil.copytree(gdino_dir, broken)
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(GroundingError, match="broken"):
        load_grounder(broken, device="cpu")


def test_metadata_version_is_reported(gdino_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "grounding-v0007-20260101T000000Z"
    shutil.copytree(gdino_dir, copy)
    (copy / "pslg_grounder.json").write_text(json.dumps({"version": copy.name}), encoding="utf-8")
    assert load_grounder(copy, device="cpu").model_version == copy.name


def test_pipeline_text_only_prompt_uses_the_grounder(gdino_dir: Path, scene) -> None:
    from annotate.pipeline import Pipeline
    from annotate.segmenters import build_segmenter
    from annotate.types import Prompt

    grounder = load_grounder(gdino_dir, device="cpu")
    pipeline = Pipeline(build_segmenter(None), grounder=grounder)
    expression = scene.objects[1].expression
    ok, empty = pipeline.run(scene.image, [Prompt(text=expression), Prompt(text="  ")])
    assert ok.ok and ok.mask.shape == scene.image.shape[:2] and ok.mask.any()
    best = grounder.ground(scene.image, expression, top_k=1)[0]
    assert ok.box == pytest.approx(best.box, abs=1.0)
    assert ok.grounding_score == pytest.approx(best.score)
    assert grounder.model_version in pipeline.model_version
    assert not empty.ok and empty.error
