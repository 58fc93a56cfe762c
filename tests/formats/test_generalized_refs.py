"""Generalized referring expressions in the RRSIS layout: one expression naming several objects or none.

One-object datasets stay byte for byte what the writer wrote before generalized expressions existed (the
files in ``golden/``), so RMSIN keeps loading them; multi-object and no-target refs carry an ``ann_id`` list and
``no_target``, are read back (the pickle still through the restricted unpickler), and Label Studio annotations
of the shipped generalized configs become them.
"""

from __future__ import annotations

import json
import pickle
import runpy
from pathlib import Path

import numpy as np
import pytest

from converters.labelstudio import ImageResolver, LabelSchema, brush_region, task_to_item, textarea_region
from converters.labelstudio.regions import relation_region
from converters.model import ImageItem, ObjectItem, Referral, Report
from converters.rrsis import load_refs, read_rrsis, write_rrsis
from tests.support.scenes import write_png

GOLDEN = Path(__file__).parent / "golden"
CONFIGS = Path(__file__).resolve().parents[2] / "converters" / "configs"


def _files(root: Path) -> tuple[bytes, bytes]:
    return (root / "rrsisd" / "refs(unc).p").read_bytes(), (root / "rrsisd" / "instances.json").read_bytes()


def test_one_object_export_is_byte_identical_to_the_earlier_writer(tmp_path):
    scene = runpy.run_path(str(GOLDEN / "single_object_scene.py"))
    report = write_rrsis(tmp_path / "out", scene["scene_items"](tmp_path / "src"))
    assert report.ok, report.errors
    assert _files(tmp_path / "out") == _files(GOLDEN)
    refs = load_refs(tmp_path / "out" / "rrsisd" / "refs(unc).p")
    assert all(isinstance(r["ann_id"], int) and "no_target" not in r for r in refs)


def _mask(y0: int, x0: int, size: int = 8) -> np.ndarray:
    m = np.zeros((40, 50), bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


def _generalized_items(tmp_path: Path) -> list[ImageItem]:
    path = write_png(tmp_path / "src" / "a.png", np.full((40, 50, 3), 90, np.uint8))
    tanks = [ObjectItem(_mask(2, 2), "storage_tank"), ObjectItem(_mask(2, 30), "storage_tank"),
             ObjectItem(_mask(25, 10), "vehicle", ["the car at the bottom"])]
    return [
        ImageItem(source="a.png", path=path, width=50, height=40, split="test", where="task 1", objects=tanks,
                  referrals=[Referral(["all storage tanks", "the two tanks"], [0, 1], "task 1"),
                             Referral(["the red ship"], [], "task 1")]),
        # another task: the same two tanks (same ref) and another no-target sentence (same no-target ref)
        ImageItem(source="a.png", path=path, width=50, height=40, split="test", where="task 2",
                  objects=[ObjectItem(_mask(2, 30), "storage_tank"), ObjectItem(_mask(2, 2), "storage_tank")],
                  referrals=[Referral(["both tanks"], [0, 1], "task 2"), Referral(["a bridge"], [], "task 2")]),
    ]


def test_multi_object_and_no_target_refs_are_written_and_read_back(tmp_path):
    report = write_rrsis(tmp_path / "out", _generalized_items(tmp_path))
    assert report.ok, report.errors
    refs = load_refs(tmp_path / "out" / "rrsisd" / "refs(unc).p")
    instances = json.loads((tmp_path / "out" / "rrsisd" / "instances.json").read_text())
    assert len(instances["annotations"]) == 3  # each object once, whichever refs name it
    by_kind = {("multi" if isinstance(r["ann_id"], list) and r["ann_id"] != [-1] else
                "none" if r["ann_id"] == [-1] else "one"): r for r in refs}
    assert len(refs) == 3 and set(by_kind) == {"one", "multi", "none"}
    assert "no_target" not in by_kind["one"] and isinstance(by_kind["one"]["ann_id"], int)
    assert by_kind["multi"]["no_target"] is False and len(by_kind["multi"]["ann_id"]) == 2
    assert by_kind["none"]["no_target"] is True and by_kind["none"]["category_id"] == [-1]
    assert [s["raw"] for s in by_kind["multi"]["sentences"]] == ["all storage tanks", "the two tanks", "both tanks"]
    assert [s["raw"] for s in by_kind["none"]["sentences"]] == ["the red ship", "a bridge"]

    recs = {r.ref_id: r for r in read_rrsis(tmp_path / "out")}
    multi, none = recs[by_kind["multi"]["ref_id"]], recs[by_kind["none"]["ref_id"]]
    assert multi.generalized and not multi.no_target and multi.category == "storage_tank"
    assert np.array_equal(multi.load_mask(), _mask(2, 2) | _mask(2, 30))
    assert multi.boxes == [(2.0, 2.0, 10.0, 10.0), (30.0, 2.0, 38.0, 10.0)]
    assert none.no_target and not none.load_mask().any() and none.bbox_xyxy is None and none.boxes == []
    assert not recs[by_kind["one"]["ref_id"]].generalized

    # the records write the same dataset again (export → read → export is stable; sentence ids renumbered)
    again = write_rrsis(tmp_path / "again", list(recs.values()))
    assert again.ok, again.errors
    assert _files(tmp_path / "again")[1] == _files(tmp_path / "out")[1]

    def content(root: Path) -> list[dict]:
        return [{**r, "sent_ids": None, "sentences": [s["raw"] for s in r["sentences"]]}
                for r in load_refs(root / "rrsisd" / "refs(unc).p")]

    assert content(tmp_path / "again") == content(tmp_path / "out")


def test_grefcoco_spellings_are_read(tmp_path):
    """gRefCOCO writes every ann_id as a list: one id is an ordinary ref; a no_target flag with ids is refused."""
    write_rrsis(tmp_path / "out", _generalized_items(tmp_path))
    refs_path = tmp_path / "out" / "rrsisd" / "refs(unc).p"
    refs = load_refs(refs_path)
    multi = next(r for r in refs if isinstance(r["ann_id"], list) and r["ann_id"] != [-1])
    one = next(r for r in refs if isinstance(r["ann_id"], int))
    one["ann_id"], one["no_target"] = [one["ann_id"]], False
    bad = dict(multi, ref_id=99, no_target=True)
    refs_path.write_bytes(pickle.dumps(refs + [bad], protocol=4))
    report = Report()
    recs = {r.ref_id: r for r in read_rrsis(tmp_path / "out", report=report)}
    assert not recs[one["ref_id"]].generalized and recs[one["ref_id"]].ann_ids == one["ann_id"]
    assert 99 not in recs and [e.where for e in report.errors] == ["ref 99"], report.errors
    assert "no_target" in report.errors[0].message


def test_generalized_pickle_still_goes_through_the_restricted_unpickler(tmp_path):
    write_rrsis(tmp_path / "out", _generalized_items(tmp_path))
    refs_path = tmp_path / "out" / "rrsisd" / "refs(unc).p"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    refs_path.write_bytes(pickle.dumps([{"ref_id": 1, "ann_id": [Evil()]}], protocol=4))
    with pytest.raises(ValueError, match="builtins.print"):
        read_rrsis(tmp_path / "out")


# ------------------------------------------------------------------------------------------ from Label Studio
def _task(tmp_path: Path, result: list[dict], data: dict) -> tuple[dict, ImageResolver]:
    write_png(tmp_path / "img" / "a.png", np.full((40, 50, 3), 90, np.uint8))
    task = {"id": 7, "data": {"image": "a.png", **data}, "annotations": [{"id": 1, "result": result}]}
    return task, ImageResolver(tmp_path / "img")


def _no_target(schema: LabelSchema) -> dict:
    return {"type": "choices", "from_name": schema.no_target_name, "to_name": "image",
            "value": {"choices": [schema.no_target_value]}}


def test_per_task_generalized_config_keeps_objects_apart_and_reads_no_target(tmp_path):
    schema = LabelSchema.parse((CONFIGS / "generalized_expression_per_task.xml").read_text())
    assert schema.generalized and schema.no_target_name == "target" and schema.no_target_value == "no target"
    regions = [brush_region(_mask(2, 2), "storage_tank", region_id="a"),
               brush_region(_mask(2, 30), "storage_tank", region_id="b")]
    task, resolver = _task(tmp_path, regions, {"expression": "all tanks"})
    report = Report()
    item = task_to_item(task, task["annotations"][0], schema, resolver, report)
    assert report.ok, report.errors
    assert [o.expressions for o in item.objects] == [[], []]  # two objects, not one merged mask
    assert [(r.expressions, r.objects) for r in item.referrals] == [(["all tanks"], [0, 1])]

    task, resolver = _task(tmp_path, [_no_target(schema)], {"expression": "the red ship"})
    item = task_to_item(task, task["annotations"][0], schema, resolver, report)
    assert item.objects == [] and item.referrals[0].no_target and item.referrals[0].expressions == ["the red ship"]

    task, resolver = _task(tmp_path, regions[:1] + [_no_target(schema)], {"expression": "the red ship"})
    assert task_to_item(task, task["annotations"][0], schema, resolver, report) is None
    assert "no target" in report.errors[-1].message and report.errors[-1].where == "task 7"


def test_one_region_of_the_generalized_config_exports_as_the_one_object_config(tmp_path):
    generalized = LabelSchema.parse((CONFIGS / "generalized_expression_per_task.xml").read_text())
    classic = LabelSchema.parse((CONFIGS / "rrsis_expression_per_task.xml").read_text())
    task, resolver = _task(tmp_path, [brush_region(_mask(2, 2), "vehicle", region_id="a")],
                           {"expression": "the car", "split": "val"})
    for name, schema in (("g", generalized), ("c", classic)):
        item = task_to_item(task, task["annotations"][0], schema, resolver, Report())
        assert write_rrsis(tmp_path / name, [item]).ok
    assert _files(tmp_path / "g") == _files(tmp_path / "c")


def test_per_region_config_groups_related_regions_and_reads_no_target_lines(tmp_path):
    schema = LabelSchema.parse((CONFIGS / "expressions_per_region.xml").read_text())
    assert schema.no_target_area == "no_target" and schema.textarea_name == "expression"
    result = [brush_region(_mask(2, 2), "storage_tank", region_id="a"),
              brush_region(_mask(2, 30), "storage_tank", region_id="b"),
              brush_region(_mask(25, 10), "vehicle", region_id="c"),
              textarea_region(["both tanks"], "a"), textarea_region(["the upper tanks"], "b"),
              textarea_region(["the car"], "c"), relation_region("a", "b"),
              {"id": "n", "type": "textarea", "from_name": "no_target", "to_name": "image",
               "value": {"text": ["a ship", "the bridge"]}}]
    task, resolver = _task(tmp_path, result, {})
    report = Report()
    item = task_to_item(task, task["annotations"][0], schema, resolver, report)
    assert report.ok, report.errors
    assert [o.expressions for o in item.objects] == [[], [], ["the car"]]
    assert [(r.expressions, r.objects) for r in item.referrals] == [
        (["both tanks", "the upper tanks"], [0, 1]), (["a ship", "the bridge"], [])]
    out = write_rrsis(tmp_path / "out", [item])
    assert out.ok, out.errors
    assert sorted(str(r["ann_id"]) for r in load_refs(tmp_path / "out" / "rrsisd" / "refs(unc).p")) == [
        "1", "[-1]", "[2, 3]"]  # the one-object ref first, then the generalized ones


def test_validate_and_stats_accept_generalized_refs_and_name_contradictions(tmp_path):
    from converters.checks import open_dataset, stats, validate

    write_rrsis(tmp_path / "out", _generalized_items(tmp_path))
    ds = open_dataset(tmp_path / "out")
    report = validate(ds)
    assert report.ok, report.errors
    assert report.counts["refs"] == 3 and report.counts["sentences"] == 6
    counted = stats(ds)
    assert counted["per_split"] == {"test": 3} and counted["expression_tokens"]["count"] == 6
    assert counted["per_category"] == {"vehicle": {"test": 1}, "storage_tank": {"test": 1}, "no target": {"test": 1}}

    refs_path = tmp_path / "out" / "rrsisd" / "refs(unc).p"
    refs = load_refs(refs_path)
    none = next(r for r in refs if r["ann_id"] == [-1])
    none["no_target"] = False
    multi = next(r for r in refs if isinstance(r["ann_id"], list) and r["ann_id"] != [-1])
    multi["ann_id"] = multi["ann_id"] + [999]
    refs_path.write_bytes(pickle.dumps(refs, protocol=4))
    errors = {(e.where, e.message) for e in validate(open_dataset(tmp_path / "out")).errors}
    assert (f"ref {none['ref_id']}", "no_target is False but ann_id is [-1]") in errors
    assert (f"ref {multi['ref_id']}", "ann_id 999 is not in annotations[]") in errors


def test_per_region_config_with_a_task_expression_still_merges_its_strokes(tmp_path):
    """Only the config with the "no target" choice keeps a task's regions apart; elsewhere they stay one object."""
    schema = LabelSchema.parse((CONFIGS / "expressions_per_region.xml").read_text())
    task, resolver = _task(tmp_path, [brush_region(_mask(2, 2), "vehicle", region_id="a"),
                                      brush_region(_mask(2, 30), "vehicle", region_id="b")],
                           {"expression": "the cars"})
    item = task_to_item(task, task["annotations"][0], schema, resolver, Report())
    assert item.referrals == [] and len(item.objects) == 1
    assert np.array_equal(item.objects[0].mask, _mask(2, 2) | _mask(2, 30))


def test_importer_writes_generalized_refs_as_tasks_of_the_generalized_config(tmp_path):
    from converters.importer import rrsis_tasks

    write_rrsis(tmp_path / "out", _generalized_items(tmp_path))
    report = Report()
    tasks = {t["data"]["expression"]: t for t in rrsis_tasks(tmp_path / "out", report, as_="annotations")}
    assert report.ok, report.errors
    assert len(tasks) == 6
    multi, none, one = tasks["both tanks"], tasks["a bridge"], tasks["the car at the bottom"]
    assert [r["type"] for r in multi["annotations"][0]["result"]] == ["brushlabels", "brushlabels"]
    assert multi["data"]["no_target"] is False and len(multi["data"]["ann_id"]) == 2 and "bbox" not in multi["data"]
    assert none["annotations"][0]["result"][0]["value"] == {"choices": ["no target"]}
    assert none["data"]["ann_id"] == [-1] and none["data"]["no_target"] is True
    assert isinstance(one["data"]["ann_id"], int) and "no_target" not in one["data"] and "bbox" in one["data"]
    # read by the generalized config's schema, the tasks give back the same referrals
    schema = LabelSchema.parse((CONFIGS / "generalized_expression_per_task.xml").read_text())
    resolver = ImageResolver(tmp_path / "out" / "images" / "rrsisd" / "JPEGImages")
    got = task_to_item(multi, multi["annotations"][0], schema, resolver, report)
    assert [(r.expressions, len(r.objects)) for r in got.referrals] == [(["both tanks"], 2)]
    got = task_to_item(none, none["annotations"][0], schema, resolver, report)
    assert got.objects == [] and got.referrals[0].no_target and report.ok
