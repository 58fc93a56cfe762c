"""Synthetic georeferenced scenes with exactly known objects, for the tiling / geo export tests and benchmarks.

A scene is a tiled, compressed GeoTIFF (uint16 by default, any band count) on a UTM grid: a smooth background
with noise, bright rectangles (the objects, whose pixel boxes are returned) and optionally a nodata block
(value 0, ``nodata=0``). It is written in bands of rows, so a 20k × 20k scene never sits in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

CRS = "EPSG:32633"
ORIGIN = (500_000.0, 5_000_000.0)
RESOLUTION = 0.5


@dataclass(frozen=True)
class SceneBox:
    """One object: a rectangle of scene pixels [col0, col1) × [row0, row1) and its label."""

    col0: int
    row0: int
    col1: int
    row1: int
    label: str = "building"
    expression: str = ""

    def mask(self, height: int, width: int, window: Sequence[int] = (0, 0)) -> np.ndarray:
        """The object's mask on a grid of ``height × width`` whose top-left is scene pixel ``window`` (col, row)."""
        c0, r0 = window[0], window[1]
        m = np.zeros((height, width), dtype=bool)
        m[max(0, self.row0 - r0):max(0, self.row1 - r0), max(0, self.col0 - c0):max(0, self.col1 - c0)] = True
        return m

    def polygon(self, transform: Sequence[float]):
        """The rectangle in map coordinates (shapely)."""
        from shapely.geometry import Polygon

        from annotate.scene import apply_affine

        return Polygon([apply_affine(transform, x, y) for x, y in ((self.col0, self.row0), (self.col1, self.row0),
                                                                    (self.col1, self.row1), (self.col0, self.row1))])


def scene_transform(resolution: float = RESOLUTION, origin: tuple[float, float] = ORIGIN) -> tuple:
    return (resolution, 0.0, origin[0], 0.0, -resolution, origin[1])


def write_geo_scene(path: Path, width: int, height: int, boxes: Sequence[SceneBox] = (), *, count: int = 3,
                    dtype: str = "uint16", crs: Optional[str] = CRS, nodata_block: Optional[Sequence[int]] = None,
                    seed: int = 0, block: int = 256, overviews: Sequence[int] = (), compress: str = "deflate",
                    cog: bool = False) -> Path:
    """Write the scene (see the module docstring); ``nodata_block`` = (col0, row0, col1, row1) of value 0.

    Background values lie in 300–1300 (uint16) and objects at 3000 + 500·band, so the scene's 2–98 % stretch
    maps them near 0–255 apart; uint8 scenes use 40–120 and 230.
    """
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype,
               "crs": crs, "transform": Affine(*scene_transform()), "tiled": True, "blockxsize": block,
               "blockysize": block, "compress": compress, "nodata": 0, "BIGTIFF": "IF_SAFER"}
    eight = dtype == "uint8"
    rows = max(block, (1 << 22) // max(1, width * count) // block * block)
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, height, rows):
            r1 = min(height, r0 + rows)
            yy, xx = np.mgrid[r0:r1, 0:width].astype(np.float32)
            base = (np.sin(xx / 700.0) + np.cos(yy / 900.0) + 2.0) / 4.0  # 0..1, smooth "fields"
            for b in range(count):
                if eight:
                    band = 40 + 80 * base + rng.integers(0, 8, size=base.shape)
                else:
                    band = 300 + 1000 * base + rng.integers(0, 40, size=base.shape)
                band = band.astype(dtype)
                for box in boxes:
                    a0, a1 = max(box.row0, r0), min(box.row1, r1)
                    if a0 < a1:
                        band[a0 - r0:a1 - r0, box.col0:box.col1] = 230 if eight else 3000 + 500 * b
                if nodata_block is not None:
                    c0, n0, c1, n1 = nodata_block
                    a0, a1 = max(n0, r0), min(n1, r1)
                    if a0 < a1:
                        band[a0 - r0:a1 - r0, c0:c1] = 0
                dst.write(band, b + 1, window=Window(0, r0, width, r1 - r0))
        if overviews:
            dst.build_overviews(list(overviews))
    if cog:
        from rasterio.shutil import copy as rio_copy

        tmp = path.with_suffix(".cog.tif")
        rio_copy(path, tmp, driver="COG", compress=compress)
        tmp.replace(path)
    return path


def tile_results(tile: dict, boxes: Sequence[SceneBox], kind: str = "brush", from_name: str = "tag",
                 to_name: str = "image", text_name: Optional[str] = "expression") -> list[dict]:
    """Label Studio results drawing every object of ``boxes`` that a tile task's window shows (clipped to it):
    brush RLE or polygon regions, each with its expression as a per-region TextArea when ``text_name``."""
    from converters.labelstudio import brush_region, textarea_region

    col, row, w, h = tile["window"]
    out: list[dict] = []
    for k, box in enumerate(boxes):
        c0, r0 = max(box.col0, col) - col, max(box.row0, row) - row
        c1, r1 = min(box.col1, col + w) - col, min(box.row1, row + h) - row
        if c1 <= c0 or r1 <= r0:
            continue
        rid = f"obj{k}_{col}_{row}"
        if kind == "brush":
            out.append(brush_region(box.mask(h, w, (col, row)), box.label, from_name=from_name, to_name=to_name,
                                    region_id=rid))
        else:
            pts = [[100.0 * x / w, 100.0 * y / h] for x, y in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]
            out.append({"id": rid, "type": "polygonlabels", "from_name": from_name, "to_name": to_name,
                        "original_width": w, "original_height": h, "image_rotation": 0,
                        "value": {"points": pts, "closed": True, "polygonlabels": [box.label]}})
        if text_name and box.expression:
            out.append(textarea_region([box.expression], rid, from_name=text_name, to_name=to_name))
    return out
