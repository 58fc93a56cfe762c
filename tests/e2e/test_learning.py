"""Learning from corrections end to end, weights-free: real Label Studio 1.23 and `pslg serve` without models.

1. Retrieve Predictions pre-labels every task; the backend keeps each pre-label and sets the project's model
   version to the one it serves, so the Data Manager's score column shows them;
2. annotators correct four tasks (with shapes the hand-made prior does not make: crosses); Start Training fits
   a candidate (shape priors + quality estimate), validates it on held-out corrections, commits it to the model
   store and serves it; the one-line outcome is the answer's training job, which Label Studio stores;
3. Retrieve Predictions again: new model_version (also on the project), changed masks and scores;
4. `pslg select --project` puts the next batch (the unannotated tasks) in a Data Manager tab.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import requests

from annotate.geometry import mask_iou
from annotate.modelstore import ModelStore
from annotate.synthetic import make_scene
from converters.labelstudio.brush import brush_rle_decode, brush_rle_encode
from tests.support.e2e import batch_predict, connect, make_project, predictions_of, start_backend, wait_for
from tests.support.labelstudio_server import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def _cross_in(mask: np.ndarray) -> np.ndarray:
    """A plus shape spanning the object's bounding box: a correction no rectangle or ellipse explains."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    out = np.zeros_like(mask, dtype=bool)
    cx0, cx1 = x0 + (x1 - x0) * 35 // 100, x0 + (x1 - x0) * 65 // 100
    cy0, cy1 = y0 + (y1 - y0) * 35 // 100, y0 + (y1 - y0) * 65 // 100
    out[y0:y1, cx0:cx1] = True
    out[cy0:cy1, x0:x1] = True
    return out


def _latest(ls, task_id: int, kind: str, version: str) -> dict:
    mine = [p for p in predictions_of(ls, task_id, kind) if p["model_version"] == version]
    assert mine, (task_id, version, [p["model_version"] for p in predictions_of(ls, task_id, kind)])
    return mine[-1]


def _mask(prediction: dict) -> np.ndarray:
    [brush] = [r for r in prediction["result"] if r["type"] == "brushlabels"]
    return brush_rle_decode(brush["value"]["rle"], brush["original_height"], brush["original_width"])


def _training_jobs(ls, ml_id: int) -> list[str]:
    """The training jobs Label Studio stored for an ML backend (its database: the REST API does not list them)."""
    [db] = list(ls.base_dir.rglob("label_studio.sqlite3"))
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute("SELECT job_id FROM ml_mlbackendtrainjob WHERE ml_backend_id=? ORDER BY id", (ml_id,))
        return [r[0] for r in rows.fetchall()]


def test_corrections_teach_the_weights_free_stage2_and_select_builds_a_tab(labelstudio_server, tmp_path_factory):
    ls = labelstudio_server
    kind = "legacy"
    scene = make_scene(seed=21, height=224, width=256, n_objects=6, kinds=("building",))
    work = tmp_path_factory.mktemp("e2e-learning")
    (work / "backend").mkdir()
    backend = start_backend(work / "backend", {
        "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.legacy_token,
        "PSLG_ADOPT_MIN_SAMPLES": "3", "PSLG_QUALITY_MIN_PAIRS": "3", "PSLG_WORKERS": "1"})
    health = lambda: requests.get(f"{backend.url}/health", timeout=5).json()  # noqa: E731
    try:
        before = health()["model_version"]
        project_id, tasks = make_project(ls, "e2e-learning", scene, kind)
        ml_id = connect(ls, backend, project_id, kind)

        # 1. pre-labels, and the project's model version follows the served one
        batch_predict(ls, project_id, kind)
        first = {t["id"]: _latest(ls, t["id"], kind, before) for t in tasks}
        assert wait_for(lambda: ls.api("GET", f"/api/projects/{project_id}", kind=kind).json()["model_version"] == before,
                        60, "the project's model version to be the served one", backend)

        # 2. four corrections, then Start Training
        corrected = tasks[:4]
        for task, obj in zip(corrected, scene.objects):
            h, w = obj.mask.shape
            region = {"id": f"m{task['id']}", "type": "brushlabels", "from_name": "tag", "to_name": "image",
                      "original_width": w, "original_height": h, "image_rotation": 0,
                      "value": {"format": "rle", "rle": brush_rle_encode(_cross_in(obj.mask)),
                                "brushlabels": [obj.category]}}
            ls.api("POST", f"/api/tasks/{task['id']}/annotations", kind=kind, json={"result": [region]})
        wait_for(lambda: health()["stored_annotations"] >= len(corrected), 60, "the annotations to reach /webhook", backend)
        assert ls.api("POST", f"/api/ml/{ml_id}/train", kind=kind, json={}).status_code == 200
        trained = wait_for(lambda: (lambda h: h if h["model_version"] != before and h["training"] != "running"
                                    else None)(health()), 300, "the learned stage 2 to be served", backend)
        assert trained["training"] == "succeeded", trained
        [version] = ModelStore(backend.model_dir / "grounders").versions("shape-priors")
        assert version.card.label in trained["model_version"] and version.card.samples == len(corrected)
        assert version.card.metrics["quality_pairs"] == len(corrected)
        # the outcome, visible: Label Studio keeps the Start Training answer's job, which is the one-line outcome
        outcome = trained["training_outcome"]
        assert outcome.startswith("served v0001: +") and "on 4 held-out corrections" in outcome
        assert "building prior adopted" in outcome and version.card.metrics["outcome"] == outcome
        assert _training_jobs(ls, ml_id) == [outcome[:128] if len(outcome) <= 128 else outcome[:127] + "…"]
        # Start Training again with nothing new: Label Studio stores the answer saying so; nothing is committed
        assert ls.api("POST", f"/api/ml/{ml_id}/train", kind=kind, json={}).status_code == 200
        jobs = _training_jobs(ls, ml_id)
        assert len(jobs) == 2 and jobs[1].startswith("nothing new: no annotation was stored, changed or deleted")
        assert len(ModelStore(backend.model_dir / "grounders").versions("shape-priors")) == 1

        # 3. Retrieve Predictions again: the new version, with changed masks and scores, on the project too
        after = trained["model_version"]
        batch_predict(ls, project_id, kind)
        second = {t["id"]: _latest(ls, t["id"], kind, after) for t in tasks}
        changed_masks = [t for t in first if mask_iou(_mask(first[t]), _mask(second[t])) < 0.98]
        changed_scores = [t for t in first if abs(first[t]["score"] - second[t]["score"]) > 1e-6]
        assert changed_masks and changed_scores, (changed_masks, changed_scores)
        # the learned crosses: the new pre-labels of the corrected kinds look like what the annotators drew
        crosses = [mask_iou(_mask(second[t["id"]]), _cross_in(o.mask)) for t, o in zip(tasks, scene.objects)]
        olds = [mask_iou(_mask(first[t["id"]]), _cross_in(o.mask)) for t, o in zip(tasks, scene.objects)]
        assert np.mean(crosses) > np.mean(olds)
        assert wait_for(lambda: ls.api("GET", f"/api/projects/{project_id}", kind=kind).json()["model_version"] == after,
                        60, "the project's model version to follow the new version", backend)

        # 4. pslg select --project: a Data Manager tab holding the next batch (the unannotated tasks)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        out = work / "batch.json"
        proc = subprocess.run([sys.executable, "-m", "converters.cli.main", "select", "--project", str(project_id),
                               "--url", ls.url, "--token", ls.legacy_token, "--size", "5", "--out", str(out)],
                              cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert ls.legacy_token not in proc.stdout + proc.stderr
        batch = json.loads(out.read_text())
        remaining = {t["id"] for t in tasks[4:]}
        assert set(batch["task_ids"]) == remaining and [t["rank"] for t in batch["tasks"]] == [1, 2]
        assert all(t["strategy"] == "uncertainty+diversity" for t in batch["tasks"])
        views = ls.api("GET", f"/api/dm/views?project={project_id}", kind=kind).json()
        [view] = [v for v in views if v["data"].get("title") == batch["view_title"]]
        listed = ls.api("GET", f"/api/tasks?project={project_id}&view={view['id']}", kind=kind).json()
        listed = listed["tasks"] if isinstance(listed, dict) else listed
        assert {t["id"] for t in listed} == remaining
        # running it again updates the same tab instead of adding another
        proc = subprocess.run([sys.executable, "-m", "converters.cli.main", "select", "--project", str(project_id),
                               "--url", ls.url, "--token", ls.legacy_token, "--size", "1", "--out", str(out)],
                              cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        views = ls.api("GET", f"/api/dm/views?project={project_id}", kind=kind).json()
        assert len([v for v in views if v["data"].get("title") == batch["view_title"]]) == 1
        listed = ls.api("GET", f"/api/tasks?project={project_id}&view={view['id']}", kind=kind).json()
        listed = listed["tasks"] if isinstance(listed, dict) else listed
        assert [t["id"] for t in listed] == json.loads(out.read_text())["task_ids"]
    finally:
        backend.stop()
