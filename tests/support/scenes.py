"""Synthetic scenes for the backend and e2e tests: a labeling config, PNG writing, Label Studio tasks per object."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from annotate.synthetic import Scene

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Text name="expression" value="$expression"/>
  <BrushLabels name="mask" toName="image">
    <Label value="vehicle"/><Label value="building"/><Label value="storage_tank"/><Label value="roundabout"/>
  </BrushLabels>
  <RectangleLabels name="box" toName="image">
    <Label value="vehicle"/><Label value="building"/><Label value="storage_tank"/><Label value="roundabout"/>
  </RectangleLabels>
  <KeyPointLabels name="clicks" toName="image" smart="true"><Label value="vehicle"/></KeyPointLabels>
  <TextArea name="note" toName="image" perRegion="true"/>
</View>"""


def write_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def task_for(scene: Scene, index: int, task_id: int, image: str = "/data/local-files/?d=scenes/a.png",
             with_box: bool = True) -> dict:
    obj = scene.objects[index]
    data = {"image": image, "expression": obj.expression}
    if with_box:
        x0, y0, x1, y1 = obj.box
        data["bbox"] = [x0, y0, x1 - x0, y1 - y0]  # COCO xywh pixels, as the converters' importer writes it
    return {"id": task_id, "data": data, "annotations": [], "predictions": []}


def predict_tasks(client, tasks: list[dict]) -> list[dict]:
    """Batch ``/predict`` of ``tasks`` (project "1", the config above) through a backend test client."""
    return client.post("/predict", json={"tasks": tasks, "label_config": CONFIG, "project": "1"}).get_json()["results"]


def submit_correction(client, task: dict, mask: np.ndarray, category: str, annotation_id: int) -> None:
    """What Label Studio sends when an annotator submits ``mask`` for ``task``: an ANNOTATION_CREATED webhook."""
    from converters.labelstudio.brush import brush_rle_encode

    h, w = mask.shape
    region = {"id": f"r{annotation_id}", "type": "brushlabels", "from_name": "mask", "to_name": "image",
              "original_width": w, "original_height": h,
              "value": {"format": "rle", "rle": brush_rle_encode(mask), "brushlabels": [category]}}
    payload = {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "task": task,
               "annotation": {"id": annotation_id, "task": task["id"], "result": [region]}}
    assert client.post("/webhook", json=payload).status_code == 201
