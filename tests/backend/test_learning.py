"""Weights-free learning from corrections in the backend: pre-labels kept → corrections → Start Training →
shape priors + quality estimate committed to the model store → new model_version, changed masks and scores."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.geometry import mask_iou
from annotate.modelstore import ModelStore
from converters.labelstudio.brush import brush_rle_decode, brush_rle_encode
from tests.support.scenes import CONFIG, task_for


def _cross_in(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    out = np.zeros_like(mask, dtype=bool)
    out[y0:y1, x0 + (x1 - x0) * 35 // 100: x0 + (x1 - x0) * 65 // 100] = True
    out[y0 + (y1 - y0) * 35 // 100: y0 + (y1 - y0) * 65 // 100, x0:x1] = True
    return out


def _mask(prediction: dict) -> np.ndarray:
    [brush] = [r for r in prediction["result"] if r["type"] == "brushlabels"]
    return brush_rle_decode(brush["value"]["rle"], brush["original_height"], brush["original_width"])


def test_corrections_teach_shape_priors_and_the_score(make_client, scene):
    client = make_client(prior_min_samples=1, quality_min_pairs=3)
    runtime = client.application.config["PSLG_RUNTIME"]
    before = client.get("/versions").get_json()["model_version"]
    tasks = [task_for(scene, i, 40 + i) for i in range(len(scene.objects))]
    first = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG, "project": "1"}).get_json()["results"]
    kept = runtime.store.prelabels()
    assert {k[1] for k in kept} == {t["id"] for t in tasks}
    assert kept[("1", 40)].model_version == before and "box_agreement" in kept[("1", 40)].features

    for i, task in enumerate(tasks[:3]):
        obj = scene.objects[i]
        h, w = obj.mask.shape
        region = {"id": f"r{i}", "type": "brushlabels", "from_name": "mask", "to_name": "image", "original_width": w,
                  "original_height": h, "value": {"format": "rle", "rle": brush_rle_encode(_cross_in(obj.mask)),
                                                  "brushlabels": [obj.category]}}
        payload = {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "task": task,
                   "annotation": {"id": 900 + i, "task": task["id"], "result": [region]}}
        assert client.post("/webhook", json=payload).status_code == 201
    # a re-prediction after the correction does not replace the pre-label it was corrected from
    client.post("/predict", json={"tasks": tasks[:1], "label_config": CONFIG, "project": "1"})
    assert runtime.store.prelabels()[("1", 40)].features == kept[("1", 40)].features

    answer = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).get_json()
    assert answer["training"].startswith("started")
    assert runtime.trainer.wait_idle(300)
    assert runtime.trainer.status.state == "succeeded", runtime.trainer.status.last_error
    after = client.get("/versions").get_json()["model_version"]
    [version] = ModelStore(runtime.settings.model_dir / "grounders").versions("shape-priors")
    assert after != before and version.card.label in after
    assert version.card.samples == 3 and version.card.metrics["quality_pairs"] == 3
    assert version.card.metrics["quality_fitted"]

    second = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG, "project": "1"}).get_json()["results"]
    assert all(p["model_version"] == after for p in second)
    # the learned version's re-prediction kept the pre-labels the corrections were made against (the check above
    # re-predicted with the same, untrained model: its features could not have changed)
    kept_after = runtime.store.prelabels()
    assert all(kept_after[("1", t["id"])].model_version == before for t in tasks[:3])
    # the uncorrected task's pre-label is the new one, scored by the fitted quality model (not today's score)
    newest = kept_after[("1", tasks[3]["id"])]
    assert newest.model_version == after
    assert second[3]["score"] == pytest.approx(runtime.engine.learned.quality.predict_features(newest.features))
    assert any(mask_iou(_mask(a), _mask(b)) < 0.98 for a, b in zip(first, second))
    assert any(abs(a["score"] - b["score"]) > 1e-6 for a, b in zip(first, second))
    crosses = [mask_iou(_mask(p), _cross_in(o.mask)) for p, o in zip(second, scene.objects)]
    olds = [mask_iou(_mask(p), _cross_in(o.mask)) for p, o in zip(first, scene.objects)]
    assert np.mean(crosses) > np.mean(olds)
    # a restarted backend on the same MODEL_DIR serves the learned version
    again = make_client(prior_min_samples=1, quality_min_pairs=3)
    assert again.get("/versions").get_json()["model_version"] == after
