"""The backend with a SAM 2.1 / SAM-HQ / EdgeTAM folder as PSLG_SAM_CHECKPOINT and SAM 3 as PSLG_ONE_STAGE_MODEL:
pre-labels, clicks that refine the shown mask on one encoder pass, text prompts answered by the one-stage model."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("torch")
from tests.support.tiny_hf_segmenters import BUILDERS, save_tiny_sam3  # noqa: E402

from backend.app import create_app  # noqa: E402
from backend.config import Settings  # noqa: E402
from backend.runtime import Runtime  # noqa: E402
from converters.labelstudio.brush import brush_rle_decode  # noqa: E402
from tests.support.scenes import CONFIG, task_for  # noqa: E402

FAMILIES = [f for f in sorted(BUILDERS) if f != "edgetam" or importlib.util.find_spec("timm") is not None]


def _mask(prediction: dict) -> np.ndarray:
    [region] = [r for r in prediction["result"] if r.get("type") == "brushlabels"]
    return brush_rle_decode(region["value"]["rle"], region["original_height"], region["original_width"])


def _click(scene, x: float, y: float, positive: bool) -> dict:
    return {"result": [{"type": "keypointlabels", "original_width": 200, "original_height": 160, "is_positive": positive,
                        "value": {"x": 100 * x / 200, "y": 100 * y / 160}}]}


@pytest.mark.parametrize("family", FAMILIES)
def test_backend_serves_each_family(tmp_path, files_root, scene, family) -> None:
    folder = BUILDERS[family](tmp_path / family)
    settings = Settings(model_dir=tmp_path / "m", local_files_root=str(files_root), sam_checkpoint=str(folder),
                        device="cpu")
    runtime = Runtime(settings)
    try:
        assert runtime.engine.wait_ready(120), runtime.engine.error
        segmenter = runtime.engine.pipeline.segmenter
        assert segmenter.family == family
        client = create_app(settings, runtime=runtime).test_client()
        task = task_for(scene, 0, 1)
        [pre] = client.post("/predict", json={"tasks": [task], "label_config": CONFIG}).get_json()["results"]
        assert pre["model_version"].startswith(f"pslg:{family.replace('_', '')}-")
        base = _mask(pre)
        assert base.shape == (160, 200)
        x0, y0, x1, y1 = scene.objects[0].box
        masks = []
        for k in range(2):  # two clicks of one session on the same image
            ctx = _click(scene, x0 + 2 + k, y0 + 2, positive=False)
            [pred] = client.post("/predict", json={"tasks": [task], "label_config": CONFIG,
                                                   "params": {"context": ctx}}).get_json()["results"]
            masks.append(_mask(pred))
            assert masks[-1].shape == (160, 200)
        assert all((m ^ base).any() for m in masks)  # each click changed the pre-label
        assert segmenter.cache_info()["misses"] == 1  # one encoder pass for the pre-label and both clicks
    finally:
        runtime.store.close()


@pytest.fixture
def one_stage_backend(tmp_path, files_root):
    """(settings, runtime, client) of a backend serving a tiny random SAM 3 as PSLG_ONE_STAGE_MODEL, ready."""
    folder = save_tiny_sam3(tmp_path / "sam3")
    settings = Settings(model_dir=tmp_path / "m", local_files_root=str(files_root), one_stage_model=str(folder),
                        device="cpu")
    runtime = Runtime(settings)
    try:
        assert runtime.engine.wait_ready(120), runtime.engine.error
        yield settings, runtime, create_app(settings, runtime=runtime).test_client()
    finally:
        runtime.store.close()


def test_backend_one_stage_answers_text(one_stage_backend, scene) -> None:
    _, runtime, client = one_stage_backend
    assert runtime.engine.has_grounder
    task = task_for(scene, 0, 1, with_box=False)  # the expression alone: SAM 3 finds and picks the instance
    [pred] = client.post("/predict", json={"tasks": [task], "label_config": CONFIG}).get_json()["results"]
    assert pred["model_version"].startswith("pslg:sam3-")
    assert _mask(pred).shape == (160, 200)
    assert runtime.engine.pipeline.segmenter.owner.encoder_passes == 1


def test_start_training_with_a_one_stage_model_says_it_is_served_as_it_is(one_stage_backend, scene) -> None:
    """Nothing in the toolkit fine-tunes SAM 3: Start Training must neither try (and fail on) a grounder retrain nor
    commit a version; it says so, the corrections stay stored and the served model is unchanged."""
    from annotate.modelstore import ModelStore
    from tests.support.scenes import submit_correction

    settings, runtime, client = one_stage_backend
    before = client.get("/versions").get_json()["model_version"]
    task = task_for(scene, 0, 1)
    submit_correction(client, task, scene.objects[0].mask, "building", 901)
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert runtime.trainer.wait_idle(300)
    status = runtime.trainer.status
    assert status.state == "succeeded" and status.last_error is None
    assert status.last_outcome.startswith("not retrained: the one-stage model") and "1 stored" in status.last_outcome
    assert client.get("/health").get_json()["training_outcome"] == status.last_outcome
    assert client.get("/versions").get_json()["model_version"] == before
    assert not ModelStore(settings.model_dir / "grounders").versions()
    assert runtime.store.count() == 1
