"""Tiles back to the map: masks → polygons on the scene's grid, objects cut by seams merged, GeoJSON / GeoPackage
written in the scene's CRS or in EPSG:4326, tile places kept by the RRSIS export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

shapely = pytest.importorskip("shapely")
pyogrio = pytest.importorskip("pyogrio")

from annotate.geo_vector import Piece, footprint, iou, mask_to_geometry, merge_pieces  # noqa: E402
from tests.support.cli import pslg  # noqa: E402
from tests.support.geo_scenes import CRS, SceneBox, scene_transform, tile_results, write_geo_scene  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "converters" / "configs" / "expressions_per_region.xml"


def test_mask_to_geometry_follows_pixel_edges_and_keeps_holes():
    t = scene_transform()
    mask = np.zeros((50, 60), dtype=bool)
    mask[10:30, 5:25] = True
    mask[15:20, 10:15] = False  # a hole
    geom = mask_to_geometry(mask, t)
    a, _, c, _, e, f = t
    outer = shapely.geometry.box(c + 5 * a, f + 30 * e, c + 25 * a, f + 10 * e)
    hole = shapely.geometry.box(c + 10 * a, f + 20 * e, c + 15 * a, f + 15 * e)
    assert geom.equals(outer.difference(hole))
    assert geom.area == pytest.approx((20 * 20 - 25) * a * a)
    assert mask_to_geometry(np.zeros((5, 5), bool), t).is_empty


def _pieces_of(box: SceneBox, windows, label: str = "building"):
    t0 = scene_transform()
    out = []
    for col, row, w, h in windows:
        m = box.mask(h, w, (col, row))
        if not m.any():
            continue
        t = (t0[0], 0.0, t0[2] + col * t0[0], 0.0, t0[4], t0[5] + row * t0[4])
        out.append(Piece(geometry=mask_to_geometry(m, t), tile=(col, row), footprint=footprint((w, h), t),
                         group=label, payload=(col, row)))
    return out


def test_seam_merge_joins_cut_objects_and_drops_overlap_duplicates():
    t = scene_transform()
    windows = [(0, 0, 256, 256), (224, 0, 256, 256), (0, 224, 256, 256), (224, 224, 256, 256)]
    across_v = SceneBox(200, 40, 300, 90)      # cut by the vertical seam: a piece in each of two tiles
    in_overlap = SceneBox(230, 120, 250, 140)  # wholly inside the overlap: the same object twice
    corner = SceneBox(180, 180, 300, 300)      # across both seams: four pieces
    alone = SceneBox(20, 20, 60, 60)           # one tile only
    pieces = []
    for box in (across_v, in_overlap, corner, alone):
        pieces += _pieces_of(box, windows)
    assert len(pieces) == 2 + 2 + 4 + 1
    merged = merge_pieces(pieces)
    assert len(merged) == 4
    for box in (across_v, in_overlap, corner, alone):
        best = max(merged, key=lambda m: iou(m.geometry, box.polygon(t)))
        assert iou(best.geometry, box.polygon(t)) > 0.999


def test_seam_merge_keeps_touching_neighbours_and_other_labels_apart():
    windows = [(0, 0, 256, 256), (224, 0, 256, 256)]
    left = SceneBox(200, 40, 240, 90)   # cut by the seam
    right = SceneBox(240, 40, 300, 90)  # touches it, across the seam
    pieces = _pieces_of(left, windows) + _pieces_of(right, windows)
    assert len(merge_pieces(pieces)) == 2
    # the same place with two labels: never one object
    pieces = _pieces_of(left, windows, "building") + _pieces_of(left, windows, "vehicle")
    assert len(merge_pieces(pieces)) == 2
    # two objects of ONE tile that overlap are what the annotator drew: kept apart
    one = _pieces_of(SceneBox(10, 10, 50, 50), windows[:1]) + _pieces_of(SceneBox(30, 30, 70, 70), windows[:1])
    assert len(merge_pieces(one)) == 2


BOXES = [
    SceneBox(100, 100, 180, 160, "building", "the building at the top left"),
    SceneBox(480, 150, 560, 230, "building", "the building on the seam"),     # across the seam at col 448–512
    SceneBox(300, 460, 360, 560, "vehicle", "the long vehicle in the middle"),  # across the row seam
    SceneBox(700, 700, 760, 760, "storage_tank", "the tank at the bottom right"),
]


def _tiled_export(tmp_path: Path, kind: str = "brush", with_prediction: bool = False) -> tuple[Path, Path]:
    scene = write_geo_scene(tmp_path / "scene.tif", 900, 800, BOXES, count=4,
                            nodata_block=(0, 600, 300, 800))
    r = pslg("tile", scene, "--size", "512", "--overlap", "64", "--out", tmp_path / "tiles", "--bands", "3,2,1")
    assert r.exit_code == 0, r.output
    tasks = json.loads((tmp_path / "tiles" / "tasks.json").read_text())
    for i, t in enumerate(tasks):
        t["id"] = i + 1
        t["annotations"] = [{"id": 100 + i, "completed_by": {"id": 7, "email": "ann@example.org"},
                             "result": tile_results(t["data"]["tile"], BOXES, kind=kind), "was_cancelled": False,
                             "updated_at": "2026-01-01T00:00:00Z"}]
        if with_prediction:
            res = tile_results(t["data"]["tile"], BOXES, kind="brush")
            for r_ in res:
                if r_["type"] == "brushlabels":
                    r_["score"] = 0.8
            t["predictions"] = [{"id": 200 + i, "model_version": "pslg-test", "score": 0.8, "result": res}]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    return scene, export


@pytest.mark.parametrize("kind", ["brush", "polygon"])
def test_export_geo_features_land_on_the_objects_in_the_scene_crs(tmp_path, kind):
    scene, export = _tiled_export(tmp_path, kind)
    tasks = json.loads(export.read_text())
    assert len(tasks) == 4  # 2 × 2 tiles of 512 with 64 overlap; none is nodata-only
    r = pslg("export", "geo", export, "--out", tmp_path / "geo")
    assert r.exit_code == 0, r.output
    fc = json.loads((tmp_path / "geo" / "scene.geojson").read_text())
    assert fc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    t = scene_transform()
    feats = fc["features"]
    assert len(feats) == len(BOXES)  # one feature per object, seams merged
    for box in BOXES:
        geoms = [shapely.geometry.shape(f["geometry"]) for f in feats]
        best = max(range(len(feats)), key=lambda i: iou(geoms[i], box.polygon(t)))
        assert iou(geoms[best], box.polygon(t)) >= 0.99
        props = feats[best]["properties"]
        assert props["label"] == box.label and props["expression"] == box.expression
        assert props["annotator"] == "ann@example.org" and props["score"] is None
        assert props["scene"] == "scene" and props["source"] == "annotation"
        assert props["task_id"] in range(1, 5)
    # the objects cut by seams were joined from pieces of two tiles
    assert sorted(f["properties"]["pieces"] for f in feats) == [1, 1, 2, 2]


def test_export_geo_gpkg_and_wgs84(tmp_path):
    from pyogrio import read_info
    from pyogrio.raw import read
    from rasterio.warp import transform_geom

    _, export = _tiled_export(tmp_path, "brush", with_prediction=True)
    r = pslg("export", "geo", export, "--out", tmp_path / "gpkg", "--format", "gpkg", "--to-wgs84")
    assert r.exit_code == 0, r.output
    path = tmp_path / "gpkg" / "scene.gpkg"
    info = read_info(path)
    assert info["crs"] == "EPSG:4326" and info["features"] == len(BOXES)
    meta, _, geometry, fields = read(path)
    names = list(meta["fields"])
    labels = list(fields[names.index("label")])
    assert sorted(labels) == sorted(b.label for b in BOXES)
    t = scene_transform()
    for box in BOXES:
        truth = shapely.geometry.shape(transform_geom(CRS, "EPSG:4326", shapely.geometry.mapping(box.polygon(t))))
        got = max((shapely.from_wkb(g) for g in geometry), key=lambda g: iou(g, truth))
        assert iou(got, truth) >= 0.99
    # pre-labels instead of annotations: their scores and model version come along
    r = pslg("export", "geo", export, "--out", tmp_path / "pred", "--source", "predictions")
    assert r.exit_code == 0, r.output
    feats = json.loads((tmp_path / "pred" / "scene.geojson").read_text())["features"]
    assert len(feats) == len(BOXES)
    assert {f["properties"]["score"] for f in feats} == {0.8}
    assert {f["properties"]["annotator"] for f in feats} == {"model:pslg-test"}


def test_export_geo_reports_bad_tasks_and_goes_on(tmp_path):
    _, export = _tiled_export(tmp_path)
    tasks = json.loads(export.read_text())
    tasks[0]["data"]["tile"]["window"] = [0, 0, -5, 10]
    del tasks[1]["data"]["tile"]
    export.write_text(json.dumps(tasks))
    r = pslg("export", "geo", export, "--out", tmp_path / "geo")
    assert r.exit_code == 1
    assert "task 1" in r.output and "window" in r.output and "task 2" in r.output and "pslg tile" in r.output
    assert (tmp_path / "geo" / "scene.geojson").is_file()  # the other tiles were written
    r = pslg("export", "geo", export, "--out", tmp_path / "geo")  # not empty now
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = pslg("export", "geo", export, "--out", tmp_path / "g2", "--crs", "EPSG:nope")
    assert r.exit_code == 2 and "not a CRS" in r.output


def test_rrsis_export_of_tiles_records_their_place(tmp_path):
    import pickle

    _, export = _tiled_export(tmp_path)
    r = pslg("export", "rrsis", export, "--out", tmp_path / "rr", "--config", CONFIG, "--images", "none")
    assert r.exit_code == 0, r.output
    refs = pickle.loads((tmp_path / "rr" / "rrsisd" / "refs(unc).p").read_bytes())
    inst = json.loads((tmp_path / "rr" / "rrsisd" / "instances.json").read_text())
    tasks = {t["data"]["image"].split("/")[-1]: t["data"]["tile"] for t in json.loads(export.read_text())}
    for img in inst["images"]:
        assert img["tile"] == tasks[img["file_name"]]  # scene, window, transform of the tile
    for ref in refs:
        assert ref["tile"]["scene"] == "scene" and ref["tile"] == tasks[ref["file_name"]]
