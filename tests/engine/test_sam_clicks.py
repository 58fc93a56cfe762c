"""Click sessions with SAM: each click goes to SAM with the box and the previous answer's low-resolution logits
(``mask_input``, as SAM's predictor supports), through the real ``SamPredictor`` with a tiny real SAM."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytest

from annotate.pipeline import Pipeline
from annotate.segmenters.sam import SamSegmenter
from annotate.types import Prompt
from tests.support.tiny_models import build_tiny_sam

BOX = (36.0, 36.0, 94.0, 84.0)
CLICKS = [((50.5, 50.5), 1), ((80.5, 60.5), 0), ((52.5, 74.5), 1)]


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, size=(120, 140, 3)).astype(np.uint8) + 80
    img[40:80, 40:64] = (210, 205, 200)
    return img


class Spy(SamSegmenter):
    """The real segmenter, recording the ``mask_input`` of every call and the logits it answered with."""

    def __init__(self) -> None:
        super().__init__(None, model=build_tiny_sam(0), device="cpu")
        self.calls: list[tuple[Optional[np.ndarray], np.ndarray]] = []

    def predict(self, box=None, point_coords=None, point_labels=None, mask_input=None):
        out = super().predict(box=box, point_coords=point_coords, point_labels=point_labels, mask_input=mask_input)
        self.calls.append((None if mask_input is None else np.array(mask_input), out.logits))
        return out


def _run(pipe: Pipeline, img: np.ndarray, clicks, key: Optional[str] = "img") -> np.ndarray:
    prompt = Prompt(box=BOX, points=[c[0] for c in clicks], point_labels=[c[1] for c in clicks])
    res = pipe.run(img, [prompt], image_key=key)[0]
    assert res.ok, res.error
    for (x, y), lab in clicks:
        assert bool(res.mask[int(y), int(x)]) == bool(lab)  # no click ignored, earlier clicks keep their labels
    return res.mask


def test_mask_input_is_sams_own_logits_and_changes_its_answer() -> None:
    seg = SamSegmenter(None, model=build_tiny_sam(0), device="cpu")
    img = _image()
    seg.set_image(img, image_key="img")
    first = seg.predict(box=np.array(BOX))
    side = tuple(seg.model.prompt_encoder.mask_input_size)  # 256×256 for the official models, smaller here
    assert first.logits is not None and first.logits.shape == (1, *side)
    refined = seg.predict(box=np.array(BOX), point_coords=np.array([[80.5, 60.5]]), point_labels=np.array([0]),
                          mask_input=first.logits)
    plain = seg.predict(box=np.array(BOX), point_coords=np.array([[80.5, 60.5]]), point_labels=np.array([0]))
    assert not np.array_equal(refined.logits, plain.logits)  # the previous answer reached the decoder
    with pytest.raises(ValueError, match="low-resolution logits"):
        seg.predict(box=np.array(BOX), mask_input=np.zeros((side[0] + 1, side[1]), np.float32))


def test_each_click_refines_the_previous_answer_and_the_cache_only_saves_time() -> None:
    img = _image()
    spy = Spy()
    pipe = Pipeline(spy, use_mbo=False)
    _run(pipe, img, [])
    previous = spy.calls[-1][1]
    for k in range(1, len(CLICKS) + 1):
        spy.calls.clear()
        _run(pipe, img, CLICKS[:k])
        # one decoder call per click (the box alone was answered first), fed with the previous answer's logits
        assert len(spy.calls) == 1
        assert spy.calls[-1][0] is not None
        np.testing.assert_allclose(spy.calls[-1][0], previous, atol=0.05)  # float16 in the cache
        previous = spy.calls[-1][1]
    # the same clicks from scratch (no image key: nothing cached) give the same mask
    for k in range(1, len(CLICKS) + 1):
        assert np.array_equal(_run(Pipeline(SamSegmenter(None, model=build_tiny_sam(0), device="cpu"), use_mbo=False),
                                   img, CLICKS[:k], key=None),
                              _run(pipe, img, CLICKS[:k]))


def test_removing_or_branching_clicks_gives_the_mask_computed_from_scratch() -> None:
    img = _image()
    pipe = Pipeline(SamSegmenter(None, model=build_tiny_sam(0), device="cpu"))
    _run(pipe, img, CLICKS)
    branch = CLICKS[:1] + [((60.5, 45.5), 0)]
    got = [_run(pipe, img, CLICKS[:2]), _run(pipe, img, branch), _run(pipe, img, CLICKS[:1])]
    fresh = [_run(Pipeline(SamSegmenter(None, model=build_tiny_sam(0), device="cpu")), img, c, key=None)
             for c in (CLICKS[:2], branch, CLICKS[:1])]
    for a, b in zip(got, fresh):
        assert np.array_equal(a, b)
