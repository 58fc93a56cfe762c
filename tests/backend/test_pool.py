"""Batch /predict and clicks spread over worker processes (PSLG_WORKERS): same answers as one process."""

from __future__ import annotations

import numpy as np

from backend.config import Settings
from converters.labelstudio.brush import brush_rle_decode
from tests.support.scenes import CONFIG, task_for


def _masks(response) -> list[np.ndarray]:
    out = []
    for prediction in response.get_json()["results"]:
        [brush] = [r for r in prediction["result"] if r["type"] == "brushlabels"]
        out.append(brush_rle_decode(brush["value"]["rle"], brush["original_height"], brush["original_width"]))
    return out


def test_batch_predict_with_two_worker_processes_matches_one_process(make_client, scene, files_root, tmp_path):
    tasks = [task_for(scene, i, 10 + i) for i in range(len(scene.objects))]
    # a second image, so the batch has two images to run side by side
    (files_root / "scenes" / "b.png").write_bytes((files_root / "scenes" / "a.png").read_bytes())
    tasks += [task_for(scene, i, 20 + i, image="/data/local-files/?d=scenes/b.png") for i in range(2)]
    body = {"tasks": tasks, "label_config": CONFIG, "project": "1.1"}

    single = make_client(workers=1)
    pooled = make_client(Settings(model_dir=tmp_path / "pooled", local_files_root=str(files_root), workers=2))
    engine = pooled.application.config["PSLG_RUNTIME"].engine
    assert engine._pool is not None and len(engine._pool.pids()) == 2  # two live worker processes

    one, two = single.post("/predict", json=body), pooled.post("/predict", json=body)
    assert one.status_code == two.status_code == 200
    masks_one, masks_two = _masks(one), _masks(two)
    assert len(masks_two) == len(tasks)
    for a, b in zip(masks_one, masks_two):
        assert a.any() and np.array_equal(a, b)
    assert {p["model_version"] for p in two.get_json()["results"]} == {engine.model_version}


def test_no_pool_for_sam_or_a_grounding_model():
    from backend.engine import pool_workers

    assert pool_workers(Settings(workers=4)) == 4
    assert pool_workers(Settings(workers=4, sam_checkpoint="sam.pth")) == 1
    assert pool_workers(Settings(workers=4, grounding_model="grounder-dir")) == 1
    assert pool_workers(Settings.from_env({})) >= 1
