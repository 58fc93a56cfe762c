"""One Label Studio annotation, two routes, one answer.

Route 1: the annotation in a JSON export → ``pslg export rrsis`` → read back by a REFER loader written the way
RRSIS-D training code reads data. Route 2: the same annotation through the backend's ``/webhook`` (Flask test
client; the project and its labeling config ride along as Label Studio sends them) → the training store →
the trainer's training set. Both must give the identical (image pixels, expression, mask, box).

The annotations are built to catch the rules the backend once had of its own: brush strokes of a
one-expression task must be merged (not "the first brush region"), per-region TextAreas must be paired with
their region by id (not "the first TextArea"), and a task may carry several expression variants.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from annotate.geometry import mask_box, xywh_to_xyxy
from annotate.synthetic import Scene
from backend.app import create_app
from backend.config import Settings
from backend.runtime import Runtime
from backend.training import training_items
from converters.labelstudio.regions import brush_region, rectangle_region, textarea_region
from tests.support.scenes import write_png
from tests.support.cli import pslg
from tests.support.refer_loader import REFER

CONFIGS = Path(__file__).resolve().parents[2] / "converters" / "configs"
IMAGE_URL = "/data/local-files/?d=scenes/a.png"
PROJECT = 5

Sample = tuple[str, str, str, tuple[float, float, float, float]]
"""(image pixel digest, expression, mask digest, box xyxy)."""


def _digest(array: np.ndarray) -> str:
    a = np.ascontiguousarray(array)
    return hashlib.sha1(a.tobytes() + str(a.shape).encode() + str(a.dtype).encode()).hexdigest()


def _pixels(path: Path) -> str:
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert bgr is not None, path
    return _digest(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _strokes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split an object's mask into a left and a right stroke (two brush regions of one object)."""
    xs = np.nonzero(mask)[1]
    cut = int((xs.min() + xs.max() + 1) // 2)
    left, right = mask.copy(), mask.copy()
    left[:, cut:] = False
    right[:, :cut] = False
    assert left.any() and right.any()
    return left, right


def per_task_case(scene: Scene, expression: str | list[str]) -> tuple[str, dict, dict, dict[str, np.ndarray]]:
    """One expression per task: the building painted in two strokes, plus a rectangle (not a mask) and a typed
    prompt (what the annotator asked the backend, not the task's expression)."""
    obj = scene.objects[1]
    left, right = _strokes(obj.mask)
    h, w = obj.mask.shape
    result = [textarea_region(["the vehicle"], "typed", from_name="prompt"),
              rectangle_region(scene.objects[0].box, w, h, "vehicle", from_name="box", region_id="rect"),
              brush_region(left, obj.category, region_id="s1"), brush_region(right, obj.category, region_id="s2")]
    task = {"id": 41, "data": {"image": IMAGE_URL, "expression": expression}}
    exprs = [expression] if isinstance(expression, str) else expression
    return "rrsis_expression_per_task.xml", task, {"id": 901, "task": 41, "result": result}, \
        {e: obj.mask for e in exprs}


def per_region_case(scene: Scene) -> tuple[str, dict, dict, dict[str, np.ndarray]]:
    """Expressions written while annotating: three objects, TextAreas listed apart from (and before) their regions."""
    car, building, tank = scene.objects[0], scene.objects[1], scene.objects[2]
    result = [textarea_region(["the long building at the top left"], "b"),
              brush_region(car.mask, car.category, region_id="c"),
              textarea_region(["the small car in the middle", "car near the building"], "c"),
              brush_region(tank.mask, tank.category, region_id="t"),
              brush_region(building.mask, building.category, region_id="b"),
              textarea_region(["the round tank below"], "t")]
    task = {"id": 42, "data": {"image": IMAGE_URL}}
    want = {"the long building at the top left": building.mask, "the small car in the middle": car.mask,
            "car near the building": car.mask, "the round tank below": tank.mask}
    return "expressions_per_region.xml", task, {"id": 902, "task": 42, "result": result}, want


def export_route(tmp_path: Path, files_root: Path, config: str, task: dict, annotation: dict) -> list[Sample]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    export = tmp_path / "export.json"
    export.write_text(json.dumps([{**task, "annotations": [annotation]}]))
    out = tmp_path / "rrsis"
    r = pslg("export", "rrsis", export, "--out", out, "--config", CONFIGS / config, "--image-root", files_root,
             "--split-ratios", "1,0,0")
    assert r.exit_code == 0, r.output
    refer = REFER(str(out), "rrsisd", "unc")
    samples: list[Sample] = []
    for ref in refer.loadRefs(refer.getRefIds()):
        mask = refer.getMask(ref)["mask"].astype(bool)
        image = Path(refer.IMAGE_DIR) / refer.Imgs[ref["image_id"]]["file_name"]
        box = xywh_to_xyxy(refer.refToAnn[ref["ref_id"]]["bbox"])
        samples += [(_pixels(image), s["raw"], _digest(mask), box) for s in ref["sentences"]]
    return sorted(samples)


def webhook_route(tmp_path: Path, files_root: Path, config: str, task: dict,
                  annotation: dict) -> tuple[list[Sample], list[tuple]]:
    settings = Settings(model_dir=tmp_path / "model", local_files_root=str(files_root))
    runtime = Runtime(settings)
    try:
        app = create_app(settings, runtime=runtime)
        app.testing = True
        payload = {"action": "ANNOTATION_CREATED", "task": task, "annotation": annotation,
                   "project": {"id": PROJECT, "title": "two routes", "label_config": (CONFIGS / config).read_text()}}
        r = app.test_client().post("/webhook", json=payload)
        assert r.status_code == 201, r.get_json()
        work = tmp_path / "training-data"
        work.mkdir(parents=True)
        items, skipped = training_items(runtime.store, runtime.trainer.fetch_image, work)
        assert skipped == []
        samples: list[Sample] = []
        for _, item in items:
            for obj in item.objects:
                samples += [(_pixels(Path(item.path)), e, _digest(obj.mask), mask_box(obj.mask)) for e in obj.expressions]
        grounding, skipped = runtime.trainer.export_samples(tmp_path / "training-data")
        assert skipped == []
        triples = sorted((_pixels(s.image_path), s.expression, tuple(s.box)) for s in grounding)
        return sorted(samples), triples
    finally:
        runtime.trainer.wait_idle(60)
        runtime.store.close()


@pytest.mark.parametrize("case", ["per-task", "per-task variants", "per-region"])
def test_one_annotation_gives_the_same_samples_through_export_and_webhook(case, scene, files_root, tmp_path):
    if case == "per-task":
        config, task, annotation, want = per_task_case(scene, "the building at the top left")
    elif case == "per-task variants":
        config, task, annotation, want = per_task_case(scene, ["the building at the top left", "the big roof"])
    else:
        config, task, annotation, want = per_region_case(scene)

    exported = export_route(tmp_path / "export", files_root, config, task, annotation)
    trained, grounding = webhook_route(tmp_path / "webhook", files_root, config, task, annotation)

    image = _digest(scene.image)
    truth = sorted((image, e, _digest(m), mask_box(m)) for e, m in want.items())
    assert exported == truth  # strokes merged, TextAreas paired by id, every variant kept
    assert trained == exported
    assert grounding == sorted((image, e, box) for image, e, _, box in exported)


def test_training_reads_annotations_by_the_projects_labeling_config(scene, files_root, tmp_path):
    """The config that came with the webhook decides which regions count, as ``--config`` does for an export."""
    settings = Settings(model_dir=tmp_path / "model", local_files_root=str(files_root))
    runtime = Runtime(settings)
    try:
        client = create_app(settings, runtime=runtime).test_client()
        config = (CONFIGS / "rrsis_expression_per_task.xml").read_text()
        obj = scene.objects[3]
        tasks = [{"id": 50 + i, "data": {"image": IMAGE_URL, "expression": obj.expression}} for i in range(3)]
        results = [[brush_region(obj.mask, obj.category, region_id="ok")],
                   [brush_region(obj.mask, "ship", region_id="ship")],  # not a label of the config
                   [brush_region(obj.mask, obj.category, from_name="scribble", region_id="other")]]  # not its brush
        for i, (task, result) in enumerate(zip(tasks, results)):
            payload = {"action": "ANNOTATION_CREATED", "task": task, "project": {"id": PROJECT, "label_config": config},
                       "annotation": {"id": 700 + i, "task": task["id"], "result": result}}
            assert client.post("/webhook", json=payload).status_code == 201
        samples, skipped = runtime.trainer.export_samples(tmp_path)
        assert [(s.expression, s.box, s.category) for s in samples] == [(obj.expression, mask_box(obj.mask), obj.category)]
        assert any("task 51 region ship" in m and "unknown label 'ship'" in m for m in skipped), skipped
        assert any("annotation without a brush mask" in m for m in skipped), skipped
    finally:
        runtime.store.close()


def test_projects_keep_their_own_images_in_the_training_set(scene, files_root, tmp_path):
    """Two projects whose tasks name different images: each sample trains on its own project's image."""
    flipped = files_root / "scenes" / "flipped.png"
    write_png(flipped, np.ascontiguousarray(scene.image[:, ::-1]))
    settings = Settings(model_dir=tmp_path / "model", local_files_root=str(files_root))
    runtime = Runtime(settings)
    try:
        client = create_app(settings, runtime=runtime).test_client()
        obj = scene.objects[0]
        for project, image, mask in [(1, IMAGE_URL, obj.mask), (2, "/data/local-files/?d=scenes/flipped.png",
                                                                 np.ascontiguousarray(obj.mask[:, ::-1]))]:
            task = {"id": 10 * project, "data": {"image": image, "expression": f"object of project {project}"}}
            payload = {"action": "ANNOTATION_CREATED", "task": task, "project": {"id": project},
                       "annotation": {"id": 100 * project, "task": task["id"],
                                      "result": [brush_region(mask, obj.category)]}}
            assert client.post("/webhook", json=payload).status_code == 201
        samples, skipped = runtime.trainer.export_samples(tmp_path / "work")
        assert skipped == []
        by_expression = {s.expression: _pixels(s.image_path) for s in samples}
        assert by_expression == {"object of project 1": _digest(scene.image),
                                 "object of project 2": _digest(np.ascontiguousarray(scene.image[:, ::-1]))}
    finally:
        runtime.store.close()
