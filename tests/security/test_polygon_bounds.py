"""Issue 17 item 1: a polygon point far outside the image reached pycocotools' rasteriser unbounded and
segfaulted the process (1e15 %), or allocated gigabytes (1e8 %); a NaN point passed ``pslg validate``.

Every entry of a polygon (Label Studio regions in training and export, COCO files in validate / stats / the COCO
reader) goes through ``annotate.masks``' bounded rasteriser: coordinates must be finite and are clipped to the
image before pycocotools sees them. Each reproduction runs in a child interpreter, so the old crash fails the
test instead of killing the session.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.security.isolated import run_isolated
from tests.support.cli import pslg

FAR = 1e15
MiB = 1024 * 1024


def test_a_far_polygon_point_is_clipped_not_a_segfault():
    result = run_isolated(f"""
        from annotate.masks import segmentation_to_mask, polygons_to_mask
        from converters.labelstudio.polygons import polygon_mask
        square = [[0, 0], [{FAR}, 0], [{FAR}, {FAR}], [0, {FAR}]]
        ls = polygon_mask({{"points": square, "polygonlabels": ["vehicle"]}}, 60, 40)
        coco = segmentation_to_mask([[0, 0, {FAR}, 0, {FAR}, {FAR}, 0, {FAR}]], 40, 60)
        # a triangle whose far corner lies left of the image: inside the image only the diagonal x = y and the
        # bottom row bound it, wherever that corner is, so a near corner (which pycocotools takes as it is) gives
        # the same pixels
        far = polygons_to_mask([[0, 0, 40, 40, -{FAR}, 40]], 40, 60)
        near = polygons_to_mask([[0, 0, 40, 40, -30, 40]], 40, 60)
        _result.update(ls=[int(ls.sum()), list(ls.shape)], coco=int(coco.sum()), same=bool((far == near).all()),
                       tri=int(far.sum()))
    """)
    assert result["ls"] == [40 * 60, [40, 60]]  # 1e15 % covers the whole image, no more
    assert result["coco"] == 40 * 60
    assert result["same"] and 700 < result["tri"] < 900  # about half of the 40×40 square


def test_a_polygon_at_1e8_percent_costs_no_gigabytes():
    result = run_isolated("""
        from converters.labelstudio.polygons import polygon_mask
        m = polygon_mask({"points": [[10, 10], [1e8, 10], [1e8, 1e8], [10, 1e8]]}, 100, 100)
        _result.update(area=int(m.sum()))
    """, memory_limit=3 * 1024**3)
    assert result["area"] == 90 * 90
    assert result["peak_rss"] < 400 * MiB, result["peak_rss"] / MiB  # was about 4.4 GB


def test_non_finite_and_non_numeric_polygons_are_refused_with_a_reason():
    from annotate.masks import SegmentationError, segmentation_to_mask

    for bad, reason in (([[0, 0, float("nan"), 0, 5, 5]], "non-finite"), ([[0, 0, float("inf"), 0, 5, 5]], "non-finite"),
                        ([[0, 0, 10**400, 0, 5, 5]], "out of range"), ([[0, 0, "7", 0, 5, 5]], "not a number"),
                        ([[0, 0, True, 0, 5, 5]], "not a number")):
        try:
            segmentation_to_mask(bad, 10, 10)
        except SegmentationError as exc:
            assert reason in str(exc)
        else:
            raise AssertionError(f"{bad} was accepted")


def _coco(folder: Path, segmentation) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(folder / "a.png")
    path = folder / "annotations.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}],
        "categories": [{"id": 1, "name": "vehicle"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "segmentation": segmentation,
                         "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}]}))
    return path


def test_validate_and_stats_of_a_far_polygon_answer_in_one_line(tmp_path):
    path = _coco(tmp_path / "far", [[0, 0, FAR, 0, FAR, FAR, 0, FAR]])
    result = run_isolated(f"""
        from tests.support.cli import pslg
        v = pslg("validate", {str(path)!r})
        s = pslg("stats", {str(path)!r})
        _result.update(v_code=v.exit_code, v_out=v.output, s_code=s.exit_code, s_out=s.output,
                       v_exc=repr(v.exception))
    """)
    assert result["v_code"] == 1 and "annotation 7" in result["v_out"] and "outside the 60x40 image" in result["v_out"]
    assert "Traceback" not in result["v_out"] and result["s_code"] == 0, result


def test_validate_refuses_a_nan_polygon(tmp_path):
    path = tmp_path / "nan" / "annotations.json"
    _coco(path.parent, [[0, 0, 10, 0, 10, 10, 0, 10]])
    text = path.read_text().replace("[0, 0, 10, 0, 10, 10, 0, 10]", "[0, 0, NaN, 0, 10, 10, 0, 10]")
    path.write_text(text)
    result = pslg("validate", path)
    assert result.exit_code == 1 and "annotation 7" in result.output and "non-finite" in result.output


def _ls_export(folder: Path, points) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(folder / "a.png")
    task = {"id": 1, "data": {"image": "a.png", "expression": "the car"}, "annotations": [{
        "id": 1, "result": [{"id": "p1", "type": "polygonlabels", "from_name": "mask", "to_name": "image",
                             "original_width": 60, "original_height": 40,
                             "value": {"points": points, "closed": True, "polygonlabels": ["vehicle"]}}]}]}
    path = folder / "export.json"
    path.write_text(json.dumps([task]))
    return path


def test_export_coco_of_a_far_label_studio_polygon_writes_the_clipped_mask(tmp_path):
    export = _ls_export(tmp_path / "ls", [[50, 50], [FAR, 50], [FAR, FAR], [50, FAR]])
    out = tmp_path / "coco"
    result = run_isolated(f"""
        from tests.support.cli import pslg, coco_masks
        r = pslg("export", "coco", {str(export)!r}, "--out", {str(out)!r})
        _result.update(code=r.exit_code, out=r.output)
    """)
    assert result["code"] == 0, result["out"]
    from tests.support.cli import coco_masks

    [[(mask, category, _ann)]] = coco_masks(out / "annotations.json").values()
    assert category == "vehicle"
    expected = np.zeros((40, 60), bool)
    expected[20:, 30:] = True  # from 50 % to past the border: the bottom-right quarter
    assert np.array_equal(mask, expected)


def test_retraining_on_a_far_polygon_annotation_succeeds(tmp_path):
    """The issue's worst case: a brush-only project accepts a polygon region at 1e15 %; every retrain segfaulted
    the worker and /health then said training was idle with no error."""
    result = run_isolated(f"""
        import base64, io
        import numpy as np
        from PIL import Image
        from backend.config import Settings
        from tests.security.conftest import CONFIG
        from tests.support.backend import runtime_clients

        root = {str(tmp_path)!r}
        Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(root + "/a.png")
        settings = Settings(model_dir=__import__("pathlib").Path(root) / "model", local_image_root=root,
                            prior_min_samples=1)
        with runtime_clients() as make:
            client = make(settings)
            task = {{"id": 5, "data": {{"image": root + "/a.png", "expression": "the car"}}}}
            region = {{"id": "p1", "type": "polygonlabels", "from_name": "mask", "to_name": "image",
                      "original_width": 60, "original_height": 40,
                      "value": {{"points": [[50, 50], [{FAR}, 50], [{FAR}, {FAR}], [50, {FAR}]],
                                "polygonlabels": ["vehicle"]}}}}
            r = client.post("/webhook", json={{"action": "ANNOTATION_CREATED", "project": {{"id": 3, "label_config": CONFIG}},
                                              "task": task, "annotation": {{"id": 11, "task": 5, "result": [region]}}}})
            assert r.status_code == 201, r.get_data(as_text=True)
            client.post("/webhook", json={{"action": "START_TRAINING", "project": {{"id": 3}}}})
            runtime = client.application.config["PSLG_RUNTIME"]
            assert runtime.trainer.wait_idle(300)
            health = client.get("/health").get_json()
            _result.update(state=runtime.trainer.status.state, error=runtime.trainer.status.last_error,
                           samples=runtime.trainer.status.last_samples, health=health)
    """)
    assert result["state"] == "succeeded", result["error"]
    assert result["samples"] == 1 and "training_error" not in result["health"]
