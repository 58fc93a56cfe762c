"""Masks on a georeferenced pixel grid → polygons in map coordinates, and objects cut by tile seams made whole.

Needs the ``[geo]`` extra (shapely); :func:`require_geo` says so when it is missing.

* **Vectorising.** :func:`mask_to_geometry` traces a mask with ``rasterio.features.shapes`` through the grid's
  affine transform: the outline follows pixel edges exactly, so rasterising the polygon back on the same grid
  gives the same mask, and holes are kept.
* **Seams.** A scene cut into overlapping tiles shows an object near a seam in several tiles: whole in each
  (it lies inside the overlap) or cut at each tile's edge. :func:`merge_pieces` joins pieces of different tiles
  with the same label when they agree where both tiles see the scene: the IoU of the two pieces restricted to the
  intersection of the tiles' footprints is at least ``agree_iou``. Joined pieces become one object, the union
  of the pieces, so a cut object is made whole and a duplicate from the overlap disappears. Two objects of one
  tile are never joined (an annotator drew them apart), and neighbours that only touch do not agree (IoU 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np

from annotate.extras import require_extra

#: Pieces of two tiles are one object when their IoU inside the tiles' common footprint is at least this.
DEFAULT_AGREE_IOU = 0.5


def require_geo(feature: str = "Geospatial export") -> None:
    """Raise ``MissingExtraError`` (naming ``pip install '.[geo]'``) unless shapely and pyogrio are installed."""
    require_extra("geo", feature)


def mask_to_geometry(mask: np.ndarray, transform: Sequence[float]):
    """A bool mask on the grid of ``transform`` (affine 6-tuple, rasterio order) → a shapely (Multi)Polygon in the
    grid's map coordinates; an empty polygon for an empty mask."""
    require_geo()
    from rasterio.features import shapes
    from rasterio.transform import Affine
    from shapely.geometry import shape
    from shapely.ops import unary_union

    m = np.ascontiguousarray(np.asarray(mask, dtype=bool)).astype(np.uint8)
    parts = [shape(geom) for geom, value in shapes(m, mask=m.astype(bool), connectivity=8,
                                                   transform=Affine(*transform[:6])) if value == 1]
    return unary_union(parts) if parts else shape({"type": "Polygon", "coordinates": []})


def footprint(window_size: tuple[int, int], transform: Sequence[float]):
    """The polygon a ``(width, height)`` pixel grid covers in map coordinates."""
    require_geo()
    from shapely.geometry import Polygon

    from annotate.scene import apply_affine

    w, h = window_size
    return Polygon([apply_affine(transform, x, y) for x, y in ((0, 0), (w, 0), (w, h), (0, h))])


@dataclass
class Piece:
    """One object as one tile shows it: its geometry and the footprint of its tile, in the scene's CRS."""

    geometry: Any
    tile: Hashable
    footprint: Any
    group: Hashable
    """Only pieces of the same group (scene and label) may be joined."""
    payload: Any = None


@dataclass
class MergedObject:
    """One object of the scene: the union of its pieces."""

    geometry: Any
    pieces: list[Piece] = field(default_factory=list)


def _restricted_iou(a: Piece, b: Piece) -> float:
    common = a.footprint.intersection(b.footprint)
    if common.is_empty or common.area <= 0:
        return 0.0
    ga, gb = a.geometry.intersection(common), b.geometry.intersection(common)
    union = ga.union(gb).area
    return float(ga.intersection(gb).area / union) if union > 0 else 0.0


def merge_pieces(pieces: Sequence[Piece], agree_iou: float = DEFAULT_AGREE_IOU) -> list[MergedObject]:
    """Join the pieces of objects cut by (or repeated across) tile seams; see the module docstring.

    The result keeps the order of each object's first piece.
    """
    require_geo()
    from shapely import STRtree
    from shapely.ops import unary_union

    items = [p for p in pieces if p.geometry is not None and not p.geometry.is_empty]
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if items:
        tree = STRtree([p.geometry for p in items])
        for i, p in enumerate(items):
            for j in tree.query(p.geometry, predicate="intersects"):
                j = int(j)
                if j <= i:
                    continue
                q = items[j]
                if q.tile == p.tile or q.group != p.group:
                    continue
                if _restricted_iou(p, q) >= agree_iou:
                    parent[find(j)] = find(i)
    groups: dict[int, list[Piece]] = {}
    for i, p in enumerate(items):
        groups.setdefault(find(i), []).append(p)
    return [MergedObject(geometry=unary_union([p.geometry for p in members]) if len(members) > 1
                         else members[0].geometry, pieces=members)
            for members in groups.values()]


def reproject(geometry: Any, src_crs: str, dst_crs: str):
    """``geometry`` from ``src_crs`` to ``dst_crs`` (GDAL's transformer, densified edges not added: pixel-edge
    outlines have vertices every pixel already)."""
    require_geo()
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    return shape(transform_geom(src_crs, dst_crs, mapping(geometry)))


def iou(a: Any, b: Any) -> float:
    """IoU of two shapely geometries (0 when both are empty)."""
    union = a.union(b).area
    return float(a.intersection(b).area / union) if union > 0 else 0.0


__all__ = ["DEFAULT_AGREE_IOU", "MergedObject", "Piece", "footprint", "iou", "mask_to_geometry", "merge_pieces",
           "reproject", "require_geo"]

