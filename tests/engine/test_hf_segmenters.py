"""SAM 2.1, SAM-HQ and EdgeTAM behind the Segmenter interface: real transformers architectures, tiny random weights.

What must hold for every family: the model folder is recognised by its config.json, masks come back at the image's
size, the embedding cache answers a second prompt (and a second set_image of the same pixels) without the encoder,
the previous answer's logits change the next answer (clicks refine), and bad prompts fail with a reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
from tests.support.tiny_hf_segmenters import BUILDERS  # noqa: E402  (skips without the [segmenters] classes)

from annotate.factory import build_pipeline, build_segmenter  # noqa: E402
from annotate.segmenters.hf_sam import HFSamSegmenter  # noqa: E402
from annotate.segmenters.hf_spec import ModelSpecError, hf_spec_kind, is_hub_id, read_model_type  # noqa: E402
from annotate.types import Prompt  # noqa: E402

FAMILIES = sorted(BUILDERS)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-segmenters")
    dirs = {}
    for family, build in BUILDERS.items():
        if family == "edgetam" and not _has_timm():
            continue
        dirs[family] = build(root / family, seed=1)
    return dirs


def _has_timm() -> bool:
    import importlib.util

    return importlib.util.find_spec("timm") is not None


def _dir(model_dirs: dict[str, Path], family: str) -> Path:
    if family not in model_dirs:
        pytest.skip(f"{family} needs timm ([segmenters] extra)")
    return model_dirs[family]


def _scene(h: int = 90, w: int = 120) -> np.ndarray:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[20:60, 30:80] = (200, 40, 40)
    return img


@pytest.mark.parametrize("family", FAMILIES)
def test_folder_is_recognised_by_its_model_type(model_dirs, family) -> None:
    folder = _dir(model_dirs, family)
    assert read_model_type(folder) == family
    assert hf_spec_kind(folder) == "folder"
    seg = build_segmenter(str(folder), device="cpu")
    assert isinstance(seg, HFSamSegmenter) and seg.family == family
    assert seg.name.startswith(family.replace("_", "") + "-")


def test_specs_that_are_not_hf_models() -> None:
    assert hf_spec_kind(None) is None and hf_spec_kind("") is None
    assert hf_spec_kind("vit_b") is None  # a registry name of the official SAM files
    assert hf_spec_kind("models/sam_vit_b.pth") is None
    assert is_hub_id("facebook/sam2.1-hiera-tiny") and hf_spec_kind("facebook/sam2.1-hiera-tiny") == "hub"


@pytest.mark.parametrize("family", FAMILIES)
def test_masks_cache_and_clicks(model_dirs, family) -> None:
    seg = HFSamSegmenter(_dir(model_dirs, family), device="cpu")
    img = _scene()
    seg.set_image(img, image_key="scene")
    box = np.array([30, 20, 80, 60])
    first = seg.predict(box=box)
    assert first.mask.shape == img.shape[:2] and first.mask.dtype == bool
    assert 0.0 <= first.score <= 1.0
    side = seg.mask_input_side(seg._local.embedding)
    assert first.logits is not None and first.logits.shape == (1, side, side)
    # a second prompt on the same image: no encoder pass; the same image again: a cache hit
    seg.predict(point_coords=np.array([[50, 40]]), point_labels=np.array([1]))
    seg.set_image(img, image_key="scene")
    assert seg.cache_info()["misses"] == 1 and seg.cache_info()["hits"] == 1
    # a click with the previous logits refines that answer: the mask changes
    clicked = seg.predict(box=box, point_coords=np.array([[35, 25]]), point_labels=np.array([0]),
                          mask_input=first.logits)
    again = seg.predict(box=box)
    assert np.array_equal(again.mask, first.mask)  # deterministic without the click
    assert not np.array_equal(clicked.mask, first.mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_prompts_fail_with_a_reason(model_dirs, family) -> None:
    seg = HFSamSegmenter(_dir(model_dirs, family), device="cpu")
    with pytest.raises(RuntimeError, match="before set_image"):
        seg.predict(box=np.array([0, 0, 5, 5]))
    seg.set_image(_scene())
    with pytest.raises(ValueError, match="outside"):
        seg.predict(point_coords=np.array([[500, 5]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="low-resolution logits"):
        seg.predict(box=np.array([10, 10, 50, 50]), mask_input=np.zeros((1, 7, 7), np.float32))


def test_other_model_types_are_refused_with_what_they_are(tmp_path) -> None:
    from tests.support.tiny_hf_segmenters import save_tiny_sam3

    folder = save_tiny_sam3(tmp_path / "sam3")
    with pytest.raises(ModelSpecError, match="sam3.*--one-stage"):
        HFSamSegmenter(folder, device="cpu")


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_clicks_refine_and_cfpg_mbo_apply(model_dirs, family) -> None:
    """Through the pipeline (CFPG + MBO on, as for SAM): box, then the same box with a click, on one encoder pass."""
    seg = HFSamSegmenter(_dir(model_dirs, family), device="cpu")
    pipe = build_pipeline(segmenter=seg)
    assert pipe.use_cfpg and pipe.use_mbo
    img = _scene()
    box = (30.0, 20.0, 80.0, 60.0)
    base, clicked = pipe.run(img, [Prompt(box=box), Prompt(box=box, points=[(40.0, 30.0)], point_labels=[0])],
                             image_key="scene")
    assert base.error is None and clicked.error is None, (base.error, clicked.error)
    assert base.mask.shape == img.shape[:2]
    assert not np.array_equal(base.mask, clicked.mask)
    assert seg.cache_info()["misses"] == 1
    assert pipe.model_version.startswith(seg.name)


@pytest.mark.parametrize("family", FAMILIES)
def test_disk_cache_serves_another_process(model_dirs, tmp_path, family) -> None:
    """Embeddings on disk (PSLG_EMBEDDING_CACHE / --cache-embeddings): a second segmenter with the same weights
    answers without its encoder, with the same masks."""
    from annotate.segmenters.embedding_store import DiskEmbeddingCache

    folder = _dir(model_dirs, family)
    img = _scene()
    box = np.array([30, 20, 80, 60])
    first = HFSamSegmenter(folder, device="cpu")
    first.attach_disk_cache(DiskEmbeddingCache(tmp_path / "emb"))
    first.set_image(img, image_key="scene")
    expected = first.predict(box=box).mask
    second = HFSamSegmenter(folder, device="cpu")
    second.attach_disk_cache(DiskEmbeddingCache(tmp_path / "emb"))
    second.set_image(img, image_key="scene")
    assert second.cache_info()["disk_hits"] == 1 and second.cache_info()["misses"] == 0
    assert np.array_equal(second.predict(box=box).mask, expected)
