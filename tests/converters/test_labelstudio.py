"""Label Studio side: config reading through LabelInterface, image reference resolution, annotation choice,
per-task vs per-region objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.labelstudio import (ImageResolveError, ImageResolver, LabelSchema, brush_region, select_annotation,
                                    task_to_item, textarea_region)
from converters.model import Report

CONFIGS = Path(__file__).resolve().parents[2] / "converters" / "configs"


def test_shipped_configs_parse():
    per_task = LabelSchema.from_config((CONFIGS / "rrsis_expression_per_task.xml").read_text())
    assert per_task.image_key == "image" and per_task.expression_key == "expression"
    assert per_task.brush_names == {"tag"} and per_task.labels == ["vehicle", "building", "storage_tank", "roundabout"]
    per_region = LabelSchema.from_config((CONFIGS / "expressions_per_region.xml").read_text())
    assert per_region.textarea_names == {"expression"}
    with pytest.raises(ValueError, match="BrushLabels"):
        LabelSchema.from_config('<View><Image name="i" value="$img"/></View>')
    custom = LabelSchema.from_config('<View><Image name="pic" value="$img"/><Text name="q" value="$query"/>'
                                     '<BrushLabels name="b" toName="pic"><Label value="car"/></BrushLabels></View>')
    assert (custom.image_key, custom.expression_key, custom.labels) == ("img", "query", ["car"])


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
