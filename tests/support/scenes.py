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
