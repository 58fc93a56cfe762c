"""The backend with a PolygonLabels or a RectangleLabels-only labeling config: polygons / boxes, not brush masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annotate.geometry import mask_box
from annotate.metrics import iou
from annotate.polygons import Tolerance
from converters.labelstudio.brush import brush_rle_decode
from converters.labelstudio.polygons import polygon_mask
from tests.support.scenes import CONFIG, task_for

POLYGON_CONFIG = (Path(__file__).resolve().parents[2] / "converters" / "configs" / "rrsis_polygon_per_task.xml").read_text()
RECTANGLE_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Text name="expression" value="$expression"/>
  <RectangleLabels name="box" toName="image">
    <Label value="vehicle"/><Label value="building"/><Label value="storage_tank"/><Label value="roundabout"/>
  </RectangleLabels>
</View>"""
W, H = 200, 160  # the scene of tests/backend/conftest.py


def _predict(client, tasks, config, context=None) -> list[dict]:
    body = {"tasks": tasks, "label_config": config, "project": "4.1"}
    if context is not None:
        body["params"] = {"context": context}
    reply = client.post("/predict", json=body)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return reply.get_json()["results"]


def _polygon_raster(prediction: dict) -> tuple[np.ndarray, int]:
    """Union of the prediction's polygons on the image grid, and their vertex count."""
    polygons = [r for r in prediction["result"] if r.get("type") == "polygonlabels"]
    assert polygons, prediction
    mask = np.zeros((H, W), bool)
    for region in polygons:
        assert region["from_name"] == "outline" and region["to_name"] == "image"
        assert region["value"]["closed"] is True and region["value"]["polygonlabels"]
        mask |= polygon_mask(region["value"], W, H)
    return mask, sum(len(r["value"]["points"]) for r in polygons)


def _brush_mask(prediction: dict) -> np.ndarray:
    [brush] = [r for r in prediction["result"] if r.get("type") == "brushlabels"]
    return brush_rle_decode(brush["value"]["rle"], H, W)


def test_batch_predictions_are_polygons_as_good_as_the_brush_mask(make_client, scene):
    client = make_client()
    tasks = [task_for(scene, i, i + 1) for i in range(len(scene.objects))]
    brush = _predict(client, tasks, CONFIG)
    polygons = _predict(client, tasks, POLYGON_CONFIG)
    for obj, b, p in zip(scene.objects, brush, polygons):
        assert not [r for r in p["result"] if r.get("type") == "brushlabels"]
        mask, _ = _polygon_raster(p)
        assert iou(mask, _brush_mask(b)) > 0.95, obj.category  # default tolerance: close to the mask it outlines
        assert abs(iou(mask, obj.mask) - iou(_brush_mask(b), obj.mask)) < 0.03
        assert p["score"] == b["score"]
        rect = next(r for r in p["result"] if r.get("type") == "rectanglelabels")  # the prompt box, related
        relation = next(r for r in p["result"] if r.get("type") == "relation")
        assert relation["from_id"] == rect["id"] and relation["to_id"] == p["result"][0]["id"]


def test_interactive_click_answers_a_polygon(make_client, scene):
    client = make_client()
    obj = scene.objects[1]
    ys, xs = np.nonzero(obj.mask)
    x0, y0, x1, y1 = obj.box
    rect = {"type": "rectanglelabels", "original_width": W, "original_height": H,
            "value": {"x": 100 * x0 / W, "y": 100 * y0 / H, "width": 100 * (x1 - x0) / W,
                      "height": 100 * (y1 - y0) / H, "rectanglelabels": [obj.category]}}
    point = {"type": "keypointlabels", "original_width": W, "original_height": H, "is_positive": True,
             "value": {"x": 100 * float(np.median(xs)) / W, "y": 100 * float(np.median(ys)) / H,
                       "keypointlabels": [obj.category]}}
    [pred] = _predict(client, [task_for(scene, 1, 7)], POLYGON_CONFIG, {"result": [rect, point]})
    assert {r["type"] for r in pred["result"]} == {"polygonlabels"}
    mask, _ = _polygon_raster(pred)
    assert iou(mask, obj.mask) > 0.6


def test_polygon_tolerance_setting(make_client, scene):
    tasks = [task_for(scene, 0, 1)]
    exact_client = make_client(polygon_tolerance=Tolerance.parse("0"))
    [exact] = _predict(exact_client, tasks, POLYGON_CONFIG)
    [brush] = _predict(exact_client, tasks, CONFIG)
    coarse_client = make_client(polygon_tolerance=Tolerance.parse("3"))
    [coarse] = _predict(coarse_client, tasks, POLYGON_CONFIG)
    exact_mask, exact_vertices = _polygon_raster(exact)
    coarse_mask, coarse_vertices = _polygon_raster(coarse)
    assert iou(exact_mask, _brush_mask(brush)) > 0.99  # only specks / pinholes under 16 px may differ
    assert coarse_vertices < exact_vertices
    assert iou(coarse_mask, exact_mask) > 0.8


def test_rectangle_only_config_answers_the_mask_box(make_client, scene):
    client = make_client()
    tasks = [task_for(scene, i, i + 1) for i in range(2)]
    brush = _predict(client, tasks, CONFIG)
    boxes = _predict(client, tasks, RECTANGLE_CONFIG)
    for b, r in zip(brush, boxes):
        assert [x["type"] for x in r["result"]] == ["rectanglelabels"]
        value = r["result"][0]["value"]
        x0, y0, x1, y1 = mask_box(_brush_mask(b))
        assert np.allclose([value["x"], value["y"], value["width"], value["height"]],
                           [100 * x0 / W, 100 * y0 / H, 100 * (x1 - x0) / W, 100 * (y1 - y0) / H])
        assert value["rectanglelabels"] and value["rectanglelabels"][0] in ("vehicle", "building", "storage_tank",
                                                                             "roundabout")
