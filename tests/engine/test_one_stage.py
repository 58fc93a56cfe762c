"""SAM 3 as a one-stage model: the category phrase, instances as candidates, spatial re-ranking, masks by box."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
from tests.support.tiny_hf_segmenters import save_tiny_sam3  # noqa: E402

from annotate.factory import build_one_stage_pipeline  # noqa: E402
from annotate.geometry import box_iou  # noqa: E402
from annotate.segmenters.one_stage import Sam3OneStage, category_phrase  # noqa: E402
from annotate.types import Prompt  # noqa: E402


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory):
    return save_tiny_sam3(tmp_path_factory.mktemp("sam3") / "model", seed=2)


def _scene() -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)


@pytest.mark.parametrize("expression, phrase", [
    ("the storage tank at the top left", "storage tank"),
    ("The leftmost ship", "ship"),
    ("a large vehicle on the right", "large vehicle"),
    ("white car parked near the building", "white car parked"),
    ("plane", "plane"),
])
def test_category_phrase(expression, phrase) -> None:
    assert category_phrase(expression) == phrase


def test_grounder_ranks_instances_by_spatial_words(sam3_dir) -> None:
    model = Sam3OneStage(sam3_dir, device="cpu")
    img = _scene()
    left = model.grounder.ground(img, "the storage tank on the left", top_k=3)
    right = model.grounder.ground(img, "the storage tank on the right", top_k=3)
    assert left and right
    centre = lambda c: (c.box[0] + c.box[2]) / 2  # noqa: E731
    # the same instances, ranked by position: the left one wins for "left", the right one for "right"
    assert centre(left[0]) <= centre(right[0])
    assert model.encoder_passes == 1  # one image, two expressions: one encoder pass


def test_segmenter_returns_the_instance_of_the_box(sam3_dir) -> None:
    model = Sam3OneStage(sam3_dir, device="cpu")
    img = _scene()
    cands = model.grounder.ground(img, "the ship", top_k=5)
    model.segmenter.set_image(img)
    for cand in cands[:3]:
        out = model.segmenter.predict(box=np.array(cand.box))
        inst = next(i for i in model.known_instances(model.segmenter._local.key) if i.box == cand.box)
        assert np.array_equal(out.mask, inst.mask)
    # a hand-drawn box (no text) is an exemplar: an instance overlapping it comes back
    out = model.segmenter.predict(box=np.array([10, 10, 60, 50]))
    assert out.mask.shape == img.shape[:2]


def test_pipeline_text_to_mask_and_clicks(sam3_dir) -> None:
    pipe = build_one_stage_pipeline(sam3_dir, device="cpu")
    img = _scene()
    text = pipe.run(img, [Prompt(text="the storage tank at the top left")], image_key="s")[0]
    assert text.error is None, text.error
    assert text.mask.shape == img.shape[:2] and text.box is not None
    box = text.box
    base = pipe.run(img, [Prompt(box=box)], image_key="s")[0]
    assert base.error is None and base.mask.any()
    ys, xs = np.nonzero(base.mask)
    on_object = (float(xs[len(xs) // 2]), float(ys[len(ys) // 2]))
    clicked = pipe.run(img, [Prompt(box=box, points=[on_object], point_labels=[0])], image_key="s")[0]
    assert clicked.error is None, clicked.error
    assert not clicked.mask[int(on_object[1]), int(on_object[0])]  # the negative click edits the mask
    assert not np.array_equal(base.mask, clicked.mask)
    assert pipe.model_version.startswith("sam3-")
    assert box_iou(text.box, base.box) == pytest.approx(1.0)


def test_only_the_best_queries_are_post_processed(tmp_path) -> None:
    """SAM 3 answers with many queries; the best MAX_INSTANCES are kept, best first, masks at the image's size."""
    from annotate.segmenters.one_stage import MAX_INSTANCES

    model = Sam3OneStage(save_tiny_sam3(tmp_path / "m", num_queries=MAX_INSTANCES + 10), device="cpu")
    img = _scene()
    found = model.instances(img, "k", "ship")
    assert len(found) == MAX_INSTANCES
    scores = [inst.score for inst in found]
    assert scores == sorted(scores, reverse=True)
    assert all(inst.mask.shape == img.shape[:2] for inst in found)
    assert model.instances(img, "k", "ship") is found  # cached per (image, phrase)
