"""``pslg tile`` (local scene and a COG over HTTP) and ``pslg segment --crs`` (a box in map coordinates)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from annotate.metrics import iou
from annotate.scene import scene_stretch
from tests.support.cli import pslg
from tests.support.http_range import serve_folder
from tests.support.geo_scenes import CRS, SceneBox, scene_transform, write_geo_scene

BOXES = [SceneBox(300, 200, 380, 260), SceneBox(900, 500, 960, 600)]


def _tiles(out: Path) -> list[dict]:
    return json.loads((out / "tasks.json").read_text())


def test_tile_writes_tiles_and_tasks_that_place_them(tmp_path):
    scene = write_geo_scene(tmp_path / "s.tif", 1000, 700, BOXES, count=4, nodata_block=(0, 0, 1000, 300))
    r = pslg("tile", scene, "--size", "256", "--overlap", "32", "--out", tmp_path / "t", "--bands", "4,3,2",
             "--url-prefix", "http://files.local/t/")
    assert r.exit_code == 0, r.output
    tasks = _tiles(tmp_path / "t")
    # 3 rows (0, 224, 444) × 5 columns of windows; the first row (rows 0–256) lies wholly in the nodata block
    assert len(tasks) == 2 * 5 and "5 nodata-only skipped" in r.output
    seen_objects = 0
    with rasterio.open(scene) as ds:
        stretch = scene_stretch(ds, [4, 3, 2])
        for t in tasks:
            tile = t["data"]["tile"]
            col, row, w, h = tile["window"]
            assert tile["scene"] == "s" and tile["crs"] == CRS and tile["scene_size"] == [1000, 700]
            a, b, c, d, e, f = scene_transform()
            assert tile["transform"] == pytest.approx([a, b, c + col * a, d, e, f + row * e])
            name = f"s_{row}_{col}.png"
            assert t["data"]["image"] == "http://files.local/t/" + name
            px = np.asarray(Image.open(tmp_path / "t" / "tiles" / name))
            assert px.shape == (h, w, 3)
            # tile pixels are the scene's bands 4, 3, 2 under the scene's one stretch: objects white, nodata black
            raw = ds.read([4, 3, 2], window=rasterio.windows.Window(col, row, w, h))
            valid = raw[0] > 0
            assert np.array_equal(px, stretch.apply(raw, valid))
            assert (px[raw[0] >= 3000 + 500 * 3] == 255).all() and not px[~valid].any()
            seen_objects += int((raw[0] >= 3000 + 500 * 3).any())
    assert seen_objects >= 2  # both objects are in some tile


def test_tile_bad_input_is_one_line(tmp_path):
    scene = write_geo_scene(tmp_path / "s.tif", 300, 200, count=3)
    r = pslg("tile", scene, "--out", tmp_path / "t", "--bands", "5,3,2")
    assert r.exit_code == 2 and "out of range" in r.output and "Traceback" not in r.output
    r = pslg("tile", tmp_path / "missing.tif", "--out", tmp_path / "t")
    assert r.exit_code == 2 and "missing.tif" in r.output
    r = pslg("tile", scene, "--out", tmp_path / "t", "--size", "64", "--overlap", "64")
    assert r.exit_code == 2 and "overlap" in r.output


def test_tile_a_cog_over_http(tmp_path):
    cog = write_geo_scene(tmp_path / "www" / "scene.tif", 700, 600, BOXES[:1], count=3, cog=True)
    with serve_folder(tmp_path / "www") as (base, ranges):
        r = pslg("tile", f"{base}/scene.tif", "--size", "512", "--overlap", "64", "--out", tmp_path / "t",
                 "--format", "jpeg")
        assert r.exit_code == 0, r.output
    assert ranges  # read by byte ranges, as GDAL reads a COG
    tasks = _tiles(tmp_path / "t")
    assert [t["data"]["tile"]["window"] for t in tasks] == [[0, 0, 512, 512], [188, 0, 512, 512],
                                                              [0, 88, 512, 512], [188, 88, 512, 512]]
    assert all(t["data"]["tile"]["scene"] == "scene" for t in tasks)
    # the same tiles as from the local file (JPEG: within compression noise)
    r = pslg("tile", cog, "--size", "512", "--overlap", "64", "--out", tmp_path / "local", "--format", "jpeg")
    assert r.exit_code == 0, r.output
    for t in tasks:
        name = Path(t["data"]["image"]).name
        a = np.asarray(Image.open(tmp_path / "t" / "tiles" / name), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "local" / "tiles" / name), dtype=np.int16)
        assert np.array_equal(a, b)


def test_segment_with_a_box_in_map_coordinates_reads_only_its_window(tmp_path):
    from rasterio.warp import transform_bounds

    scene = write_geo_scene(tmp_path / "s.tif", 2000, 1500, [SceneBox(1200, 900, 1260, 950)], count=3)
    a, _, c, _, e, f = scene_transform()
    # the object's box, 5 px larger on each side, in longitude / latitude
    utm = (c + 1195 * a, f + 955 * e, c + 1265 * a, f + 895 * e)
    lon0, lat0, lon1, lat1 = transform_bounds(CRS, "EPSG:4326", *utm)
    out = tmp_path / "out"
    # --max-pixels below the scene's 3 MP: the whole scene could not be loaded, its window can
    r = pslg("segment", scene, "--box", f"{lon0},{lat0},{lon1},{lat1}", "--crs", "EPSG:4326", "--out", out,
             "--max-pixels", "500000", "-q")
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "results.json").read_text())[0]
    col, row, w, h = rec["window"]
    assert w * h < 500_000 and rec["crs"] == CRS
    assert rec["transform"] == pytest.approx([a, 0.0, c + col * a, 0.0, e, f + row * e])
    with rasterio.open(out / rec["geo_mask_file"]) as ds:  # the mask lies on the map where the object is
        mask = ds.read(1) > 0
        assert tuple(ds.transform)[:6] == pytest.approx(tuple(rec["transform"]))
    truth = SceneBox(1200, 900, 1260, 950).mask(h, w, (col, row))
    assert iou(mask, truth) > 0.8
    # the box in the scene's own CRS gives the same window
    r = pslg("segment", scene, "--box", ",".join(str(v) for v in utm), "--crs", CRS, "--out", tmp_path / "o2", "-q")
    assert r.exit_code == 0, r.output
    rec2 = json.loads((tmp_path / "o2" / "results.json").read_text())[0]
    assert all(abs(p - q) <= 2 for p, q in zip(rec2["window"], rec["window"]))
    r = pslg("segment", scene, "--box", "10,10,11,11", "--crs", "EPSG:4326", "--out", tmp_path / "o3")
    assert r.exit_code == 2 and "outside the scene" in r.output
    r = pslg("segment", scene, "--point", "10,10", "--crs", "EPSG:4326", "--out", tmp_path / "o3")
    assert r.exit_code == 2 and "--crs needs --box" in r.output


def test_export_geo_without_the_geo_extra_names_it(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "shapely" else real(name, *a))
    export = tmp_path / "export.json"
    export.write_text("[]")
    r = pslg("export", "geo", export, "--out", tmp_path / "geo")
    assert r.exit_code == 2 and "[geo]" in r.output and "pip install" in r.output and "shapely" in r.output
    assert not (tmp_path / "geo").exists()


def test_tile_refuses_an_output_outside_the_document_root_before_writing(tmp_path):
    scene = write_geo_scene(tmp_path / "s.tif", 300, 200, count=3)
    r = pslg("tile", scene, "--out", tmp_path / "out", "--document-root", tmp_path / "media")
    assert r.exit_code == 2 and "not under the document root" in r.output
    assert not (tmp_path / "out").exists()
