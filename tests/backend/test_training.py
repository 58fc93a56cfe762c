"""Learning from corrections with a tiny (random, real-architecture) Grounding DINO: webhook → store → retrain →
new model_version; a failed retrain keeps the old model."""

from __future__ import annotations

import pytest

from converters.labelstudio.brush import brush_rle_encode
from annotate.modelstore import ModelStore
from backend.model_source import configured_key
from tests.support.scenes import CONFIG, task_for


@pytest.fixture(scope="module")
def tiny_grounder(tmp_path_factory):
    from tests.support.tiny_grounders import save_tiny_grounding_dino

    return save_tiny_grounding_dino(tmp_path_factory.mktemp("tiny-gdino") / "model")


def _correction(scene, i: int) -> dict:
    obj = scene.objects[i]
    h, w = obj.mask.shape
    task = task_for(scene, i, 700 + i, with_box=False)
    region = {"id": f"r{i}", "type": "brushlabels", "from_name": "mask", "to_name": "image", "original_width": w,
              "original_height": h, "value": {"format": "rle", "rle": brush_rle_encode(obj.mask), "brushlabels": [obj.category]}}
    return {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "task": task,
            "annotation": {"id": 800 + i, "task": task["id"], "result": [region]}}


def test_corrections_retrain_the_grounder_and_change_the_version(make_client, scene, tiny_grounder):
    client = make_client(grounding_model=str(tiny_grounder), device="cpu", train_epochs=1)
    runtime = client.application.config["PSLG_RUNTIME"]
    before = client.get("/versions").get_json()["model_version"]
    # with a grounding model, batch pre-labels come from the expression alone (the tasks carry no bbox)
    tasks = [task_for(scene, i, 10 + i, with_box=False) for i in range(2)]
    preds = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG}).get_json()["results"]
    assert len(preds) == 2 and all(p["model_version"] == before for p in preds)
    assert all(any(r["type"] == "brushlabels" for r in p["result"]) for p in preds)

    for i in range(len(scene.objects)):
        assert client.post("/webhook", json=_correction(scene, i)).status_code == 201
    answer = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).get_json()
    assert answer["training"] == "started"
    assert runtime.trainer.wait_idle(600)
    status = runtime.trainer.status
    assert status.state == "succeeded", status.last_error
    assert status.last_samples == len(scene.objects)
    after = client.get("/versions").get_json()
    assert after["model_version"] != before and after["versions"] == [before, after["model_version"]]
    # the retrain is a version of MODEL_DIR/grounders, trained from and for the configured model
    [version] = ModelStore(runtime.settings.model_dir / "grounders").versions()
    assert version.card.configured == configured_key(str(tiny_grounder))
    assert version.card.base == str(tiny_grounder.resolve()) and version.card.samples == len(scene.objects)
    assert version.card.label in after["model_version"]
    preds = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG}).get_json()["results"]
    assert all(p["model_version"] == after["model_version"] for p in preds)


def test_train_every_n_and_failed_retrain_keeps_the_model(make_client, scene, tiny_grounder):
    client = make_client(grounding_model=str(tiny_grounder), device="cpu", train_epochs=1, train_every=2)
    runtime = client.application.config["PSLG_RUNTIME"]
    before = runtime.engine.model_version
    # annotations with nothing to learn from (no mask, no rectangle): the retrain they trigger must fail cleanly
    for i in range(2):
        payload = _correction(scene, i)
        payload["annotation"]["result"] = []
        answer = client.post("/webhook", json=payload).get_json()
    assert answer["training"] == "started"  # the 2nd annotation hit PSLG_TRAIN_EVERY=2
    assert runtime.trainer.wait_idle(600)
    assert runtime.trainer.status.state == "failed"
    assert "no stored annotation" in runtime.trainer.status.last_error
    assert runtime.engine.model_version == before
    health = client.get("/health").get_json()
    assert health["training"] == "failed" and "no stored annotation" in health["training_error"]


def test_the_quality_estimate_replaces_the_served_score_only_when_it_ranks_the_stored_pairs_better():
    from annotate.quality import QualityModel, spearman
    from backend.training import quality_choice
    from tests.engine.test_quality import _pairs

    feats, ious = _pairs(60, 4)
    model = QualityModel.fit(feats, ious)
    assert model.fitted and model.cv_spearman > 0.8
    noise = [f["segmenter_score"] for f in feats]  # a served score that does not rank (the pairs' segmenter score)
    adopted, note = quality_choice(model, spearman(noise, ious), len(ious), 20)
    assert adopted and note.startswith("quality estimate adopted (rho") and "on 60 pairs" in note
    adopted, note = quality_choice(model, 0.99, len(ious), 20)  # the served score already ranks them
    assert not adopted and note.startswith("score kept, quality estimate (rho")
    adopted, note = quality_choice(QualityModel.fit(feats[:12], ious[:12]), 0.0, 12, 20)
    assert not adopted and note == "score kept (12 < 20 pairs)"
