"""One request cannot hold inference for long: the engine's lock is taken per prompt, first come first served,
and a request's inference time budget (PSLG_INFERENCE_BUDGET) fails the prompts it has no time left for."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from annotate.pipeline import Pipeline
from annotate.segmenters.classical import ClassicalSegmenter
from annotate.synthetic import make_scene
from annotate.types import Prompt
from backend.config import Settings
from backend.engine import Engine


class SlowSegmenter(ClassicalSegmenter):
    """The real classical segmenter, made slow per box (as a whole-image box on a large image is) and logged."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.calls: list[tuple[float, ...]] = []
        self.started = threading.Event()

    def predict(self, box=None, point_coords=None, point_labels=None, **kwargs):
        self.started.set()
        self.calls.append(tuple(float(v) for v in box))
        time.sleep(self.seconds)
        return super().predict(box=box, point_coords=point_coords, point_labels=point_labels, **kwargs)


def _engine(tmp_path: Path, segmenter: SlowSegmenter, **settings) -> Engine:
    engine = Engine(Settings(model_dir=tmp_path / "m", **settings),
                    loader=lambda: Pipeline(segmenter, use_cfpg=False, use_mbo=False)).start()
    assert engine.wait_ready(60), engine.error
    return engine


def test_a_click_is_not_stuck_behind_a_long_batch(tmp_path: Path) -> None:
    scene = make_scene(seed=7, height=120, width=160, n_objects=2)
    segmenter = SlowSegmenter(0.15)
    engine = _engine(tmp_path, segmenter)
    batch_box = scene.objects[0].box
    click_box = scene.objects[1].box
    done: dict[str, float] = {}
    results: dict[str, list] = {}

    def batch() -> None:
        results["batch"] = engine.run(scene.image, [Prompt(box=batch_box)] * 12, "scene")
        done["batch"] = time.monotonic()

    worker = threading.Thread(target=batch)
    worker.start()
    assert segmenter.started.wait(30)
    results["click"] = engine.run(scene.image, [Prompt(box=click_box)], "scene")
    done["click"] = time.monotonic()
    worker.join(60)

    # the click ran right after the prompt in progress (FIFO), not after the whole batch of 12
    position = segmenter.calls.index(tuple(float(v) for v in click_box))
    assert position <= 2, segmenter.calls
    assert done["click"] < done["batch"]
    assert results["click"][0].ok and all(r.ok for r in results["batch"]) and len(results["batch"]) == 12
    # per-prompt locking changes nothing in the answers: the click's mask is the object's
    assert np.logical_and(results["click"][0].mask, scene.objects[1].mask).sum() > 0.5 * scene.objects[1].mask.sum()


def test_a_request_past_its_time_budget_fails_the_rest_with_a_message(tmp_path: Path) -> None:
    scene = make_scene(seed=8, height=120, width=160, n_objects=1)
    segmenter = SlowSegmenter(0.2)
    engine = _engine(tmp_path, segmenter, inference_budget_s=0.3)
    box = scene.objects[0].box
    answers = engine.run(scene.image, [Prompt(box=box)] * 6, "scene")
    assert len(answers) == 6
    ran = [a for a in answers if a.ok]
    refused = [a for a in answers if not a.ok]
    assert 1 <= len(ran) <= 3 and len(segmenter.calls) == len(ran)
    assert refused and all("PSLG_INFERENCE_BUDGET" in a.error for a in refused)
    assert answers[: len(ran)] == ran  # prompts run in order until the budget is spent
