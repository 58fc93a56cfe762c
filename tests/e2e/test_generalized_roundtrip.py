"""Generalized referring expressions through a real Label Studio 1.23 (tests/support/labelstudio_server.py):
tasks of the shipped generalized config are imported, annotated through the API as one multi-object, one
no-target and one one-object expression, exported (`pslg export rrsis` from the live project), imported back
(`pslg import rrsis` → a second project), exported again, and scored (`pslg eval`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from annotate.synthetic import make_scene
from converters.labelstudio.brush import brush_rle_encode
from converters.rrsis import load_refs, read_rrsis
from tests.support.cli import pslg
from tests.support.labelstudio_server import REPO_ROOT
from tests.support.scenes import write_png

pytestmark = pytest.mark.e2e

CONFIG = (REPO_ROOT / "converters" / "configs" / "generalized_expression_per_task.xml").read_text()


def _brush(region_id: str, mask: np.ndarray, label: str) -> dict:
    h, w = mask.shape
    return {"id": region_id, "type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": w,
            "original_height": h, "image_rotation": 0,
            "value": {"format": "rle", "rle": brush_rle_encode(mask), "brushlabels": [label]}}


def _tasks(ls, project_id: int) -> list[dict]:
    listed = ls.api("GET", f"/api/tasks?project={project_id}&page_size=100").json()
    return sorted(listed["tasks"] if isinstance(listed, dict) else listed, key=lambda t: t["id"])


def _refs(root: Path) -> list[tuple]:
    """The refs of an export, independent of ids: (sentences, categories of the objects, object masks, no_target)."""
    out = []
    for rec in read_rrsis(root):
        masks = tuple(sorted(np.packbits(o.mask).tobytes() for o in rec.to_item().objects))
        out.append((tuple(rec.sentences), tuple(sorted(o.category for o in rec.to_item().objects)), masks,
                    rec.no_target))
    return sorted(out)


def test_multi_object_and_no_target_round_trip(labelstudio_server, tmp_path):
    ls = labelstudio_server
    scene = make_scene(seed=5, height=160, width=192, n_objects=5)
    vehicles = [o for o in scene.objects if o.category == "vehicle"]
    assert len(vehicles) == 2, [o.category for o in scene.objects]
    single = next(o for o in scene.objects if o.category != "vehicle")

    # 1. a project of the generalized config, its image served by Label Studio, one task per expression
    project = ls.api("POST", "/api/projects", json={"title": "generalized", "label_config": CONFIG}).json()
    folder = ls.local_files_dir("generalized")
    image = write_png(folder / "scene.png", scene.image)
    ls.connect_local_storage(project["id"], folder)
    url = ls.local_file_url(image)
    ls.api("POST", f"/api/projects/{project['id']}/import",
           json=[{"image": url, "expression": e} for e in ("both vehicles", "the red ship", single.expression)])
    multi_task, none_task, one_task = _tasks(ls, project["id"])

    # 2. annotated through the API: two regions, the "no target" choice, one region
    ls.api("POST", f"/api/tasks/{multi_task['id']}/annotations", json={"result": [
        _brush("v1", vehicles[0].mask, "vehicle"), _brush("v2", vehicles[1].mask, "vehicle")]})
    ls.api("POST", f"/api/tasks/{none_task['id']}/annotations", json={"result": [
        {"id": "nt", "type": "choices", "from_name": "target", "to_name": "image",
         "value": {"choices": ["no target"]}}]})
    ls.api("POST", f"/api/tasks/{one_task['id']}/annotations", json={"result": [
        _brush("s1", single.mask, single.category)]})

    # 3. export from the live project
    export_root = ls.local_files_dir("generalized-export")
    first = export_root / "data"
    r = pslg("export", "rrsis", "--url", ls.url, "--token", ls.legacy_token, "--project", project["id"],
             "--out", first)
    assert r.exit_code == 0, r.output
    refs = load_refs(next((first / "rrsisd").glob("refs(*).p")))
    by_sentence = {r["sentences"][0]["raw"]: r for r in refs}
    assert len(by_sentence["both vehicles"]["ann_id"]) == 2 and by_sentence["both vehicles"]["no_target"] is False
    assert by_sentence["the red ship"]["ann_id"] == [-1] and by_sentence["the red ship"]["no_target"] is True
    assert isinstance(by_sentence[single.expression]["ann_id"], int)  # one object: the RRSIS-D ref as before
    assert "no_target" not in by_sentence[single.expression]
    want = sorted([(("both vehicles",), ("vehicle", "vehicle"),
                    tuple(sorted(np.packbits(v.mask).tobytes() for v in vehicles)), False),
                   (("the red ship",), (), (), True),
                   ((single.expression,), (single.category,), (np.packbits(single.mask).tobytes(),), False)])
    assert _refs(first) == want

    # 4. imported back into a second project as annotations, exported again: the same refs
    tasks_json = tmp_path / "tasks.json"
    r = pslg("import", "rrsis", first, "--as", "annotations", "--document-root", ls.files_root, "--out", tasks_json)
    assert r.exit_code == 0, r.output
    tasks = json.loads(tasks_json.read_text())
    assert sorted(len(t["annotations"][0]["result"]) for t in tasks) == [1, 1, 2]
    project2 = ls.api("POST", "/api/projects", json={"title": "generalized-2", "label_config": CONFIG}).json()
    ls.connect_local_storage(project2["id"], export_root)
    ls.api("POST", f"/api/projects/{project2['id']}/import", json=tasks)
    second = tmp_path / "again"
    r = pslg("export", "rrsis", "--url", ls.url, "--token", ls.legacy_token, "--project", project2["id"],
             "--out", second)
    assert r.exit_code == 0, r.output
    assert _refs(second) == want

    # 5. scored: the ground-truth boxes answer every kind of expression, the no-target one with nothing
    report_path = tmp_path / "eval.json"
    r = pslg("eval", "--data", second, "--oracle-box", "--no-progress", "--device", "cpu", "--out", report_path)
    assert r.exit_code == 0, r.output
    g = json.loads(report_path.read_text())["overall"]["generalized"]
    assert (g["n"], g["no_target"], g["n_acc"], g["t_acc"]) == (3, 1, 1.0, 1.0)
    assert g["giou"] > 0.6


def test_per_region_config_relations_and_no_target_lines(labelstudio_server, tmp_path):
    """The per-region config: two regions joined by a Label Studio relation are one expression's objects, the
    task-level no-target box holds expressions naming nothing; Label Studio keeps both through its export."""
    ls = labelstudio_server
    scene = make_scene(seed=5, height=160, width=192, n_objects=5)
    vehicles = [o for o in scene.objects if o.category == "vehicle"]
    config = (REPO_ROOT / "converters" / "configs" / "expressions_per_region.xml").read_text()
    project = ls.api("POST", "/api/projects", json={"title": "generalized-per-region", "label_config": config}).json()
    folder = ls.local_files_dir("generalized-per-region")
    image = write_png(folder / "scene.png", scene.image)
    ls.connect_local_storage(project["id"], folder)
    ls.api("POST", f"/api/projects/{project['id']}/import", json=[{"image": ls.local_file_url(image)}])
    [task] = _tasks(ls, project["id"])

    def text(region_id: str, lines: list[str], name: str = "expression") -> dict:
        return {"id": region_id, "type": "textarea", "from_name": name, "to_name": "image",
                "value": {"text": lines}}

    ls.api("POST", f"/api/tasks/{task['id']}/annotations", json={"result": [
        _brush("v1", vehicles[0].mask, "vehicle"), _brush("v2", vehicles[1].mask, "vehicle"),
        text("v1", ["both vehicles"]), text("v2", ["the two cars"]),
        {"type": "relation", "from_id": "v1", "to_id": "v2", "direction": "right"},
        text("nt", ["the red ship", "a bridge"], name="no_target")]})
    out = tmp_path / "data"
    r = pslg("export", "rrsis", "--url", ls.url, "--token", ls.legacy_token, "--project", project["id"],
             "--out", out)
    assert r.exit_code == 0, r.output
    assert _refs(out) == sorted([
        (("both vehicles", "the two cars"), ("vehicle", "vehicle"),
         tuple(sorted(np.packbits(v.mask).tobytes() for v in vehicles)), False),
        (("the red ship", "a bridge"), (), (), True)])
