"""The one pipeline factory: checkpoint names through the checkpoint registry, grounders by spec or store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from annotate.checkpoints import checkpoint_path
from annotate.factory import build_pipeline, build_segmenter, resolve_segmenter_checkpoint
from annotate.metrics import iou
from annotate.modelstore import ModelCard, ModelStore
from annotate.segmenters.classical import ClassicalSegmenter
from annotate.segmenters.sam import SamCheckpointNotFoundError, SamSegmenter
from annotate.synthetic import make_scene
from annotate.types import Prompt
from tests.support.tiny_models import save_tiny_sam_checkpoint


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``PSLG_CACHE_DIR`` as ``pslg models pull`` and the factory both read it."""
    monkeypatch.setenv("PSLG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "checkpoints"


def test_a_pulled_checkpoint_is_found_by_its_name(cache: Path) -> None:
    # what `pslg models pull vit_b` leaves behind: the file under its registry name in the cache
    pulled = save_tiny_sam_checkpoint(checkpoint_path("vit_b"))
    assert pulled.parent == cache
    assert resolve_segmenter_checkpoint("vit_b") == (pulled, "vit_b")
    segmenter = build_segmenter("vit_b", device="cpu")
    assert isinstance(segmenter, SamSegmenter) and segmenter.checkpoint == pulled


def test_a_missing_named_checkpoint_says_how_to_pull_it(cache: Path) -> None:
    path, model_type = resolve_segmenter_checkpoint("vit_l")
    assert path == cache / "sam_vit_l_0b3195.pth" and model_type == "vit_l"
    with pytest.raises(SamCheckpointNotFoundError, match="pslg models pull vit_l"):
        build_segmenter("vit_l", device="cpu")


def test_paths_are_used_as_given_and_none_means_classical(tmp_path: Path, cache: Path) -> None:
    own = save_tiny_sam_checkpoint(tmp_path / "mine.pth")
    assert resolve_segmenter_checkpoint(str(own), "auto") == (own, "auto")
    assert resolve_segmenter_checkpoint(None) == (None, "vit_b")
    assert isinstance(build_segmenter(None), ClassicalSegmenter)
    assert isinstance(build_segmenter("  "), ClassicalSegmenter)


def test_pipeline_switches_and_masks() -> None:
    scene = make_scene(seed=5, height=160, width=200, n_objects=2)
    plain = build_pipeline(use_cfpg=False, use_mbo=False)
    assert (plain.use_cfpg, plain.use_mbo, plain.grounder) == (False, False, None)
    obj = scene.objects[0]
    [result] = build_pipeline().run(scene.image, [Prompt(box=obj.box)])
    assert result.ok and iou(result.mask, obj.mask) > 0.6


def test_grounding_by_model_directory_or_store(tmp_path: Path) -> None:
    from tests.support.tiny_grounders import save_tiny_grounding_dino

    model = save_tiny_grounding_dino(tmp_path / "tiny")
    direct = build_pipeline(grounding=model, device="cpu")
    assert direct.grounder is not None and direct.grounder.model_version in direct.model_version

    store = ModelStore(tmp_path / "models")
    for _ in range(2):
        staging = store.staging("grounding-x")
        shutil.copytree(model, staging, dirs_exist_ok=True)
        store.commit(staging, ModelCard(kind="grounding", base=str(model)))
    served = build_pipeline(grounding=store.root, device="cpu").grounder
    assert served.model_version == store.get("v0002").card.label
    store.rollback("v0001")
    assert build_pipeline(grounding=store.root, device="cpu").grounder.model_version == store.get("v0001").card.label
