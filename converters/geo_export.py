"""Label Studio export of tile tasks → one vector file per scene (GeoJSON or GeoPackage), objects in map coordinates.

The engine behind ``pslg export geo``. Tasks are streamed (ijson); each object's mask is vectorised at once
with its tile's transform (``annotate.geo_vector``) and only the polygon is kept, so memory follows the number
of objects, not of pixels. At the end, per scene, pieces of objects cut by tile seams are joined
(``merge_pieces``) and written as one feature each, in the scene's CRS or in ``to_crs``.

Feature properties: ``label``, ``expression`` (the distinct expressions, `` | ``-separated), ``score`` (the
highest region score; null for human annotations without one), ``annotator`` (emails or ids, or
``model:VERSION`` for a pre-label), ``task_id`` (the first task; ``task_ids`` lists all, comma-separated),
``source`` (annotation / prediction), ``pieces`` (how many tile pieces were joined), ``scene``.

GeoJSON is written with the standard library (a ``crs`` member names a CRS other than EPSG:4326); GeoPackage
through pyogrio (GDAL). The output folder appears complete or not at all (``staged_dir``).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Optional

from converters.atomic import staged_dir
from converters.labelstudio import LabelSchema, MalformedExportError, iter_export
from converters.labelstudio.geo import Source, iter_tile_objects
from converters.model import Report

GeoFormat = Literal["geojson", "gpkg"]
WGS84 = "EPSG:4326"
FIELDS = ("label", "expression", "score", "annotator", "task_id", "task_ids", "source", "pieces", "scene")


@dataclass
class GeoExportOptions:
    fmt: GeoFormat = "geojson"
    to_crs: Optional[str] = None
    """Write every feature in this CRS (``EPSG:4326`` for ``--to-wgs84``); None: each scene's own CRS."""
    config_xml: Optional[str] = None
    selection: str = "latest"
    source: Source = "annotations"
    agree_iou: Optional[float] = None
    overwrite: bool = False


def _file_stem(scene: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", scene) or "scene"


def export_geo(export_path: Path | BinaryIO, out: Path, opts: GeoExportOptions) -> Report:
    """Convert a Label Studio JSON export of tile tasks into ``out/<scene>.geojson|gpkg`` (see the module docstring)."""
    from annotate.geo_vector import DEFAULT_AGREE_IOU, Piece, footprint, mask_to_geometry, merge_pieces, require_geo

    require_geo("pslg export geo")
    report = Report()
    schema = LabelSchema.parse(opts.config_xml) if opts.config_xml else LabelSchema()
    where = str(export_path) if isinstance(export_path, (str, Path)) else "<stdin>"
    pieces: dict[str, list[Piece]] = {}
    crs_of: dict[str, Optional[str]] = {}
    tasks = iter_export(export_path)
    try:
        for tile in iter_tile_objects(tasks, schema, report, opts.selection, opts.source):
            place = tile.place
            known = crs_of.setdefault(place.scene, place.crs)
            if known != place.crs:
                report.error(f"task {tile.task_id}", f"scene {place.scene!r} has CRS {known!r} in other tasks, "
                             f"{place.crs!r} here")
                continue
            size = (place.window[2], place.window[3])
            if (tile.item.width, tile.item.height) != size:
                report.error(f"task {tile.task_id}", f"mask size {tile.item.width}x{tile.item.height} disagrees "
                             f"with the tile window {size[0]}x{size[1]}")
                continue
            foot = footprint(size, place.transform)
            for obj in tile.item.objects:
                geom = mask_to_geometry(obj.mask, place.transform)
                if geom.is_empty:
                    report.skipped["empty mask"] += 1
                    continue
                payload = {"label": obj.category, "expressions": list(obj.expressions), "score": obj.score,
                           "annotator": tile.annotator, "task_id": tile.task_id, "source": tile.source}
                pieces.setdefault(place.scene, []).append(
                    Piece(geometry=geom, tile=place.window, footprint=foot, group=obj.category, payload=payload))
                report.counts["pieces"] += 1
    except MalformedExportError as exc:
        report.error(where, str(exc))
    if not pieces:
        report.nothing_written = True
        return report
    agree = opts.agree_iou if opts.agree_iou is not None else DEFAULT_AGREE_IOU
    ext = "gpkg" if opts.fmt == "gpkg" else "geojson"
    with staged_dir(out, overwrite=opts.overwrite) as stage:
        for scene, scene_pieces in pieces.items():
            src_crs = crs_of[scene]
            dst_crs = opts.to_crs or src_crs
            if opts.to_crs and src_crs is None:
                report.error(f"scene {scene}", f"has no CRS: cannot write it in {opts.to_crs}")
                continue
            features = [_feature(obj, scene) for obj in merge_pieces(scene_pieces, agree)]
            if opts.to_crs and opts.to_crs != src_crs:
                from annotate.geo_vector import reproject

                for f in features:
                    f["geometry"] = reproject(f["geometry"], src_crs, opts.to_crs)  # type: ignore[arg-type]
            path = stage / f"{_file_stem(scene)}.{ext}"
            if opts.fmt == "gpkg":
                _write_gpkg(path, features, dst_crs, layer=_file_stem(scene))
            else:
                _write_geojson(path, features, dst_crs)
            report.counts["features"] += len(features)
            report.counts["scenes"] += 1
    return report


def _feature(obj: Any, scene: str) -> dict:
    payloads = [p.payload for p in obj.pieces]
    expressions: list[str] = []
    for p in payloads:
        for e in p["expressions"]:
            if e not in expressions:
                expressions.append(e)
    scores = [p["score"] for p in payloads if p["score"] is not None]
    annotators: list[str] = []
    for p in payloads:
        if p["annotator"] and p["annotator"] not in annotators:
            annotators.append(p["annotator"])
    task_ids: list[str] = []
    for p in payloads:
        if str(p["task_id"]) not in task_ids:
            task_ids.append(str(p["task_id"]))
    sources = sorted({p["source"] for p in payloads})
    return {"geometry": obj.geometry, "properties": {
        "label": payloads[0]["label"], "expression": " | ".join(expressions) or None,
        "score": max(scores) if scores else None, "annotator": ", ".join(annotators) or None,
        "task_id": payloads[0]["task_id"], "task_ids": ",".join(task_ids), "source": ",".join(sources),
        "pieces": len(payloads), "scene": scene}}


def _as_multipolygon(geometry: Any):
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(geometry, Polygon):
        return MultiPolygon([geometry])
    if isinstance(geometry, MultiPolygon):
        return geometry
    polys = [g for g in getattr(geometry, "geoms", []) if isinstance(g, Polygon)]
    return MultiPolygon(polys)


def _crs_member(crs: Optional[str]) -> Optional[dict]:
    """The (pre-RFC 7946) GeoJSON ``crs`` member naming a CRS other than WGS 84, as GDAL writes and reads it."""
    if crs is None or crs.upper() in (WGS84, "OGC:CRS84"):
        return None
    from rasterio.crs import CRS

    epsg = CRS.from_user_input(crs).to_epsg()
    name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else CRS.from_user_input(crs).to_wkt()
    return {"type": "name", "properties": {"name": name}}


def _write_geojson(path: Path, features: list[dict], crs: Optional[str]) -> None:
    from shapely.geometry import mapping

    from annotate.atomic import atomic_write_text

    collection: dict[str, Any] = {"type": "FeatureCollection"}
    member = _crs_member(crs)
    if member is not None:
        collection["crs"] = member
    collection["features"] = [{"type": "Feature", "properties": f["properties"],
                               "geometry": mapping(_as_multipolygon(f["geometry"]))} for f in features]
    atomic_write_text(path, json.dumps(collection, allow_nan=False) + "\n")


def _write_gpkg(path: Path, features: list[dict], crs: Optional[str], layer: str) -> None:
    import numpy as np
    import shapely
    from pyogrio.raw import write

    from annotate.atomic import atomic_path

    geometry = np.array([shapely.to_wkb(_as_multipolygon(f["geometry"])) for f in features], dtype=object)
    columns = []
    for name in FIELDS:
        values = [f["properties"][name] for f in features]
        if name == "score":
            columns.append(np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64))
        elif name == "pieces":
            columns.append(np.array(values, dtype=np.int64))
        else:
            columns.append(np.array(["" if v is None else str(v) for v in values], dtype=object))
    with atomic_path(path) as tmp:
        tmp.unlink(missing_ok=True)  # GDAL creates the GeoPackage itself
        gpkg = tmp.with_name(tmp.name + ".gpkg")  # GDAL warns about a GeoPackage without its extension
        try:
            write(gpkg, geometry, columns, list(FIELDS), layer=layer, driver="GPKG",
                  geometry_type="MultiPolygon", crs=crs)
            os.replace(gpkg, tmp)
        finally:
            gpkg.unlink(missing_ok=True)
