"""Polygon projects end to end: a real Label Studio 1.23 with the shipped PolygonLabels config and `pslg serve`.

Retrieve Predictions stores our simplified polygons (Label Studio accepts and keeps them as sent); predictions
accepted as annotations, and an annotation traced exactly around a mask with a hole (the roundabout, its hole
kept by a zero-width bridge), export back through `pslg export coco --url --project` pixel for pixel.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest

from annotate.masks import mask_hole_count
from annotate.metrics import iou
from annotate.synthetic import make_scene
from converters.labelstudio.polygons import polygon_mask
from converters.labelstudio.regions import polygon_regions
from tests.support.cli import coco_masks, pslg
from tests.support.e2e import Backend, batch_predict, connect, make_project, predictions_of, start_backend, wait_for
from tests.support.labelstudio_server import REPO_ROOT

pytestmark = pytest.mark.e2e

POLYGON_CONFIG = (REPO_ROOT / "converters" / "configs" / "rrsis_polygon_per_task.xml").read_text()


@pytest.fixture(scope="module")
def scene():
    return make_scene(seed=11, height=192, width=224, n_objects=4)


@pytest.fixture(scope="module")
def backend(labelstudio_server, tmp_path_factory) -> Iterator[Backend]:
    ls = labelstudio_server
    started = start_backend(tmp_path_factory.mktemp("backend-polygons"),
                            {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.pat})
    yield started
    started.stop()


def _raster(regions: list[dict]) -> np.ndarray:
    polygons = [r for r in regions if r["type"] == "polygonlabels"]
    assert polygons, regions
    mask = np.zeros((polygons[0]["original_height"], polygons[0]["original_width"]), bool)
    for r in polygons:
        mask |= polygon_mask(r["value"], r["original_width"], r["original_height"])
    return mask


def test_polygon_predictions_import_into_label_studio_and_export_back(labelstudio_server, backend, scene, tmp_path):
    ls = labelstudio_server
    project_id, tasks = make_project(ls, "e2e-polygons", scene, "pat", config=POLYGON_CONFIG)
    connect(ls, backend, project_id, "pat")
    batch_predict(ls, project_id, "pat")
    predicted: dict[int, np.ndarray] = {}
    for task, obj in zip(tasks, scene.objects):
        [pred] = wait_for(lambda: predictions_of(ls, task["id"], "pat"), 60, "the predictions", backend)
        polygons = [r for r in pred["result"] if r["type"] == "polygonlabels"]
        assert polygons and not [r for r in pred["result"] if r["type"] == "brushlabels"], pred
        assert all((r["from_name"], r["to_name"]) == ("outline", "image") for r in polygons)
        assert all(r["value"]["polygonlabels"] == [obj.category] for r in polygons)
        mask = _raster(pred["result"])
        assert iou(mask, obj.mask) > 0.6, (task["id"], iou(mask, obj.mask))
        assert pred["model_version"].startswith("pslg:") and 0.0 < pred["score"] <= 1.0
        predicted[task["id"]] = mask

    # an annotator accepts the pre-labels of all tasks but the roundabout, which is traced exactly (hole and all)
    ring = next(i for i, o in enumerate(scene.objects) if o.category == "roundabout")
    truth = scene.objects[ring].mask
    assert mask_hole_count(truth) >= 1
    for i, task in enumerate(tasks):
        if i == ring:
            result = polygon_regions(truth, "roundabout", from_name="outline", tolerance=0)
            predicted[task["id"]] = truth
        else:
            [pred] = predictions_of(ls, task["id"], "pat")
            result = [r for r in pred["result"] if r["type"] != "relation"]
        created = ls.api("POST", f"/api/tasks/{task['id']}/annotations", kind="pat", json={"result": result})
        assert created.status_code == 201, created.text

    out = tmp_path / "coco"
    r = pslg("export", "coco", "--url", ls.url, "--token", ls.pat, "--project", project_id, "--out", out)
    assert r.exit_code == 0, r.output
    [(name, exported)] = coco_masks(out / "annotations.json").items()
    assert len(exported) == len(tasks)
    for task, obj in zip(tasks, scene.objects):
        match = [m for m, cat, _ in exported if cat == obj.category and np.array_equal(m, predicted[task["id"]])]
        assert match, f"task {task['id']} ({obj.category}) did not export pixel for pixel"
