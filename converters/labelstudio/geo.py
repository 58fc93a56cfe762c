"""Tiles of a large scene as Label Studio tasks, and their objects read back with the tile's place in the scene.

A tile task is ``{"data": {"image": URL, "tile": {...}}}`` where ``tile`` says where the tile lies:
``scene`` (the scene's id), ``crs`` (the scene's CRS, WKT or ``EPSG:n``; null when it has none),
``window`` ``[col_off, row_off, width, height]`` in scene pixels, ``transform`` (the tile's own affine
6-tuple, rasterio order) and ``scene_size`` ``[width, height]``. Label Studio keeps ``data`` as given and returns
it in every export, so the export alone is enough to put each object back on the map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from converters.labelstudio.annotations import select_annotation, task_to_item
from converters.labelstudio.schema import LabelSchema
from converters.model import ImageItem, Report

#: The task data key of a tile's place in its scene.
TILE_KEY = "tile"


@dataclass(frozen=True)
class TilePlace:
    """Where a tile lies in its scene (see the module docstring)."""

    scene: str
    crs: Optional[str]
    window: tuple[int, int, int, int]
    transform: tuple[float, float, float, float, float, float]
    scene_size: Optional[tuple[int, int]] = None

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"scene": self.scene, "crs": self.crs, "window": list(self.window),
                                "transform": list(self.transform)}
        if self.scene_size is not None:
            data["scene_size"] = list(self.scene_size)
        return data


def tile_task(image_ref: str, place: TilePlace, image_key: str = "image") -> dict:
    """The Label Studio task of one tile."""
    return {"data": {image_key: image_ref, TILE_KEY: place.as_data()}}


def tile_place(data: Any) -> Optional[TilePlace]:
    """The :class:`TilePlace` of a task's ``data``; ``None`` when the task is not a tile.

    Raises ``ValueError`` naming the field when ``data.tile`` is present but malformed.
    """
    if not isinstance(data, dict) or TILE_KEY not in data:
        return None
    tile = data[TILE_KEY]
    if not isinstance(tile, dict):
        raise ValueError(f"data.{TILE_KEY} must be an object, got {type(tile).__name__}")
    scene = tile.get("scene")
    if not isinstance(scene, str) or not scene:
        raise ValueError(f"data.{TILE_KEY}.scene must be a non-empty string")
    crs = tile.get("crs")
    if crs is not None and not isinstance(crs, str):
        raise ValueError(f"data.{TILE_KEY}.crs must be a string or null")
    window = _numbers(tile.get("window"), 4, "window")
    if any(v != int(v) for v in window) or window[2] <= 0 or window[3] <= 0 or window[0] < 0 or window[1] < 0:
        raise ValueError(f"data.{TILE_KEY}.window must be [col_off, row_off, width, height], whole pixels, "
                         f"positive size, got {tile.get('window')}")
    transform = _numbers(tile.get("transform"), 6, "transform")
    if transform[0] * transform[4] - transform[1] * transform[3] == 0:
        raise ValueError(f"data.{TILE_KEY}.transform is not invertible: {tile.get('transform')}")
    size = tile.get("scene_size")
    scene_size = None
    if size is not None:
        w, h = _numbers(size, 2, "scene_size")
        scene_size = (int(w), int(h))
    return TilePlace(scene=scene, crs=crs, window=tuple(int(v) for v in window),  # type: ignore[arg-type]
                     transform=tuple(transform), scene_size=scene_size)  # type: ignore[arg-type]


def _numbers(value: Any, n: int, what: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ValueError(f"data.{TILE_KEY}.{what} must be {n} finite numbers, got {str(value)[:80]}")
    return [float(v) for v in value]


class _TileSize:
    """An :class:`ImageSource` that answers a tile's size from its task (no image file is needed to export
    geometry: the masks are decoded at the size the window gives)."""

    def __init__(self, width: int, height: int) -> None:
        self.size = (width, height)

    def resolve(self, src: str) -> tuple[Path, int, int]:
        return None, self.size[0], self.size[1]  # type: ignore[return-value]


@dataclass
class TileObjects:
    """The objects of one tile task: the item (masks in tile pixels), where the tile lies, who made them."""

    task_id: Any
    place: TilePlace
    item: ImageItem
    annotator: Optional[str]
    """The annotation's author (email, else user id); for a prediction ``model:<model_version>``."""
    source: str
    """``annotation`` or ``prediction``."""


Source = str  # "annotations" | "predictions" | "both"


def _annotator(ann: dict) -> Optional[str]:
    cb = ann.get("completed_by")
    if isinstance(cb, dict):
        return str(cb.get("email") or cb.get("id") or "") or None
    if cb is not None:
        return str(cb)
    return str(ann.get("created_username") or "").split(",")[0].strip() or None


def _latest_prediction(task: dict) -> Optional[dict]:
    preds = [p for p in task.get("predictions") or [] if isinstance(p, dict) and p.get("result")]
    if not preds:
        return None
    return max(preds, key=lambda p: (str(p.get("updated_at") or p.get("created_at") or ""), int(p.get("id") or 0)))


def iter_tile_objects(tasks: Iterator[Any], schema: LabelSchema, report: Report, selection: str = "latest",
                      source: Source = "annotations") -> Iterator[TileObjects]:
    """Tile tasks → their objects, one task at a time; a task that is no tile or fails is reported, the rest go on.

    ``source``: ``annotations`` (the winning annotation, see ``select_annotation``), ``predictions`` (the latest
    pre-label, whose region scores are kept), or ``both`` (the annotation where there is one, else the pre-label).
    """
    for i, task in enumerate(tasks):
        report.counts["tasks"] += 1
        if not isinstance(task, dict):
            report.error(f"task #{i}", f"not a JSON object ({type(task).__name__})")
            continue
        where = f"task {task.get('id', f'#{i}')}"
        try:
            place = tile_place(task.get("data"))
        except ValueError as exc:
            report.error(where, str(exc))
            continue
        if place is None:
            report.error(where, f"not a tile of a scene (no data.{TILE_KEY}; make tasks with pslg tile)")
            continue
        chosen: Optional[dict] = None
        kind = "annotation"
        if source in ("annotations", "both"):
            quiet = Report()
            chosen = select_annotation(task, selection, quiet if source == "both" else report)
        if chosen is None and source in ("predictions", "both"):
            chosen, kind = _latest_prediction(task), "prediction"
            if chosen is None:
                report.skipped["task without annotation or prediction" if source == "both"
                               else "task without prediction"] += 1
                continue
        if chosen is None:
            continue
        item = task_to_item(task, chosen, schema, _TileSize(place.window[2], place.window[3]), report, "allow")
        if item is None:
            continue
        annotator = _annotator(chosen) if kind == "annotation" else f"model:{chosen.get('model_version') or '?'}"
        if kind == "prediction":
            for obj in item.objects:
                if obj.score is None and isinstance(chosen.get("score"), (int, float)):
                    obj.score = float(chosen["score"])
        yield TileObjects(task_id=task.get("id"), place=place, item=item, annotator=annotator, source=kind)
