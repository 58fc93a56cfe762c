"""The regions `/predict` returns for the shipped labeling configs, in the shape Label Studio's frontend draws.

Label Studio's relations overlay measures a brush region before its RLE mask is painted and draws the
relation's outline at NaN coordinates (`<rect> attribute x: Expected length, "NaN"` in the console, seen in a
real browser by tests/e2e/test_browser.py). So the box that grounded a brush mask is nested under the mask
(``parentID``), never related to it; every coordinate is a finite percentage; the expression is echoed on the
mask in the per-region TextArea, and never into the per-task config's typed-prompt box (it would fill it).
"""

from __future__ import annotations

import math

import pytest

from converters.labelstudio.schema import LabelSchema
from tests.support.scenes import task_for
from tests.support.labelstudio_server import REPO_ROOT

CONFIGS = REPO_ROOT / "converters" / "configs"
PER_TASK = (CONFIGS / "rrsis_expression_per_task.xml").read_text()
PER_REGION = (CONFIGS / "expressions_per_region.xml").read_text()


def _predict(make_client, scene, config: str) -> list[dict]:
    tasks = [task_for(scene, i, 300 + i) for i in range(len(scene.objects))]
    answer = make_client().post("/predict", json={"tasks": tasks, "project": "5.1", "label_config": config})
    assert answer.status_code == 200
    return answer.get_json()["results"]


@pytest.mark.parametrize("config", [PER_TASK, PER_REGION], ids=["per-task", "per-region"])
def test_box_is_nested_under_the_brush_mask_never_related(make_client, scene, config):
    schema = LabelSchema.parse(config)
    for obj, pred in zip(scene.objects, _predict(make_client, scene, config)):
        by_type: dict[str, list[dict]] = {}
        for region in pred["result"]:
            by_type.setdefault(region["type"], []).append(region)
        assert "relation" not in by_type, pred["result"]
        [brush] = by_type["brushlabels"]
        [rect] = by_type["rectanglelabels"]
        assert (brush["from_name"], rect["from_name"]) == ("tag", "box")
        assert rect["parentID"] == brush["id"] != rect["id"]
        assert "parentID" not in brush
        value = rect["value"]
        assert all(math.isfinite(value[k]) for k in ("x", "y", "width", "height"))
        assert 0.0 <= value["x"] and value["x"] + value["width"] <= 100.0 + 1e-9
        assert 0.0 <= value["y"] and value["y"] + value["height"] <= 100.0 + 1e-9
        assert value["width"] > 0 and value["height"] > 0
        assert value["rectanglelabels"] == brush["value"]["brushlabels"] == [obj.category]
        assert rect["original_width"] == brush["original_width"] and rect["image_rotation"] == 0
        if schema.textarea_per_region:
            [echo] = by_type["textarea"]
            assert echo["from_name"] == schema.textarea_name and echo["value"]["text"] == [obj.expression]
            assert echo["id"] == brush["id"]  # shown with (and exported for) that mask
        else:
            assert "textarea" not in by_type  # the typed-prompt box stays empty for the annotator


def test_shipped_configs_offer_smart_prompts():
    """Both configs name the controls the backend reads prompts from (the browser shows their smart tools)."""
    from label_studio_sdk.label_interface import LabelInterface

    for config, typed in ((PER_TASK, "prompt"), (PER_REGION, None)):
        controls = {c.name: c for c in LabelInterface(config).controls}
        assert controls["box"].tag == "RectangleLabels" and controls["box"].attr.get("smart") == "true"
        assert controls["point"].tag == "KeyPointLabels" and controls["point"].attr.get("smart") == "true"
        assert controls["tag"].tag == "BrushLabels"
        labels = list(controls["tag"].labels)
        assert list(controls["box"].labels) == labels == list(controls["point"].labels)
        if typed:
            assert controls[typed].tag == "TextArea" and controls[typed].attr.get("perRegion") is None
