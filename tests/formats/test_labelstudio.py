"""Label Studio side: config reading through LabelInterface, image reference resolution, annotation choice,
per-task vs per-region objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.labelstudio import (ImageResolveError, ImageResolver, LabelConfigError, LabelSchema, brush_region,
                                    select_annotation, task_to_item, textarea_region)
from converters.model import Report

CONFIGS = Path(__file__).resolve().parents[2] / "converters" / "configs"


def test_shipped_configs_parse():
    per_task = LabelSchema.parse((CONFIGS / "rrsis_expression_per_task.xml").read_text())
    assert (per_task.image_name, per_task.image_key, per_task.brush_name, per_task.rect_name) == ("image", "image", "tag", "box")
    assert per_task.expression_key == "expression" and per_task.expression_name == "expression"
    assert per_task.brush_names == {"tag"} and per_task.labels == ["vehicle", "building", "storage_tank", "roundabout"]
    assert per_task.rect_labels == per_task.labels and per_task.keypoint_name == "point"
    assert per_task.textarea_name == "prompt" and not per_task.textarea_per_region and not per_task.textarea_names
    per_region = LabelSchema.parse((CONFIGS / "expressions_per_region.xml").read_text())
    assert per_region.textarea_names == {"expression"} and per_region.textarea_name == "expression"
    assert per_region.textarea_per_region and per_region.brush_name == "tag"
    assert per_region.expression_key is None and per_region.task_expression_key == "expression"
    with pytest.raises(LabelConfigError, match="BrushLabels"):
        LabelSchema.parse('<View><Image name="i" value="$img"/></View>')
    with pytest.raises(LabelConfigError, match="empty"):
        LabelSchema.parse("  ")
    with pytest.raises(LabelConfigError, match="could not be parsed"):
        LabelSchema.parse("<View><Image")
    custom = LabelSchema.parse('<View><Image name="pic" value="$img"/><Text name="q" value="$query"/>'
                               '<BrushLabels name="b" toName="pic"><Label value="car"/></BrushLabels>'
                               '<KeyPointLabels name="k" toName="pic" smart="true"><Label value="car"/></KeyPointLabels>'
                               '<PolygonLabels name="p" toName="pic"><Label value="car"/></PolygonLabels></View>')
    assert (custom.image_key, custom.expression_key, custom.labels) == ("img", "query", ["car"])
    assert (custom.keypoint_name, custom.polygon_name, custom.polygon_labels) == ("k", "p", ["car"])


def test_schema_reads_task_data_and_chooses_labels():
    schema = LabelSchema.parse((CONFIGS / "rrsis_expression_per_task.xml").read_text())
    assert schema.task_expressions({"expression": ["the tank", " ", "left tank"]}) == ["the tank", "left tank"]
    assert schema.task_expressions({"image": "a.png"}) is None  # not a one-expression task
    assert schema.expression({"sentence": [" the big roundabout "]}) == "the big roundabout"
    assert schema.image_url({"image": " "}) is None
    assert schema.choose_label("the storage tank at the top", {}) == "storage_tank"
    assert schema.choose_label("anything", {"category": "Building"}) == "building"
    assert schema.choose_label("two vehicles", {}, hint="roundabout") == "roundabout"
    assert schema.choose_label("a ship", {}) == "vehicle"  # nothing named: the first label
    assert schema.rect_label("building") == "building" and schema.rect_label("ship") == "vehicle"


def _png(path: Path, w: int, h: int) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint8))
    return path


def test_image_resolver_maps_label_studio_paths(tmp_path):
    root = tmp_path / "root"
    _png(root / "isaid" / "a.png", 30, 20)
    _png(root / "upload" / "3" / "b.png", 10, 12)
    _png(tmp_path / "abs.png", 5, 6)
    r = ImageResolver(root)
    assert r.resolve("/data/local-files/?d=isaid/a.png") == (root / "isaid" / "a.png", 30, 20)
    assert r.resolve("/data/local-files/?d=isaid%2Fa.png")[0] == root / "isaid" / "a.png"
    assert r.resolve("/data/upload/3/b.png") == (root / "upload" / "3" / "b.png", 10, 12)
    assert r.resolve(str(tmp_path / "abs.png"))[1:] == (5, 6)
    assert r.resolve("isaid/a.png")[0] == root / "isaid" / "a.png"
    with pytest.raises(ImageResolveError, match="missing.png"):
        r.resolve("/data/local-files/?d=isaid/missing.png")
    with pytest.raises(ImageResolveError):  # no escaping the root (the file exists one level up)
        r.resolve("/data/local-files/?d=../abs.png")


def test_select_annotation_rules():
    rep = Report()
    anns = [{"id": 1, "result": [{"x": 1}], "updated_at": "2026-01-02", "completed_by": 5},
            {"id": 2, "result": [{"x": 2}], "updated_at": "2026-01-03", "was_cancelled": True},
            {"id": 3, "result": [{"x": 3}], "updated_at": "2026-01-01", "ground_truth": True, "completed_by": 6}]
    task = {"annotations": anns}
    assert select_annotation(task, "latest", rep)["id"] == 1
    assert select_annotation(task, "ground-truth", rep)["id"] == 3
    assert select_annotation(task, "annotator:6", rep)["id"] == 3
    assert select_annotation(task, "annotator:9", rep) is None
    assert rep.skipped["no annotation by the chosen annotator"] == 1
    with pytest.raises(ValueError):
        select_annotation(task, "oldest", rep)


def test_per_task_merges_strokes_and_per_region_reads_texts(tmp_path):
    img = _png(tmp_path / "i.png", 40, 30)
    a = np.zeros((30, 40), bool)
    a[2:8, 3:9] = True
    b = np.zeros((30, 40), bool)
    b[20:25, 30:35] = True
    schema = LabelSchema()
    rep = Report()
    resolver = ImageResolver(tmp_path)
    per_task = {"id": 1, "data": {"image": str(img), "expression": "the two blobs"}}
    ann = {"result": [brush_region(a, "car", region_id="x"), brush_region(b, "car", region_id="y")]}
    item = task_to_item(per_task, ann, schema, resolver, rep)
    assert len(item.objects) == 1 and np.array_equal(item.objects[0].mask, a | b)
    assert item.objects[0].expressions == ["the two blobs"]
    ann_mixed = {"result": [brush_region(a, "car"), brush_region(b, "tank")]}
    assert task_to_item(per_task, ann_mixed, schema, resolver, rep) is None
    assert "different labels" in str(rep.errors[-1])
    per_region = {"id": 2, "data": {"image": str(img)}}
    ann = {"result": [brush_region(a, "car", region_id="x"), textarea_region(["left car", "small car"], "x"),
                      brush_region(b, "tank", region_id="y")]}
    item = task_to_item(per_region, ann, schema, resolver, rep, missing_expression="label")
    assert [o.expressions for o in item.objects] == [["left car", "small car"], ["tank"]]
    assert [np.array_equal(o.mask, m) for o, m in zip(item.objects, (a, b))] == [True, True]
    unlabeled = brush_region(a, "car")
    unlabeled["value"]["brushlabels"] = []
    n = len(rep.errors)
    assert task_to_item(per_region, {"result": [unlabeled]}, schema, resolver, rep, missing_expression="allow") is None
    assert "without a label" in str(rep.errors[n])


def test_prediction_regions_follow_the_schema():
    from converters.labelstudio.brush import brush_rle_decode
    from converters.labelstudio.regions import prediction_regions, rectangle_region

    mask = np.zeros((40, 50), bool)
    mask[10:20, 5:30] = True
    labels = '<Label value="vehicle"/><Label value="building"/>'
    per_task = LabelSchema.parse(f'<View><Image name="image" value="$image"/><Text name="e" value="$expression"/>'
                                 f'<BrushLabels name="tag" toName="image">{labels}</BrushLabels>'
                                 f'<RectangleLabels name="box" toName="image">{labels}</RectangleLabels></View>')
    regions = prediction_regions(per_task, mask, "building", 0.8, box=(5.0, 10.0, 30.0, 20.0), box_score=0.6,
                                 expression="the long building")
    brush, rect = regions[:2]
    assert (brush["from_name"], brush["to_name"], brush["score"]) == ("tag", "image", 0.8)
    assert np.array_equal(brush_rle_decode(brush["value"]["rle"], 40, 50), mask)
    assert [rect["value"][k] for k in ("x", "y", "width", "height")] == pytest.approx([10.0, 25.0, 50.0, 25.0])
    assert rect["value"]["rectanglelabels"] == ["building"] and rect["score"] == 0.6
    linked = {"type": "relation", "from_id": rect["id"], "to_id": brush["id"], "direction": "right"} in regions
    assert rect.get("parentID") == brush["id"] or linked  # the box belongs to the mask
    assert not any(r["type"] == "textarea" for r in regions)  # no TextArea in the config: nothing echoed
    per_region = LabelSchema.parse(f'<View><Image name="image" value="$image"/>'
                                   f'<BrushLabels name="tag" toName="image">{labels}</BrushLabels>'
                                   f'<TextArea name="expr" toName="image" perRegion="true"/></View>')
    brush, text = prediction_regions(per_region, mask, "vehicle", 0.5, box=(5.0, 10.0, 30.0, 20.0),
                                     expression="the long building")
    assert text["id"] == brush["id"] and text["value"] == {"text": ["the long building"]}  # shown on the mask
    with pytest.raises(ValueError, match="non-finite"):  # never a NaN coordinate for the frontend
        rectangle_region((float("nan"), 0.0, 5.0, 5.0), 50, 40, "vehicle", from_name="box")


def test_fetched_images_write_each_reference_once_and_name_failures_without_secrets(tmp_path):
    import cv2

    from converters.labelstudio import FetchedImages

    rgb = np.zeros((12, 20, 3), np.uint8)
    rgb[2:5, 3:9] = (200, 30, 10)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    calls: list[str] = []

    def fetch(src: str) -> bytes:
        calls.append(src)
        if "missing" in src:
            raise ValueError("HTTP 404")
        return png.tobytes()

    images = FetchedImages(fetch, tmp_path, max_pixels=1000)
    path, w, h = images.resolve("/data/upload/1/a.png")
    assert (w, h) == (20, 12) and images.resolve("/data/upload/1/a.png")[0] == path and calls == ["/data/upload/1/a.png"]
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), rgb)
    with pytest.raises(ImageResolveError, match=r"https://cdn.example/missing.png\?…: HTTP 404") as info:
        images.resolve("https://cdn.example/missing.png?X-Amz-Signature=SECRET")
    assert "SECRET" not in str(info.value)
    with pytest.raises(ImageResolveError, match="b.png"):  # above max_pixels
        FetchedImages(lambda src: png.tobytes(), tmp_path, max_pixels=100).resolve("/data/upload/1/b.png")
