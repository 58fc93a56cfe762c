"""Weights-free learning from corrections in the backend: pre-labels kept → corrections → Start Training → a
candidate (shape priors + quality estimate) validated on held-out corrections → served only where it wins, with
a one-line outcome in the answer, /health and the model card; a retrain with nothing new commits nothing."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.geometry import mask_iou
from annotate.modelstore import ModelStore
from annotate.synthetic import make_scene
from converters.labelstudio.brush import brush_rle_decode
from tests.support.scenes import predict_tasks, submit_correction, task_for, write_png


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


def _project(files_root, n_images: int = 2, per_image: int = 5, kinds=("building",)):
    """Tasks (one object each) on ``n_images`` synthetic images, with the objects' true masks."""
    tasks, truths = [], []
    for i in range(n_images):
        scene = make_scene(seed=40 + i, height=200, width=240, n_objects=per_image, kinds=kinds)
        write_png(files_root / "scenes" / f"p{i}.png", scene.image)
        for j in range(len(scene.objects)):
            tasks.append(task_for(scene, j, 100 + 10 * i + j, image=f"/data/local-files/?d=scenes/p{i}.png"))
            truths.append(scene.objects[j])
    return tasks, truths


def test_corrections_that_win_on_held_out_tasks_are_served(make_client, files_root):
    client = make_client(quality_min_pairs=3)
    runtime = client.application.config["PSLG_RUNTIME"]
    before = client.get("/versions").get_json()["model_version"]
    tasks, truths = _project(files_root)
    first = predict_tasks(client, tasks)
    kept = runtime.store.prelabels()
    assert {k[1] for k in kept} == {t["id"] for t in tasks}
    assert kept[("1", tasks[0]["id"])].model_version == before and "box_agreement" in kept[("1", tasks[0]["id"])].features

    corrected = tasks[:4] + tasks[5:9]  # four buildings on each image drawn as crosses; the last of each is held out
    for k, task in enumerate(corrected):
        submit_correction(client, task, _cross_in(truths[tasks.index(task)].mask), "building", 900 + k)
    # a re-prediction after the correction does not replace the pre-label it was corrected from
    predict_tasks(client, tasks[:1])
    assert runtime.store.prelabels()[("1", tasks[0]["id"])].features == kept[("1", tasks[0]["id"])].features

    answer = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).get_json()
    assert answer["training"].startswith("started")
    assert runtime.trainer.wait_idle(300)
    assert runtime.trainer.status.state == "succeeded", runtime.trainer.status.last_error
    # the answer carries the outcome (and Label Studio's training job id is that line)
    assert answer["outcome"].startswith("served v0001: +") and "on 8 held-out corrections" in answer["outcome"]
    assert "building prior adopted" in answer["outcome"] and answer["job"] == answer["outcome"][:128]
    assert client.get("/health").get_json()["training_outcome"] == answer["outcome"]
    after = client.get("/versions").get_json()["model_version"]
    [version] = ModelStore(runtime.settings.model_dir / "grounders").versions("shape-priors")
    assert after != before and version.card.label in after and version.not_served is None
    assert version.card.metrics["outcome"] == answer["outcome"]
    assert version.card.samples == 8 and version.card.metrics["quality_pairs"] == 8
    building = version.card.metrics["validation"]["classes"]["building"]
    assert building["choice"] == "learned" and building["learned_miou"] > building["hand_miou"]

    second = predict_tasks(client, tasks)
    assert all(p["model_version"] == after for p in second)
    # the held-out tasks look more like what the annotators draw
    held = [4, 9]
    crosses = [mask_iou(_mask(second[i]), _cross_in(truths[i].mask)) for i in held]
    olds = [mask_iou(_mask(first[i]), _cross_in(truths[i].mask)) for i in held]
    assert np.mean(crosses) > np.mean(olds) and min(np.subtract(crosses, olds)) >= 0, (crosses, olds)

    # Start Training again with nothing new: says so, commits nothing, the same version stays served
    again = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).get_json()
    assert again["training"].startswith("nothing new") and "nothing trained or committed" in again["training"]
    assert again["outcome"].endswith(answer["outcome"])
    assert len(ModelStore(runtime.settings.model_dir / "grounders").versions("shape-priors")) == 1
    assert client.get("/versions").get_json()["model_version"] == after
    # the same through Label Studio's older /train call: its answer's job (what Label Studio keeps) says so
    legacy = client.post("/train", json={"annotations": [], "project": 1}).get_json()
    assert legacy["job"].startswith("nothing new") and len(legacy["job"]) <= 128
    # a restarted backend on the same MODEL_DIR serves the learned version and still knows the outcome
    restarted = make_client(quality_min_pairs=3)
    assert restarted.get("/versions").get_json()["model_version"] == after
    assert restarted.get("/health").get_json()["training_outcome"] == answer["outcome"]


def test_near_unchanged_submissions_never_make_the_other_tasks_worse(make_client, files_root):
    """The browser scenario: a handful of submitted pre-labels, mostly unchanged (one brush edit), then Start
    Training. Every other task's mask stays as good as before (here: identical), and nothing new is served."""
    client = make_client()
    runtime = client.application.config["PSLG_RUNTIME"]
    tasks, truths = _project(files_root, n_images=2, per_image=5, kinds=("building", "vehicle", "storage_tank"))
    before = client.get("/versions").get_json()["model_version"]
    first = predict_tasks(client, tasks)
    submitted = [0, 1, 2, 5, 6, 7]
    for k, i in enumerate(submitted):
        mask = _mask(first[i])
        if k == 0:  # one brush correction: a few pixels added at the border
            ys, xs = np.nonzero(mask)
            mask[ys.min():ys.min() + 3, xs.min():xs.min() + 6] = True
        submit_correction(client, tasks[i], mask, truths[i].category, 700 + k)
    answer = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).get_json()
    assert runtime.trainer.wait_idle(300) and runtime.trainer.status.state == "succeeded"
    assert answer["outcome"].startswith("not served (v0001 stored): 6 held-out corrections;"), answer
    [version] = ModelStore(runtime.settings.model_dir / "grounders").versions("shape-priors")
    assert version.not_served and "held-out" in version.not_served
    assert client.get("/versions").get_json()["model_version"] == before
    second = predict_tasks(client, tasks)
    for i in set(range(len(tasks))) - set(submitted):
        iou_before = mask_iou(_mask(first[i]), truths[i].mask)
        iou_after = mask_iou(_mask(second[i]), truths[i].mask)
        assert iou_after >= iou_before - 1e-9, (i, iou_before, iou_after)


def test_near_unchanged_submissions_of_one_class_do_not_adopt_its_prior(make_client, files_root):
    """Enough submissions of one class to validate (6 ≥ 5), all accepted pre-labels: the learned prior cannot beat
    the hand-made one on them, so the class keeps it and the other tasks' masks do not change."""
    client = make_client()
    runtime = client.application.config["PSLG_RUNTIME"]
    tasks, truths = _project(files_root, n_images=2, per_image=5)
    first = predict_tasks(client, tasks)
    submitted = [0, 1, 2, 5, 6, 7]
    for k, i in enumerate(submitted):
        submit_correction(client, tasks[i], _mask(first[i]), "building", 800 + k)
    answer = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).get_json()
    assert runtime.trainer.wait_idle(300) and runtime.trainer.status.state == "succeeded"
    assert answer["outcome"].startswith("not served") and "building kept" in answer["outcome"], answer
    [version] = ModelStore(runtime.settings.model_dir / "grounders").versions("shape-priors")
    decision = version.card.metrics["validation"]["classes"]["building"]
    assert decision["n"] == 6 and decision["choice"] == "hand-made" and decision["hand_miou"] > 0.99
    second = predict_tasks(client, tasks)
    for i in set(range(len(tasks))) - set(submitted):
        assert np.array_equal(_mask(first[i]), _mask(second[i]))
