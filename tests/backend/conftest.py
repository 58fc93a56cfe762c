"""Fixtures of the backend tests: synthetic task images served as Label Studio local files, runtimes, clients."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import pytest

from annotate.synthetic import Scene, make_scene
from backend.app import create_app
from backend.config import Settings
from backend.runtime import Runtime
from tests.labelstudio_server import labelstudio_server  # noqa: F401  (the shared session fixture)

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


@pytest.fixture(scope="session")
def scene() -> Scene:
    return make_scene(seed=3, height=160, width=200, n_objects=4)


@pytest.fixture()
def files_root(tmp_path: Path, scene: Scene) -> Path:
    """A LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT with the scene as ``scenes/a.png`` and a corrupt ``scenes/bad.png``."""
    root = tmp_path / "files"
    write_png(root / "scenes" / "a.png", scene.image)
    (root / "scenes" / "bad.png").write_bytes(b"this is not an image")
    return root


@pytest.fixture()
def make_client(tmp_path: Path, files_root: Path) -> Callable[..., object]:
    """Build a Flask test client around a fresh runtime (models loaded before it returns)."""
    made: list[Runtime] = []

    def _make(settings: Optional[Settings] = None, **overrides):
        settings = settings or Settings(model_dir=tmp_path / "model", local_files_root=str(files_root), **overrides)
        runtime = Runtime(settings)
        assert runtime.engine.wait_ready(120), runtime.engine.error
        made.append(runtime)
        app = create_app(settings, runtime=runtime)
        app.testing = True
        return app.test_client()

    yield _make
    for rt in made:
        rt.trainer.wait_idle(300)
        rt.store.close()


def task_for(scene: Scene, index: int, task_id: int, image: str = "/data/local-files/?d=scenes/a.png",
             with_box: bool = True) -> dict:
    obj = scene.objects[index]
    data = {"image": image, "expression": obj.expression}
    if with_box:
        x0, y0, x1, y1 = obj.box
        data["bbox"] = [x0, y0, x1 - x0, y1 - y0]  # COCO xywh pixels, as the converters' importer writes it
    return {"id": task_id, "data": data, "annotations": [], "predictions": []}

