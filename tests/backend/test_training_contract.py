"""What learning from corrections promises a reviewer, pinned with the Flask client (no Label Studio server):

* the served ``score`` is the fitted quality model's predicted IoU, not today's fallback score;
* the quality model learns from IoU(pre-label, correction): a pre-label accepted as is scores above one that
  was redrawn;
* shape priors are learned in the frame of the task's prompt box (a correction covering the middle of its box
  teaches "the middle of the box", not "the whole box");
* a re-prediction after a correction (by another model version) does not replace the pre-label that was corrected;
* a training request that arrives during a retrain is not lost: another retrain follows and learns from
  everything stored until then.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from annotate.geometry import mask_iou
from annotate.masks import coco_rle_decode
from annotate.modelstore import ModelCard, ModelStore
from annotate.priors import ShapePriors
from annotate.quality import QualityModel, fallback_score
from annotate.types import PromptResult
from backend.engine import LEARNED_KIND
from tests.support.scenes import predict_tasks, submit_correction, task_for


def _middle_of(box: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
    """The middle half of ``box`` (25 %–75 % on each axis): a correction that leaves the box's margins out."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    out = np.zeros(shape, bool)
    out[int(round(y0 + 0.25 * h)):int(round(y0 + 0.75 * h)), int(round(x0 + 0.25 * w)):int(round(x0 + 0.75 * w))] = True
    return out


def _train(client, runtime) -> None:
    answer = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).get_json()
    assert answer["training"].startswith("started")
    assert runtime.trainer.wait_idle(300)
    assert runtime.trainer.status.state == "succeeded", runtime.trainer.status.last_error


def test_served_score_is_the_fitted_quality_models_prediction(make_client, scene, tmp_path):
    # a learned version with a fitted quality model (and no priors) in the store before the backend starts:
    # here the IoU falls with the share of the box the mask fills, whatever the segmenter's confidence says
    rng = np.random.default_rng(0)
    feats, ious = [], []
    for _ in range(60):
        fill = rng.uniform(0.2, 1.0)
        feats.append({"segmenter_score": rng.uniform(0.5, 1.0), "box_fill": fill, "box_agreement": rng.uniform(0.5, 1)})
        ious.append(float(np.clip(1.1 - fill, 0, 1)))
    quality = QualityModel.fit(feats, ious)
    assert quality.fitted
    settings_dir = tmp_path / "model"
    store = ModelStore(settings_dir / "grounders")
    staging = store.staging("learned-test")
    quality.save(staging)
    store.commit(staging, ModelCard(kind=LEARNED_KIND, base="classical-defaults", samples=60,
                                    metrics={"quality_pairs": 60, "quality_fitted": True}))

    client = make_client()
    runtime = client.application.config["PSLG_RUNTIME"]
    assert runtime.engine.learned is not None
    tasks = [task_for(scene, i, 60 + i) for i in range(len(scene.objects))]
    results = predict_tasks(client, tasks)
    kept = runtime.store.prelabels()
    served, expected, today = [], [], []
    for task, prediction in zip(tasks, results):
        features = kept[("1", task["id"])].features
        served.append(prediction["score"])
        expected.append(quality.predict_features(features))
        today.append(fallback_score(PromptResult(mask=None, score=features["segmenter_score"], box=None)))
    assert served == pytest.approx(expected, abs=1e-6)
    assert max(abs(a - b) for a, b in zip(served, today)) > 0.05  # not the fallback score
    assert np.argsort(served).tolist() == np.argsort(expected).tolist()


def test_corrected_prelabels_are_kept_and_learning_uses_their_iou_and_the_prompt_box(make_client, scene):
    client = make_client(prior_min_samples=1, quality_min_pairs=3)
    runtime = client.application.config["PSLG_RUNTIME"]
    before = client.get("/versions").get_json()["model_version"]
    tasks = [task_for(scene, i, 40 + i) for i in range(len(scene.objects))]
    predict_tasks(client, tasks)
    kept = runtime.store.prelabels()
    pre = {t["id"]: coco_rle_decode(kept[("1", t["id"])].mask_rle).astype(bool) for t in tasks}

    # two pre-labels accepted as they are, two redrawn as the middle of their box
    accepted, redrawn = tasks[:2], tasks[2:]
    for i, task in enumerate(tasks):
        obj = scene.objects[i]
        mask = pre[task["id"]] if task in accepted else _middle_of(obj.box, obj.mask.shape)
        submit_correction(client, task, mask, obj.category, 900 + i)
    # a re-prediction after the corrections, by another model version (MBO switched off: other masks, other
    # features), keeps the pre-labels the corrections were made against
    other = make_client(prior_min_samples=1, quality_min_pairs=3, use_mbo=False)
    other_version = other.get("/versions").get_json()["model_version"]
    assert other_version != before
    assert all(p["model_version"] == other_version for p in predict_tasks(other, tasks))
    again = runtime.store.prelabels()
    for task in tasks:
        assert again[("1", task["id"])].model_version == before
        assert again[("1", task["id"])].features == kept[("1", task["id"])].features
        assert np.array_equal(coco_rle_decode(again[("1", task["id"])].mask_rle).astype(bool), pre[task["id"]])

    _train(client, runtime)
    # what was fitted: the newest learned version in the model store
    [version] = ModelStore(runtime.settings.model_dir / "grounders").versions(LEARNED_KIND)
    priors, quality = ShapePriors.load(version.path), QualityModel.load(version.path)
    assert quality.fitted and version.card.metrics["quality_pairs"] == 4

    # the quality target is the pre-label's IoU with its correction: accepted ones predict high, redrawn low
    def predicted(task):
        return quality.predict_features(kept[("1", task["id"])].features)

    redrawn_ious = [mask_iou(pre[t["id"]], _middle_of(scene.objects[i].box, pre[t["id"]].shape))
                    for i, t in zip((2, 3), redrawn)]
    assert max(redrawn_ious) < 0.7
    assert min(predicted(t) for t in accepted) > 0.9
    assert max(predicted(t) for t in redrawn) < min(predicted(t) for t in accepted) - 0.2
    assert max(predicted(t) for t in redrawn) < max(redrawn_ious) + 0.1

    # priors are learned in the prompt box: the redrawn categories' prior is the middle of the box, not all of it
    for i in (2, 3):
        obj = scene.objects[i]
        prior = priors.get(obj.category)
        assert prior is not None and prior.samples == 1
        middle = np.zeros((40, 40), bool)
        middle[10:30, 10:30] = True
        assert mask_iou(prior.mask(40, 40), middle) > 0.8, obj.category


def test_a_training_request_during_a_retrain_is_followed_by_another_retrain(make_client, scene):
    client = make_client(prior_min_samples=1, quality_min_pairs=3)
    runtime = client.application.config["PSLG_RUNTIME"]
    trainer = runtime.trainer
    tasks = [task_for(scene, i, 70 + i) for i in range(2)]
    submit_correction(client, tasks[0], scene.objects[0].mask, scene.objects[0].category, 700)

    # the first retrain is held while it reads its images: the second correction arrives meanwhile
    entered, release = threading.Event(), threading.Event()
    fetch = trainer.fetch_image

    def held_fetch(src, project):
        entered.set()
        assert release.wait(60)
        return fetch(src, project)

    trainer.fetch_image = held_fetch
    assert client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).get_json()["training"] \
        .startswith("started")
    assert entered.wait(60)
    submit_correction(client, tasks[1], scene.objects[1].mask, scene.objects[1].category, 701)
    answer = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).get_json()
    assert answer["training"].startswith("queued")
    release.set()
    assert trainer.wait_idle(300)
    assert trainer.status.state == "succeeded", trainer.status.last_error
    assert trainer.status.runs == 2
    # the version served last learned from both corrections
    versions = ModelStore(runtime.settings.model_dir / "grounders").versions(LEARNED_KIND)
    assert [v.card.samples for v in versions] == [1, 2]


def test_served_masks_follow_the_learned_prior_of_each_tasks_category(make_client, files_root):
    # two learned categories of different shapes in the store; one camouflaged image (colour says nothing), two
    # tasks with the same box: the task naming a building gets the building's cross, the tank task the disc
    import cv2

    from annotate.priors import PriorSample, ShapePriors
    from converters.labelstudio.brush import brush_rle_decode
    from tests.support.scenes import write_png

    def sample(shape: str, w: int, h: int, category: str) -> PriorSample:
        m = np.zeros((200, 200), np.uint8)
        if shape == "cross":
            m[10:10 + h, 10 + int(0.35 * w):10 + int(0.65 * w)] = 1
            m[10 + int(0.35 * h):10 + int(0.65 * h), 10:10 + w] = 1
        else:
            cv2.ellipse(m, (10 + w // 2, 10 + h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 1, -1)
        return PriorSample(m.astype(bool), (10, 10, 10 + w, 10 + h), category)

    sizes = [(40, 40), (60, 50), (36, 44), (80, 70)]
    priors = ShapePriors.fit([sample("cross", w, h, "building") for w, h in sizes]
                             + [sample("disc", w, h, "storage_tank") for w, h in sizes])
    store = ModelStore(files_root.parent / "model" / "grounders")
    staging = store.staging("learned-test")
    priors.save(staging)
    store.commit(staging, ModelCard(kind=LEARNED_KIND, base="classical-defaults", samples=8, metrics={}))
    rng = np.random.default_rng(0)
    write_png(files_root / "scenes" / "camo.png",
              cv2.GaussianBlur(rng.integers(90, 160, size=(160, 160, 3)).astype(np.uint8), (3, 3), 0))

    client = make_client(use_mbo=False, use_cfpg=False)  # both read colours, which say nothing here
    data = {"image": "/data/local-files/?d=scenes/camo.png", "bbox": [40, 40, 80, 80]}
    tasks = [{"id": 1, "data": {**data, "expression": "the building in the middle"}},
             {"id": 2, "data": {**data, "expression": "the storage tank in the middle"}}]
    masks = []
    for prediction in predict_tasks(client, tasks):
        [brush] = [r for r in prediction["result"] if r["type"] == "brushlabels"]
        masks.append(brush_rle_decode(brush["value"]["rle"], 160, 160))
    cross = np.zeros((160, 160), bool)
    cross[40:120, 68:92] = True
    cross[68:92, 40:120] = True
    disc8 = np.zeros((160, 160), np.uint8)
    cv2.ellipse(disc8, (80, 80), (39, 39), 0, 0, 360, 1, -1)
    disc = disc8.astype(bool)
    building, tank = masks
    assert mask_iou(building, cross) > mask_iou(tank, cross) + 0.1
    assert mask_iou(tank, disc) > mask_iou(building, disc) + 0.1
