"""Masks as Label Studio polygons and back: exact outlines, holes, pieces, tolerance, config detection, export."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from annotate.geometry import mask_box, mask_iou
from annotate.polygons import Tolerance, mask_outlines, outlines_to_mask
from annotate.synthetic import make_scene
from converters.labelstudio.polygons import polygon_mask
from converters.labelstudio.regions import polygon_regions, prediction_regions
from converters.labelstudio.schema import LabelConfigError, LabelSchema
from tests.support.cli import coco_masks, pslg

CONFIGS = Path(__file__).resolve().parents[2] / "converters" / "configs"
LABELS = '<Label value="vehicle"/><Label value="roundabout"/>'


def _nonzero_fill(ring: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels whose centre has a non-zero winding number: how a canvas (Label Studio's frontend) fills a ring."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    winding = np.zeros((height, width), dtype=int)
    for (x0, y0), (x1, y1) in zip(ring, np.roll(ring, -1, axis=0)):
        cross = (x1 - x0) * (ys - y0) - (xs - x0) * (y1 - y0)
        up = (y0 <= ys) & (y1 > ys) & (cross > 0)
        down = (y0 > ys) & (y1 <= ys) & (cross < 0)
        winding += up.astype(int) - down.astype(int)
    return winding != 0


def _disc(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2


# --- outlines ------------------------------------------------------------------------------------------------


def test_exact_outlines_give_back_the_mask_pixel_for_pixel():
    """Tolerance 0 keeps every pixel edge: random speckled masks (pieces, holes, diagonal touches) survive."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        mask = rng.random((30, 40)) < 0.45
        rings = mask_outlines(mask, 0, min_hole_area=0, min_piece_area=0)
        assert all(r.ndim == 2 and r.shape[1] == 2 and len(r) >= 3 for r in rings)
        assert np.array_equal(outlines_to_mask(rings, 30, 40), mask)


def test_pixel_edge_outlines_beat_pixel_centre_polygons_on_small_objects():
    from annotate.masks import mask_to_polygons, polygons_to_mask

    car = np.zeros((40, 40), bool)
    car[10:20, 12:32] = True  # a 10×20 px vehicle
    centres = polygons_to_mask(mask_to_polygons(car), 40, 40)
    assert mask_iou(centres, car) < 0.9  # half a pixel lost all round
    assert mask_iou(outlines_to_mask(mask_outlines(car, 0), 40, 40), car) == 1.0
    assert len(mask_outlines(car, 0)[0]) == 4


def test_large_holes_are_bridged_small_holes_filled_under_both_fill_rules():
    h = w = 100
    ring_mask = _disc(h, w, 50, 50, 40) & ~_disc(h, w, 50, 50, 15)  # a roundabout: hole of ~700 px
    ring_mask[20:22, 48:50] = False  # a 4-px speckle hole
    rings = mask_outlines(ring_mask, 0)
    assert len(rings) == 1  # one Label Studio polygon, no separate hole ring
    expected = ring_mask.copy()
    expected[20:22, 48:50] = True
    assert np.array_equal(outlines_to_mask(rings, h, w), expected)  # even-odd (pycocotools, COCO tools)
    assert np.array_equal(_nonzero_fill(rings[0], h, w), expected)  # non-zero (the Label Studio canvas)
    filled = outlines_to_mask(mask_outlines(ring_mask, 0, min_hole_area=10**9), h, w)
    assert filled[50, 50] and mask_iou(filled, ring_mask) < 0.93  # the alternative: hole lost


def test_one_outline_per_piece_largest_first_and_specks_dropped():
    mask = np.zeros((60, 80), bool)
    mask[5:15, 5:15] = True  # 100 px
    mask[30:50, 40:70] = True  # 600 px
    mask[55:57, 2:4] = True  # 4-px speck
    rings = mask_outlines(mask, 0)
    assert len(rings) == 2
    assert np.array_equal(outlines_to_mask(rings[:1], 60, 80), mask & (np.arange(80) >= 40)[None, :])
    speck_only = np.zeros((10, 10), bool)
    speck_only[4:6, 4:6] = True  # the largest piece is never dropped
    assert np.array_equal(outlines_to_mask(mask_outlines(speck_only, 0), 10, 10), speck_only)
    assert mask_outlines(np.zeros((5, 5), bool)) == []


def test_tolerance_trades_vertices_for_iou():
    disc = _disc(200, 200, 100, 100, 80)
    exact = mask_outlines(disc, 0)[0]
    counts, ious = [], []
    for tol in ("0", "0.5%", "1", "3"):
        ring = mask_outlines(disc, tol)[0]
        counts.append(len(ring))
        ious.append(mask_iou(outlines_to_mask([ring], 200, 200), disc))
    assert counts[0] == len(exact) and ious[0] == 1.0
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0] / 5
    assert ious[1] > 0.99 and ious[3] > 0.95


def test_tolerance_parsing():
    assert Tolerance.parse("1.5") == Tolerance(1.5, False)
    assert Tolerance.parse("2px") == Tolerance(2.0, False)
    assert Tolerance.parse("0.5%") == Tolerance(0.5, True)
    assert Tolerance.parse("0.5%").pixels(300, 400) == pytest.approx(2.5)
    for bad in ("abc", "-1", "1%%", ""):
        with pytest.raises(ValueError, match="polygon tolerance"):
            Tolerance.parse(bad)


# --- Label Studio regions --------------------------------------------------------------------------------------


def test_polygon_regions_are_label_studio_polygons_that_rasterise_back():
    scene = make_scene(seed=11, height=128, width=160, n_objects=4)
    for obj in scene.objects:
        regions = polygon_regions(obj.mask, obj.category, from_name="outline", tolerance=0)
        assert regions and all(r["type"] == "polygonlabels" and r["from_name"] == "outline" for r in regions)
        value = regions[0]["value"]
        assert value["closed"] is True and value["polygonlabels"] == [obj.category]
        pts = np.array([p for r in regions for p in r["value"]["points"]])
        assert pts.min() >= 0 and pts.max() <= 100  # percent of the image
        back = np.zeros_like(obj.mask)
        for r in regions:
            back |= polygon_mask(r["value"], 160, 128)
        assert np.array_equal(back, obj.mask), obj.category  # holes (the roundabout) included
        simplified = polygon_regions(obj.mask, obj.category, from_name="outline")  # default tolerance
        back = np.zeros_like(obj.mask)
        for r in simplified:
            back |= polygon_mask(r["value"], 160, 128)
        assert mask_iou(back, obj.mask) > 0.97


def test_polygon_mask_refuses_broken_values():
    for value, message in [({"points": [[1, 1], [2, 2]]}, "fewer than 3"), ({"points": [[1, "x"], [2, 2], [3, 1]]},
                           "pairs of numbers"), ({"points": [[1, float("nan")], [2, 2], [3, 1]]}, "non-finite")]:
        with pytest.raises(ValueError, match=message):
            polygon_mask(value, 10, 10)


# --- labeling configs ----------------------------------------------------------------------------------------


def test_config_detection_polygon_rectangle_brush():
    poly = LabelSchema.parse(f'<View><Image name="img" value="$url"/><PolygonLabels name="outline" toName="img">'
                             f'{LABELS}</PolygonLabels></View>')
    assert (poly.shape, poly.polygon_name, poly.labels, poly.image_key) == ("polygon", "outline",
                                                                          ["vehicle", "roundabout"], "url")
    rect = LabelSchema.parse(f'<View><Image name="img" value="$image"/><RectangleLabels name="box" toName="img">'
                             f'{LABELS}</RectangleLabels></View>')
    assert (rect.shape, rect.rect_name, rect.labels) == ("rectangle", "box", ["vehicle", "roundabout"])
    both = LabelSchema.parse(f'<View><Image name="img" value="$image"/><PolygonLabels name="p" toName="img">'
                             f'{LABELS}</PolygonLabels><BrushLabels name="b" toName="img">{LABELS}</BrushLabels></View>')
    assert both.shape == "brush" and both.brush_name == "b"  # the lossless mask wins
    with pytest.raises(LabelConfigError, match="PolygonLabels"):
        LabelSchema.parse('<View><Image name="img" value="$image"/><Choices name="c" toName="img">'
                          '<Choice value="a"/></Choices></View>')


def test_shipped_polygon_config():
    schema = LabelSchema.parse((CONFIGS / "rrsis_polygon_per_task.xml").read_text())
    assert schema.shape == "polygon" and schema.polygon_name == "outline"
    assert schema.keypoint_name == "click" and schema.rect_name == "box" and schema.expression_key == "expression"
    assert schema.labels == schema.polygon_labels == schema.rect_labels == schema.keypoint_labels


def test_prediction_regions_follow_the_config_shape():
    mask = np.zeros((50, 80), bool)
    mask[10:30, 20:60] = True
    mask[35:45, 5:15] = True  # a second piece (100 px)
    poly = LabelSchema.parse(f'<View><Image name="image" value="$image"/><PolygonLabels name="outline" toName="image">'
                             f'{LABELS}</PolygonLabels><RectangleLabels name="box" toName="image">{LABELS}'
                             f'</RectangleLabels><TextArea name="said" toName="image" perRegion="true"/></View>')
    regions = prediction_regions(poly, mask, "vehicle", 0.8, box=(18, 8, 62, 32), expression="the car")
    polygons = [r for r in regions if r.get("type") == "polygonlabels"]
    assert len(polygons) == 2 and all(r["score"] == 0.8 for r in polygons)
    relation = next(r for r in regions if r.get("type") == "relation")
    text = next(r for r in regions if r.get("type") == "textarea")
    assert relation["to_id"] == text["id"] == polygons[0]["id"]  # box and expression belong to the largest piece
    rect = LabelSchema.parse(f'<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
                             f'{LABELS}</RectangleLabels></View>')
    regions = prediction_regions(rect, mask, "vehicle", 0.8, box=(0, 0, 80, 50))
    assert [r["type"] for r in regions] == ["rectanglelabels"]  # the mask's tight box, not the prompt
    x0, y0, x1, y1 = mask_box(mask)
    assert regions[0]["value"]["x"] == pytest.approx(100 * x0 / 80)
    assert regions[0]["value"]["width"] == pytest.approx(100 * (x1 - x0) / 80)
    assert regions[0]["value"]["height"] == pytest.approx(100 * (y1 - y0) / 50)


# --- export --------------------------------------------------------------------------------------------------


def _polygon_export(folder: Path) -> tuple[Path, list]:
    """A per-task export whose annotations are polygons (bridged holes and all), plus one broken polygon."""
    scene = make_scene(seed=5, height=128, width=128, n_objects=4)
    folder.mkdir(parents=True)
    ok, png = cv2.imencode(".png", cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    (folder / "scene.png").write_bytes(png.tobytes())
    tasks = []
    for i, obj in enumerate(scene.objects, start=1):
        result = polygon_regions(obj.mask, obj.category, from_name="outline", tolerance=0)
        tasks.append({"id": i, "data": {"image": "scene.png", "expression": obj.expression},
                      "annotations": [{"id": i, "result": result, "updated_at": "2026-01-01T00:00:00Z"}]})
    broken = {"id": 99, "type": "polygonlabels", "from_name": "outline", "to_name": "image",
              "value": {"points": [[10, 10], [20, 20]], "polygonlabels": ["vehicle"]}}
    tasks.append({"id": 99, "data": {"image": "scene.png", "expression": "a line"},
                  "annotations": [{"id": 99, "result": [broken]}]})
    export = folder / "export.json"
    export.write_text(json.dumps(tasks))
    return export, scene.objects


def test_polygon_annotations_export_to_coco_with_their_holes(tmp_path: Path):
    export, objects = _polygon_export(tmp_path / "ls")
    config = tmp_path / "config.xml"
    config.write_text((CONFIGS / "rrsis_polygon_per_task.xml").read_text())
    result = pslg("export", "coco", export, "--out", tmp_path / "coco", "--image-root", export.parent,
                  "--config", config)
    assert "task 99 region 99" in result.output and "fewer than 3 points" in result.output  # named, not fatal
    got = coco_masks(tmp_path / "coco" / "annotations.json")["scene.png"]
    assert len(got) == len(objects)
    for obj in objects:
        assert any(np.array_equal(m, obj.mask) and cat == obj.category for m, cat, _ in got), obj.category
