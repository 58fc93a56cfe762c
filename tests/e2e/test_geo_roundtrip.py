"""Scene → tiles → a real Label Studio project → annotations through its API → ``pslg export geo`` → features on
the objects, in the scene's CRS: on a synthetic 4-band uint16 scene (brush masks, objects across seams) and on a
real GeoTIFF with human building footprints (polygons)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

shapely = pytest.importorskip("shapely")
pytest.importorskip("pyogrio")

from annotate.geo_vector import iou  # noqa: E402
from annotate.scene import apply_affine  # noqa: E402
from tests.support.cli import pslg  # noqa: E402
from tests.support.geo_scenes import SceneBox, scene_transform, tile_results, write_geo_scene  # noqa: E402

BRUSH_CONFIG = (Path(__file__).resolve().parents[2] / "converters" / "configs" / "expressions_per_region.xml").read_text()
POLYGON_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <PolygonLabels name="outline" toName="image"><Label value="building"/></PolygonLabels>
  <TextArea name="expression" toName="image" perRegion="true"/>
</View>"""


def _tile_project(ls, name: str, scene: Path, config: str, size: int, overlap: int, tmp_path: Path,
                  *extra: str) -> tuple[int, list[dict]]:
    """``pslg tile`` into Label Studio's local-files root, a project with those tasks; its tasks, by id."""
    folder = ls.local_files_dir(name)
    r = pslg("tile", scene, "--size", size, "--overlap", overlap, "--out", folder, "--document-root", ls.files_root,
             *extra)
    assert r.exit_code == 0, r.output
    project = ls.api("POST", "/api/projects", json={"title": name, "label_config": config}).json()
    ls.connect_local_storage(project["id"], folder / "tiles")
    tasks = json.loads((folder / "tasks.json").read_text())
    ls.api("POST", f"/api/projects/{project['id']}/import", json=tasks)
    listed = ls.api("GET", f"/api/tasks?project={project['id']}&page_size=1000").json()
    listed = listed["tasks"] if isinstance(listed, dict) else listed
    assert len(listed) == len(tasks)
    # Label Studio serves each tile where the task says
    first = sorted(listed, key=lambda t: t["id"])[0]
    got = ls.api("GET", first["data"]["image"])
    assert got.status_code == 200 and got.content == (folder / "tiles" / Path(first["data"]["image"]).name).read_bytes()
    return project["id"], sorted(listed, key=lambda t: t["id"])


def _export_geo(ls, project_id: int, tmp_path: Path, *args: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    export = tmp_path / f"export-{project_id}.json"
    export.write_bytes(ls.api("GET", f"/api/projects/{project_id}/export?exportType=JSON").content)
    out = tmp_path / f"geo-{project_id}"
    r = pslg("export", "geo", export, "--out", out, *args)
    assert r.exit_code == 0, r.output
    files = sorted(out.iterdir())
    assert len(files) == 1
    return json.loads(files[0].read_text())


SYNTHETIC = [
    SceneBox(100, 100, 180, 170, "building", "the building at the top left"),
    SceneBox(440, 300, 540, 360, "building", "the long building on the seam"),     # the column seam 388–512
    SceneBox(200, 470, 260, 560, "vehicle", "the truck across the row seam"),     # the row seam 388–512
    SceneBox(480, 480, 560, 560, "storage_tank", "the tank where four tiles meet"),  # both seams
    SceneBox(800, 150, 860, 200, "building", "the building at the right"),
]


@pytest.mark.e2e
def test_synthetic_scene_round_trip_with_brush_masks(labelstudio_server, tmp_path):
    ls = labelstudio_server
    scene = write_geo_scene(tmp_path / "synthetic.tif", 900, 900, SYNTHETIC, count=4,
                            nodata_block=(600, 600, 900, 900))
    pid, tasks = _tile_project(ls, "geo-synthetic", scene, BRUSH_CONFIG, 512, 124, tmp_path, "--bands", "4,3,2")
    # windows at 0 and 388 (tiles of 512 sharing 124 px) in both directions; the nodata corner still shows data
    assert sorted(tuple(t["data"]["tile"]["window"][:2]) for t in tasks) == [(0, 0), (0, 388), (388, 0), (388, 388)]
    for task in tasks:
        result = tile_results(task["data"]["tile"], SYNTHETIC, kind="brush")
        if result:
            created = ls.api("POST", f"/api/tasks/{task['id']}/annotations", json={"result": result})
            assert created.status_code == 201, created.text
    fc = _export_geo(ls, pid, tmp_path)
    assert fc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    feats = fc["features"]
    assert len(feats) == len(SYNTHETIC)  # every object one feature, seams merged
    t = scene_transform()
    for box in SYNTHETIC:
        geoms = [shapely.geometry.shape(f["geometry"]) for f in feats]
        best = max(range(len(feats)), key=lambda i: iou(geoms[i], box.polygon(t)))
        assert iou(geoms[best], box.polygon(t)) >= 0.99, box
        props = feats[best]["properties"]
        assert (props["label"], props["expression"], props["scene"]) == (box.label, box.expression, "synthetic")
        assert props["source"] == "annotation" and props["annotator"]
        assert props["task_id"] in {task["id"] for task in tasks}
    pieces = {feats[i]["properties"]["expression"]: feats[i]["properties"]["pieces"] for i in range(len(feats))}
    assert pieces["the tank where four tiles meet"] == 4 and pieces["the long building on the seam"] == 2
    # the same features in longitude / latitude
    wgs = _export_geo(ls, pid, tmp_path / "wgs", "--to-wgs84")
    assert "crs" not in wgs and len(wgs["features"]) == len(SYNTHETIC)
    lon, lat = shapely.geometry.shape(wgs["features"][0]["geometry"]).centroid.coords[0]
    assert 14.9 < lon < 15.1 and 45.1 < lat < 45.2  # UTM 33N, 500 km east, 5000 km north


@pytest.mark.e2e
@pytest.mark.shared_data
def test_real_geotiff_round_trip_with_polygons(labelstudio_server, shared_data, tmp_path):
    """solaris' WorldView scene (uint16, EPSG:32616) and its 43 human building footprints."""
    from pyogrio.raw import read
    import rasterio

    scene = shared_data / "solaris" / "sample_geotiff.tif"
    meta, _, wkb, _ = read(shared_data / "solaris" / "geotiff_labels.geojson")
    assert meta["crs"] == "EPSG:32616"
    truth = [shapely.from_wkb(g) for g in wkb]
    ls = labelstudio_server
    pid, tasks = _tile_project(ls, "geo-real", scene, POLYGON_CONFIG, 512, 96, tmp_path)
    with rasterio.open(scene) as ds:
        assert ds.crs.to_string() == "EPSG:32616"
    seam_pieces = 0
    for task in tasks:
        tile = task["data"]["tile"]
        col, row, w, h = tile["window"]
        inv = ~rasterio.transform.Affine(*tile["transform"])
        frame = shapely.geometry.box(0, 0, w, h)
        result = []
        for k, footprint in enumerate(truth):
            px = shapely.ops.transform(lambda x, y: apply_affine(inv, x, y), footprint).intersection(frame)
            parts = [p for p in getattr(px, "geoms", [px]) if p.geom_type == "Polygon" and p.area >= 4]
            for j, part in enumerate(parts):
                rid = f"b{k}_{j}_{col}_{row}"
                pts = [[100.0 * x / w, 100.0 * y / h] for x, y in list(part.exterior.coords)[:-1]]
                result += [{"id": rid, "type": "polygonlabels", "from_name": "outline", "to_name": "image",
                            "original_width": w, "original_height": h, "image_rotation": 0,
                            "value": {"points": pts, "closed": True, "polygonlabels": ["building"]}},
                           {"id": rid, "type": "textarea", "from_name": "expression", "to_name": "image",
                            "value": {"text": [f"building number {k}"]}}]
                seam_pieces += int(part.area < footprint.area / 0.25 - 1)
        created = ls.api("POST", f"/api/tasks/{task['id']}/annotations", json={"result": result})
        assert created.status_code == 201, created.text
    assert seam_pieces > 0  # some footprints are cut by a tile seam
    fc = _export_geo(ls, pid, tmp_path, "--config", str(_write(tmp_path / "config.xml", POLYGON_CONFIG)))
    assert fc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32616"
    feats = {f["properties"]["expression"]: shapely.geometry.shape(f["geometry"]) for f in fc["features"]}
    assert len(fc["features"]) == len(truth) == len(feats)  # one feature per building, seams merged
    scores = [iou(feats[f"building number {k}"], footprint) for k, footprint in enumerate(truth)]
    # polygons drawn on 0.5 m pixels and traced back along pixel edges: within a pixel of the footprint
    assert min(scores) >= 0.75 and sum(scores) / len(scores) >= 0.88, sorted(scores)[:5]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
