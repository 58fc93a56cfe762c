"""Click corrections through Label Studio: a box, then a negative and a positive keypoint on a real iSAID image.

Label Studio's ``/api/ml/<id>/interactive-annotating`` forwards the annotator's regions to ``pslg serve`` in the
shape its browser sends them: the smart rectangle alone, then the keypoints alone (the backend's session keeps
the rectangle); each answer's brush mask must exclude every negative keypoint, contain every
positive one, and its IoU with the human ground truth must not drop after a click. The clicks are placed the way
the standard click simulator places them (innermost pixel of the leak, then of the missed part).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

from annotate.geometry import mask_iou
from annotate.pipeline import Pipeline
from annotate.segmenters import build_segmenter
from annotate.types import Prompt
from converters.labelstudio.brush import brush_rle_decode
from tests.support.scenes import write_png
from tests.support.e2e import Backend, connect, start_backend

pytestmark = pytest.mark.e2e

LABEL = "vehicle"  # a label of the shipped config (converters/configs/rrsis_expression_per_task.xml)


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _innermost(region: np.ndarray) -> tuple[float, float]:
    dt = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return float(x) + 0.5, float(y) + 0.5


def _pick_instance(rgb: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The first instance (by id, ≥ 300 px) whose box-only mask both leaks (≥ 3 px deep) and misses a part."""
    pipe = Pipeline(build_segmenter())
    for k, iid in enumerate(i for i in np.unique(ids) if i != 0):
        gt = ids == iid
        if gt.sum() < 300:
            continue
        ys, xs = np.nonzero(gt)
        x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
        j = np.random.default_rng(k).uniform(-0.1, 0.1, size=4)  # a loose box, as annotators draw them
        w, h = x1 - x0, y1 - y0
        box = (x0 + j[0] * w, y0 + j[1] * h, x1 + j[2] * w, y1 + j[3] * h)
        mask = pipe.run(rgb, [Prompt(box=box)])[0].mask
        leak = cv2.distanceTransform(np.pad(mask & ~gt, 1).astype(np.uint8), cv2.DIST_L2, 5).max()
        if leak >= 3 and np.any(gt & ~mask):
            return gt, box
    raise AssertionError("no instance of the image has both a leak and a miss to click on")


@pytest.fixture(scope="module")
def backend(labelstudio_server, tmp_path_factory) -> Iterator[Backend]:
    ls = labelstudio_server
    b = start_backend(tmp_path_factory.mktemp("backend-clicks"), {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.pat})
    yield b
    b.stop()


def test_box_then_negative_then_positive_keypoint(labelstudio_server, backend, shared_data, tmp_path):
    ls = labelstudio_server
    root = shared_data / "isaid_devkit" / "val" / "images"
    rgb = _read_rgb(root / "P0003.png")
    ids_rgb = _read_rgb(root / "P0003_instance_id_RGB.png").astype(np.int64)
    ids = ids_rgb[..., 0] + 256 * ids_rgb[..., 1] + 65536 * ids_rgb[..., 2]
    gt, box = _pick_instance(rgb, ids)
    h, w = gt.shape

    from tests.support.e2e import CONFIG

    project = ls.api("POST", "/api/projects", kind="pat", json={"title": "e2e-clicks", "label_config": CONFIG}).json()
    folder = ls.local_files_dir("e2e-clicks")
    image = write_png(folder / "P0003.png", rgb)
    ls.connect_local_storage(project["id"], folder)
    ls.api("POST", f"/api/projects/{project['id']}/import", kind="pat",
           json=[{"image": ls.local_file_url(image), "expression": "the large vehicle"}])
    listed = ls.api("GET", f"/api/tasks?project={project['id']}&page_size=10", kind="pat").json()
    task = (listed["tasks"] if isinstance(listed, dict) else listed)[0]
    ml_id = connect(ls, backend, project["id"], "pat")

    rect = {"type": "rectanglelabels", "from_name": "box", "to_name": "image", "original_width": w,
            "original_height": h, "value": {"x": 100 * box[0] / w, "y": 100 * box[1] / h,
                                             "width": 100 * (box[2] - box[0]) / w, "height": 100 * (box[3] - box[1]) / h,
                                             "rectanglelabels": [LABEL]}}
    regions: list[dict] = [rect]
    clicks: list[tuple[tuple[float, float], int]] = []

    def ask() -> np.ndarray:
        answer = ls.api("POST", f"/api/ml/{ml_id}/interactive-annotating", kind="pat",
                        json={"task": task["id"], "context": {"result": regions}}).json()
        assert "errors" not in answer, answer
        brush = next(r for r in answer["data"]["result"] if r["type"] == "brushlabels")
        returned = brush_rle_decode(brush["value"]["rle"], h, w)
        for (x, y), positive in clicks:  # every answer honours every click so far
            assert bool(returned[int(y), int(x)]) == bool(positive), f"click {(x, y)} ignored after {len(clicks)} clicks"
        return returned

    def click(point: tuple[float, float], positive: bool) -> None:
        clicks.append((point, int(positive)))
        regions.append({"type": "keypointlabels", "from_name": "point", "to_name": "image", "original_width": w,
                        "original_height": h, "is_positive": positive,
                        "value": {"x": 100 * point[0] / w, "y": 100 * point[1] / h, "width": 0.5, "keypointlabels": [LABEL]}})

    mask = ask()
    ious = [mask_iou(mask, gt)]
    # what the browser sends next (docs/formats.md): only the keypoints of the session, never the rectangle
    regions.clear()
    assert np.any(mask & ~gt), "the box-only answer has no leak to click on"
    click(_innermost(mask & ~gt), positive=False)
    mask = ask()
    ious.append(mask_iou(mask, gt))
    assert np.any(gt & ~mask), "nothing is missed any more: no positive click to make"
    click(_innermost(gt & ~mask), positive=True)
    mask = ask()
    ious.append(mask_iou(mask, gt))

    assert ious[1] >= ious[0] and ious[2] >= ious[1], f"IoU dropped after a click: {ious}"
    assert ious[2] > ious[0], f"two clicks did not improve the mask: {ious}"
