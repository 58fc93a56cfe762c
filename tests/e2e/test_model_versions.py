"""The learning loop's hand-offs end to end: real Label Studio 1.23, `pslg serve`, `pslg train grounding` and
`pslg models rollback` as separate processes sharing one model store.

The backend is configured with a models directory (PSLG_GROUNDING_MODEL=<store>) holding a version that
`pslg train grounding` wrote. Then, without ever restarting the backend:

1. annotations made in Label Studio reach /webhook; Label Studio's Start Training retrains in the backend,
   which commits a new version to the same store and serves it; Retrieve Predictions stores predictions
   carrying the new model_version;
2. `pslg train grounding --base <store> --out <store>` adds another version: the backend serves it (polling the
   store) and Label Studio's predictions carry it;
3. `pslg models rollback <store> <previous>`: the backend serves the previous version again.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from annotate.modelstore import ModelStore
from converters.labelstudio.brush import brush_rle_decode, brush_rle_encode
from annotate.synthetic import make_scene
from tests.support.e2e import batch_predict, connect, make_project, predictions_of, start_backend, wait_for
from tests.support.labelstudio_server import REPO_ROOT

# three trainings (two CLI runs, one Start Training) and four backend starts: longer than the default limit
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]


def pslg(*args: str, timeout: float = 900) -> str:
    """Run the `pslg` CLI as a user does (a separate process); return its output, failing with it on error."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "converters.cli.main", *args], cwd=str(REPO_ROOT), env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"pslg {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _annotate(ls, tasks, scene, kind: str) -> None:
    for task, obj in zip(tasks, scene.objects):
        h, w = obj.mask.shape
        region = {"id": f"m{task['id']}", "type": "brushlabels", "from_name": "tag", "to_name": "image",
                  "original_width": w, "original_height": h, "image_rotation": 0,
                  "value": {"format": "rle", "rle": brush_rle_encode(obj.mask), "brushlabels": [obj.category]}}
        ls.api("POST", f"/api/tasks/{task['id']}/annotations", kind=kind, json={"result": [region]})


def _check_stored_predictions(ls, tasks, scene, version: str, kind: str) -> None:
    """Every task has a prediction Label Studio stored with ``version``, with a mask of the image's size."""
    for task in tasks:
        mine = [p for p in predictions_of(ls, task["id"], kind) if p["model_version"] == version]
        assert mine, (task["id"], version, [p["model_version"] for p in predictions_of(ls, task["id"], kind)])
        [brush] = [r for r in mine[0]["result"] if r["type"] == "brushlabels"]
        mask = brush_rle_decode(brush["value"]["rle"], brush["original_height"], brush["original_width"])
        assert mask.shape == scene.objects[0].mask.shape and mask.any()


def test_trained_versions_reach_the_running_backend_and_rollback_restores_the_previous(
        labelstudio_server, tmp_path_factory):
    from tests.support.tiny_grounders import save_tiny_grounding_dino, write_synthetic_rrsis

    ls = labelstudio_server
    kind = "legacy"
    scene = make_scene(seed=11, height=192, width=224, n_objects=3)
    work = tmp_path_factory.mktemp("e2e-versions")
    base = save_tiny_grounding_dino(work / "tiny-gdino")
    data = write_synthetic_rrsis(work / "rrsis", {"train": 2, "val": 1}, n_objects=2)
    store_dir = work / "models"
    common = ("--data", str(data), "--out", str(store_dir), "--epochs", "1", "--batch-size", "2", "--device", "cpu",
              "--no-progress")
    pslg("train", "grounding", "--base", str(base), *common)
    store = ModelStore(store_dir)
    assert [v.name for v in store.versions()] == ["v0001"]

    (work / "backend").mkdir()
    backend = start_backend(work / "backend", {
        "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.legacy_token, "PSLG_GROUNDING_MODEL": str(store_dir),
        "PSLG_DEVICE": "cpu", "PSLG_TRAIN_EPOCHS": "1", "PSLG_MODEL_POLL": "1"})
    health = lambda: requests.get(f"{backend.url}/health", timeout=5).json()  # noqa: E731
    try:
        first = health()
        assert first["grounding"]["serving"] == "v0001" and store.get("v0001").card.label in first["model_version"]
        pid = backend.proc.pid

        # 1. Start Training in Label Studio → a new version in the same store, served at once
        project_id, tasks = make_project(ls, "e2e-versions", scene, kind)
        ml_id = connect(ls, backend, project_id, kind)
        _annotate(ls, tasks, scene, kind)
        wait_for(lambda: health()["stored_annotations"] >= len(tasks), 60, "the annotations to reach /webhook", backend)
        ls.api("POST", f"/api/ml/{ml_id}/train", kind=kind, json={})
        trained = wait_for(lambda: (lambda h: h if h["grounding"]["serving"] == "v0002" and h["training"] != "running"
                                    else None)(health()), 600, "the retrain to be served", backend)
        assert trained["training"] == "succeeded", trained
        v2 = store.get("v0002")
        assert v2.card.parent == "v0001" and v2.card.samples == len(tasks)
        assert v2.card.configured == str(store_dir.resolve())
        assert v2.card.label in trained["model_version"]
        batch_predict(ls, project_id, kind)
        _check_stored_predictions(ls, tasks, scene, trained["model_version"], kind)

        # 2. `pslg train grounding` into the configured models directory → served without a restart
        out = pslg("train", "grounding", "--base", str(store_dir), *common)
        assert "grounding-v0003-" in out
        third = wait_for(lambda: (lambda h: h if h["grounding"]["serving"] == "v0003" else None)(health()), 120,
                         "the CLI-trained version to be served", backend)
        assert store.get("v0003").card.parent == "v0002"
        batch_predict(ls, project_id, kind)
        _check_stored_predictions(ls, tasks, scene, third["model_version"], kind)

        # 3. rollback → the previous version is served again
        assert "now serving v0002" in pslg("models", "rollback", str(store_dir), "v0002")
        back = wait_for(lambda: (lambda h: h if h["grounding"]["serving"] == "v0002" else None)(health()), 120,
                        "the rollback to be served", backend)
        assert back["model_version"] == trained["model_version"] and "fallback" not in back
        answer = requests.post(f"{backend.url}/predict", timeout=300, json={
            "tasks": [tasks[0]], "project": str(project_id),
            "label_config": ls.api("GET", f"/api/projects/{project_id}", kind=kind).json()["label_config"]}).json()
        assert answer["model_version"] == trained["model_version"]
        assert answer["results"][0]["model_version"] == trained["model_version"]
        assert backend.proc.pid == pid and backend.proc.poll() is None  # one backend process throughout
    finally:
        backend.stop()


def test_ls_start_training_with_a_configured_model_keeps_its_own_lineage(labelstudio_server, tmp_path_factory):
    """Configured with a model directory (not a store): Start Training writes MODEL_DIR/grounders versions that
    record the configured model, and a restarted backend configured with another model does not serve them."""
    from tests.support.tiny_grounders import save_tiny_grounding_dino

    ls = labelstudio_server
    kind = "legacy"
    scene = make_scene(seed=12, height=160, width=192, n_objects=2)
    work = tmp_path_factory.mktemp("e2e-lineage")
    grounder = save_tiny_grounding_dino(work / "model")
    env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.legacy_token, "PSLG_GROUNDING_MODEL": str(grounder),
           "PSLG_DEVICE": "cpu", "PSLG_TRAIN_EPOCHS": "1"}
    (work / "backend").mkdir()
    backend = start_backend(work / "backend", env)
    health = lambda b: requests.get(f"{b.url}/health", timeout=5).json()  # noqa: E731
    try:
        before = health(backend)["model_version"]
        project_id, tasks = make_project(ls, "e2e-lineage", scene, kind)
        ml_id = connect(ls, backend, project_id, kind)
        _annotate(ls, tasks, scene, kind)
        wait_for(lambda: health(backend)["stored_annotations"] >= len(tasks), 60, "the annotations", backend)
        ls.api("POST", f"/api/ml/{ml_id}/train", kind=kind, json={})
        after = wait_for(lambda: (lambda h: h["model_version"] if h["model_version"] != before
                                  and h["training"] != "running" else None)(health(backend)), 600,
                         "the retrain to finish with a new model version", backend)
        batch_predict(ls, project_id, kind)
        _check_stored_predictions(ls, tasks, scene, after, kind)
    finally:
        backend.stop()
    grounders = ModelStore(backend.model_dir / "grounders")
    [version] = grounders.versions()
    assert version.card.configured == str(grounder.resolve())

    # the same MODEL_DIR, restarted with another grounding model: the old lineage's version is not served
    other = save_tiny_grounding_dino(work / "other", seed=1)
    restarted = start_backend(work / "backend", {**env, "PSLG_GROUNDING_MODEL": str(other)})
    try:
        h = health(restarted)
        assert h["grounding"]["serving"] == str(other) and version.card.label not in h["model_version"]
        assert "not serving" in restarted.log.read_text()
    finally:
        restarted.stop()
    # and with the original configuration again, its retrained version is served
    again = start_backend(work / "backend", env)
    try:
        assert health(again)["model_version"] == after and health(again)["grounding"]["serving"] == version.name
    finally:
        again.stop()
